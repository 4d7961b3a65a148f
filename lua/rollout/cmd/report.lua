-- rollout report JOURNAL [--html FILE] [--markdown FILE [--append]] [--json FILE|-] [--dora DIR]
-- rollout report --dora DIR [--json [FILE|-]]
--
-- Renders one rollout's record (a journal, or a `rollout simulate --json` capture) as a
-- self-contained HTML page, a Markdown entry in the runbook's deployment-log format
-- (Step 9; --append adds it to an existing log, as the runbook's `cat >>`), and JSON for
-- pipelines. With no output option the Markdown goes to stdout. With --dora DIR beside a
-- journal, the Markdown's deployment frequency comes from DIR's journals.
-- `--dora DIR` alone prints the DORA figures over every journal under DIR (*.jsonl, *.json,
-- recursively). Exit 0, or 2 for a usage error or a file that is not a journal.
-- Error policy: usage errors and a file that is not a journal (or cannot be written) are
-- printed ("rollout report: ...") and return 2; journals that cannot be read under --dora
-- are warnings, the figures come from the others. Nothing raises.
local args = require("rollout.args")
local fs = require("rollout.fs")
local json = require("rollout.json")
local report = require("rollout.report")
local exit = require("rollout.exit")

local M = {}
M.summary = "render a journal as HTML, Markdown or JSON; DORA figures over a directory"
M.usage = { "rollout report JOURNAL [--html FILE] [--markdown FILE [--append]] [--json FILE|-] [--dora DIR]",
  "rollout report --dora DIR [--json [FILE|-]]" }
M.description = "Renders one rollout's record (a journal, or a rollout simulate --json capture) as a "
  .. "self-contained HTML page, a Markdown deployment-log entry, or JSON. With no output option the "
  .. "Markdown goes to stdout. --dora DIR alone prints the DORA figures over every journal under DIR."
M.options = {
  { "--html FILE", "write the HTML report (charts, decisions, the numbers behind them) to FILE" },
  { "--markdown FILE", "write the Markdown deployment-log entry to FILE" },
  { "--append", "with --markdown: append to FILE instead of replacing it" },
  { "--json FILE", "write the report as JSON to FILE, or to stdout with - (or no FILE)" },
  { "--dora DIR", "with a journal: deployment frequency from DIR's journals; alone: the DORA figures "
    .. "over every journal under DIR" },
}
M.exit = exit.describe({ { "OK", "done" }, { "USAGE", "usage error or a file that is not a journal" } })

local function fail(msg)
  io.stderr:write("rollout report: ", msg, "\n")
  return 2
end

-- `--json` with nothing after it (or another option) means stdout.
local function normalise(argv)
  local out = {}
  for i, a in ipairs(argv) do
    out[#out + 1] = a
    if a == "--json" and (argv[i + 1] == nil or argv[i + 1]:sub(1, 2) == "--") then out[#out + 1] = "-" end
  end
  return out
end

local function write(path, data, append)
  if path == "-" then io.stdout:write(data); return true end
  if append then
    local h, err = io.open(path, "a")
    if not h then return nil, err end
    h:write(data)
    h:close()
    return true
  end
  return fs.write_atomic(path, data, 420)
end

--- journals(dir) -> sorted list of files under dir that may be journals
function M.journals(dir, out)
  out = out or {}
  for _, name in ipairs(fs.list(dir) or {}) do
    local p = dir .. "/" .. name
    local st = fs.stat(p)
    if st and st.type == "dir" then M.journals(p, out)
    elseif st and st.type == "file" and (name:match("%.jsonl$") or name:match("%.json$") or name:match("%.journal$")) then
      out[#out + 1] = p
    end
  end
  table.sort(out)
  return out
end

--- dora_of(dir) -> figures, warnings | nil, err
function M.dora_of(dir)
  local st = fs.stat(dir)
  if not st or st.type ~= "dir" then return nil, dir .. ": not a directory" end
  local models, warnings = {}, {}
  for _, p in ipairs(M.journals(dir)) do
    local run, err = report.load(p)
    if run then models[#models + 1] = report.analyze(run)
    else warnings[#warnings + 1] = "skipped " .. tostring(err) end
  end
  return report.dora(models), warnings
end

function M.main(argv)
  local opts, pos = args.parse(normalise(argv), M.options)
  if not opts then return args.usage_error("report", pos, M.usage) end
  if #pos > 1 then return args.usage_error("report", "expected one journal", M.usage) end
  local dora, warnings
  if opts.dora then
    local err
    dora, err = M.dora_of(opts.dora)
    if not dora then return fail(err) end
    warnings = err
    for _, w in ipairs(warnings) do io.stderr:write("rollout report: ", w, "\n") end
  end
  if #pos == 0 then
    if not dora then return args.usage_error("report", "expected a journal or --dora DIR", M.usage) end
    if opts.html or opts.markdown then return args.usage_error("report", "--html and --markdown need a journal", M.usage) end
    if opts.json then
      local ok, err = write(opts.json, json.encode(dora, { sort = true, indent = true, non_finite = "null" }) .. "\n")
      if not ok then return fail(err) end
    else
      io.stdout:write(report.dora_text(dora))
    end
    return 0
  end
  local run, err = report.load(pos[1])
  if not run then return fail(err) end
  local model = report.analyze(run)
  local any = false
  if opts.html then
    any = true
    local ok, werr = write(opts.html, report.html(model))
    if not ok then return fail(werr) end
  end
  if opts.json then
    any = true
    local ok, werr = write(opts.json, json.encode(report.json(model), { sort = true, indent = true, non_finite = "null" }) .. "\n")
    if not ok then return fail(werr) end
  end
  local md = report.markdown(model, { dora = dora })
  if opts.markdown then
    any = true
    local ok, werr = write(opts.markdown, md, opts.append)
    if not ok then return fail(werr) end
  end
  if not any then io.stdout:write(md) end
  if opts.html and opts.html ~= "-" then io.stderr:write("report: ", opts.html, "\n") end
  return 0
end

return M

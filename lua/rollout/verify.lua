-- rollout.verify: policy tests. Runs scenarios through a playbook in virtual time (the
-- same simulation as `rollout simulate`) and compares each outcome with the scenario's
-- `expect`: the outcome, a prefix of the reason, and bounds for the summary's `at`.
--
-- Error policy: bad input (a path that does not exist, a directory without scenarios, a
-- scenario that does not load, or whose `expect` rollout.sim.scenario refuses) is collected
-- for every argument before anything runs, each {file=, line=, path=, msg=}; load() returns
-- nil, errors. run() never raises for a mismatch: a mismatch is a result.
local fs = require("rollout.fs")
local json = require("rollout.json")
local scenario = require("rollout.sim.scenario")
local output = require("rollout.output")
local simulate = require("rollout.simulation").run
local engine = require("rollout.engine")

local M = {}

M.OUTCOMES = {} -- rollout.engine's outcomes, as a set
for _, o in ipairs(engine.OUTCOMES) do M.OUTCOMES[o] = true end

local function clock(t)
  return output.clock(t)
end

--- expand(args) -> list of scenario files | nil, errors. A directory stands for its *.lua
--- files (sorted, not recursive).
function M.expand(args)
  local files, errs = {}, {}
  for _, a in ipairs(args) do
    local st = fs.stat(a)
    if not st then
      errs[#errs + 1] = { file = a, path = "", msg = "no such file or directory" }
    elseif st.type == "dir" then
      local names = {}
      for _, n in ipairs(fs.list(a) or {}) do if n:match("%.lua$") then names[#names + 1] = n end end
      table.sort(names)
      if #names == 0 then errs[#errs + 1] = { file = a, path = "", msg = "no *.lua scenarios in this directory" } end
      for _, n in ipairs(names) do files[#files + 1] = (a:gsub("/+$", "")) .. "/" .. n end
    else
      files[#files + 1] = a
    end
  end
  if #errs > 0 then return nil, errs end
  return files
end

--- load(args) -> list of scenarios (each with .file, .expect) | nil, errors
function M.load(args)
  local files, errs = M.expand(args)
  if not files then return nil, errs end
  local list = {}
  errs = {}
  for _, f in ipairs(files) do
    local sc, serrs = scenario.load(f, { outcomes = engine.OUTCOMES }) -- `expect` required, checked
    if not sc then
      for _, e in ipairs(serrs) do errs[#errs + 1] = e end
    else
      list[#list + 1] = sc
    end
  end
  if #errs > 0 then return nil, errs end
  return list
end

--- describe_expect(expect) -> "rolled_back trigger:error_rate* at 14m20s..15m10s"
function M.describe_expect(e)
  local s = e.outcome
  if e.reason then s = s .. " " .. e.reason .. "*" end
  if e.at then s = s .. " at " .. clock(e.at[1]) .. ".." .. clock(e.at[2]) end
  return s
end

function M.describe_outcome(o)
  local s = tostring(o.outcome)
  if o.reason then s = s .. " " .. o.reason end
  if o.at then s = s .. " at " .. clock(o.at) end
  return s
end

--- compare(expect, outcome) -> list of mismatches (strings); empty when it matches
function M.compare(e, o)
  local bad = {}
  if o.outcome ~= e.outcome then
    bad[#bad + 1] = string.format("outcome %s, expected %s", tostring(o.outcome), e.outcome)
  end
  if e.reason then
    local r = o.reason
    if type(r) ~= "string" or r:sub(1, #e.reason) ~= e.reason then
      bad[#bad + 1] = string.format("reason %s does not start with %s", r and tostring(r) or "(none)", e.reason)
    end
  end
  if e.at then
    local at = o.at
    if type(at) ~= "number" or at < e.at[1] - 1e-9 or at > e.at[2] + 1e-9 then
      bad[#bad + 1] = string.format("at %s not in %s..%s", at and clock(at) or "(none)", clock(e.at[1]), clock(e.at[2]))
    end
  end
  return bad
end

local function name_of(sc)
  return sc.name or (sc.file:match("([^/]+)%.lua$")) or sc.file
end

--- run(pb, scenarios, opts) -> results: each {name=, file=, expect=, got=, pass=, mismatches=, wall=}
--- opts.on_result(result) is called as each scenario finishes.
function M.run(pb, list, opts)
  opts = opts or {}
  local results = {}
  for _, sc in ipairs(list) do
    local w0 = os.clock() -- CPU seconds: rollout.time() follows the virtual clock
    local ok, outcome = pcall(simulate, pb, sc, {})
    local r = { name = name_of(sc), file = sc.file, expect = sc.expect, wall = os.clock() - w0 }
    if not ok then
      r.error = tostring(outcome)
      r.got = { outcome = "error" }
      r.mismatches = { "the simulation failed: " .. r.error }
    else
      r.got = { outcome = outcome.outcome, reason = outcome.reason, at = outcome.at, stage = outcome.stage }
      r.mismatches = M.compare(sc.expect, r.got)
    end
    r.pass = #r.mismatches == 0
    results[#results + 1] = r
    if opts.on_result then opts.on_result(r) end
  end
  return results
end

function M.counts(results)
  local passed, failed = 0, 0
  for _, r in ipairs(results) do if r.pass then passed = passed + 1 else failed = failed + 1 end end
  return passed, failed
end

-- ---- reports --------------------------------------------------------------------------

--- table(results) -> the text table a person reads (one row per scenario, then why each
--- failure failed, then the counts)
function M.table(results, playbook_file)
  local rows = { { "SCENARIO", "EXPECTED", "GOT", "RESULT" } }
  for _, r in ipairs(results) do
    rows[#rows + 1] = { r.name, M.describe_expect(r.expect), r.error and "error" or M.describe_outcome(r.got), r.pass and "ok" or "FAIL" }
  end
  local width = {}
  for _, row in ipairs(rows) do
    for i, c in ipairs(row) do width[i] = math.max(width[i] or 0, #c) end
  end
  local out = {}
  for _, row in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(row) do cells[i] = i < #row and c .. string.rep(" ", width[i] - #c) or c end
    out[#out + 1] = table.concat(cells, "  ")
  end
  local any
  for _, r in ipairs(results) do
    if not r.pass then
      if not any then out[#out + 1] = ""; any = true end
      out[#out + 1] = string.format("FAIL %s (%s): %s", r.name, r.file, table.concat(r.mismatches, "; "))
    end
  end
  local passed, failed = M.counts(results)
  out[#out + 1] = ""
  out[#out + 1] = string.format("%s: %d passed, %d failed (%d scenario%s)", failed == 0 and "ok" or "FAIL",
    passed, failed, #results, #results == 1 and "" or "s") .. (playbook_file and ("  " .. playbook_file) or "")
  return table.concat(out, "\n") .. "\n"
end

function M.json(results, playbook_file)
  local list = {}
  for _, r in ipairs(results) do
    local e = r.expect
    list[#list + 1] = {
      name = r.name, file = r.file, pass = r.pass, mismatches = r.mismatches,
      expect = { outcome = e.outcome, reason = e.reason or json.null, at = e.at or json.null },
      got = { outcome = r.got.outcome, reason = r.got.reason or json.null, at = r.got.at or json.null, stage = r.got.stage or json.null },
      error = r.error,
    }
  end
  local passed, failed = M.counts(results)
  return json.encode({ playbook = playbook_file, passed = passed, failed = failed, results = list }, { sort = true }) .. "\n"
end

local function xml(s)
  s = tostring(s):gsub("[%z\1-\8\11\12\14-\31]", "") -- not allowed in XML 1.0
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }))
end
M.xml_escape = xml

--- junit(results, playbook_file) -> JUnit XML (testsuites/testsuite/testcase/failure), the
--- shape GitLab's and GitHub's test reporters read. One testcase per scenario; classname
--- is the playbook, name the scenario.
function M.junit(results, playbook_file)
  local passed, failed = M.counts(results)
  local total = 0
  for _, r in ipairs(results) do total = total + r.wall end
  local out = { '<?xml version="1.0" encoding="UTF-8"?>' }
  local suite = "rollout verify " .. playbook_file
  out[#out + 1] = string.format('<testsuites name="%s" tests="%d" failures="%d" errors="0" time="%.3f">', xml(suite), #results, failed, total)
  out[#out + 1] = string.format('  <testsuite name="%s" tests="%d" failures="%d" errors="0" skipped="0" time="%.3f">', xml(suite), #results, failed, total)
  for _, r in ipairs(results) do
    out[#out + 1] = string.format('    <testcase classname="%s" name="%s" file="%s" time="%.3f">', xml(playbook_file), xml(r.name), xml(r.file), r.wall)
    if not r.pass then
      local msg = table.concat(r.mismatches, "; ")
      out[#out + 1] = string.format('      <failure message="%s" type="mismatch">expected: %s&#10;got: %s&#10;%s</failure>', xml(msg),
        xml(M.describe_expect(r.expect)), xml(r.error and ("error: " .. r.error) or M.describe_outcome(r.got)), xml(msg))
    end
    out[#out + 1] = string.format('      <system-out>expected: %s&#10;got: %s</system-out>', xml(M.describe_expect(r.expect)),
      xml(r.error and "error" or M.describe_outcome(r.got)))
    out[#out + 1] = "    </testcase>"
  end
  out[#out + 1] = "  </testsuite>"
  out[#out + 1] = "</testsuites>"
  assert(passed + failed == #results)
  return table.concat(out, "\n") .. "\n"
end

return M

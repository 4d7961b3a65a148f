-- rollout repl [PLAYBOOK] [--set key=value ...] [--config FILE]
-- A local Lua REPL with the host API (http, json, proc, net, ...) and, given a playbook, its
-- router and sources built as `rollout run` builds them, for incident debugging without a
-- running rollout:
--   weights()               the router's weights now          set_weights(N)  canary N %
--   signals([window])       sample every source once and read the signals per version
--   query(promql)           the first prometheus source's instant query
--   scrape(url)             a /metrics target, parsed (promtext)
--   router, sources, pb     the objects themselves
-- Expressions print their value (tables pretty-printed), statements may span lines.
-- On a terminal it edits lines and keeps history (libedit, ~/.rollout_history); from a pipe
-- it reads the script line by line and prints only results, so it can be scripted.
-- Exit codes: 0 at end of input, 1 if a line failed when reading a pipe, 2 usage or
-- playbook errors.
-- Error policy: usage errors and a playbook or router/source that cannot be built return
-- 2 before the REPL starts; an error in a line is printed (stderr) and the REPL goes on.
local rollout = require("rollout")
local args = require("rollout.args")
local edit = require("rollout.edit")
local playbook = require("rollout.playbook")
local repl = require("rollout.repl")
local assemble = require("rollout.assemble")
local http = require("rollout.http")
local promtext = require("rollout.promtext")
local engine = require("rollout.engine")
local exit = require("rollout.exit")

local M = {}
M.summary = "a local Lua REPL with the host API and a playbook's router and sources"
M.usage = "rollout repl [PLAYBOOK] [--set KEY=VALUE ...] [--config FILE]"
M.description = "A Lua REPL with the host API (http, json, proc, net, ...) and, given PLAYBOOK, its router "
  .. "and sources built as rollout run builds them, for debugging without a running rollout:\n\n"
  .. "  weights()          the router's weights now\n"
  .. "  set_weights(N)     give the canary N %\n"
  .. "  signals([window])  sample every source once and read the signals per version\n"
  .. "  query(promql)      the first prometheus source's instant query\n"
  .. "  scrape(url)        a /metrics target, parsed\n"
  .. "  router, sources, pb\n\n"
  .. "On a terminal it edits lines and keeps history (~/.rollout_history); from a pipe it runs the "
  .. "lines and prints only results."
M.options = {
  { "--set KEY=VALUE", "override a playbook value before validation, e.g. --set stages[2].hold=20s or "
    .. "--set sources[1].url=http://prom:9090; numbers and booleans are read as such, a value starting with "
    .. "[ or { as JSON; repeatable", list = true },
  { "--config FILE", "map a runbook CanaryDeployment YAML onto the playbook (stages, golden signals, "
    .. "rollback triggers, feature flags, abTest); keys rollout cannot use are warned about with file and line" },
}
M.exit = exit.describe({ { "OK", "at end of input" }, { "UNMET", "a line failed (reading a pipe)" },
  { "USAGE", "usage or playbook error" } })

--- env(pb) -> the REPL's environment for a playbook (or none). Raises on a bad router.
function M.env(pb)
  local env = { pb = pb }
  env.scrape = function(url)
    local r, err = http.get(url, { timeout = 5 })
    if not r then return nil, err end
    if r.status < 200 or r.status > 299 then return nil, url .. " answered " .. r.status end
    return promtext.parse(r.body)
  end
  if not pb then return env end
  local router, sources = assemble.build(pb)
  if not router then error(sources, 0) end
  env.router, env.sources = router, sources
  env.weights = function() return router:get_weights() end
  env.set_weights = function(canary)
    return router:set_weights({ baseline = 100 - canary, canary = canary })
  end
  env.signals = function(window)
    local now = rollout.now()
    local out = {}
    for _, src in ipairs(sources) do if src.tick then src:tick(now) end end
    for _, src in ipairs(sources) do
      if src.signals then
        local s, err = src:signals(now, rollout.duration(window or pb.trigger_window))
        if not s then return nil, err end
        for _, v in ipairs({ "baseline", "canary" }) do
          out[v] = out[v] or {}
          for k, x in pairs(s[v] or {}) do if out[v][k] == nil then out[v][k] = x end end
        end
      end
    end
    return { baseline = engine.compact(out.baseline), canary = engine.compact(out.canary) }
  end
  env.query = function(q)
    for _, src in ipairs(sources) do if src.query then return src:query(q) end end
    return nil, "the playbook has no prometheus source"
  end
  return env
end

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("repl", pos, M.usage) end
  if #pos > 1 then return args.usage_error("repl", "expected at most one playbook", M.usage) end
  local pb
  if pos[1] then
    local errs
    pb, errs = playbook.load(pos[1], { sets = opts.set, config = opts.config })
    if not pb then
      return playbook.print_errors(errs)
    end
  end
  local ok, env = pcall(M.env, pb)
  if not ok then
    io.stderr:write("rollout repl: ", tostring(env), "\n")
    return 2
  end
  local session = repl.new({ env = setmetatable(env, { __index = _G }), chunkname = "=repl",
    budget = { instructions = 1e9, seconds = 300 } })
  local tty = edit.isatty()
  local home = os.getenv("HOME")
  local hist = home and home ~= "" and (home .. "/.rollout_history") or nil
  if tty then
    if hist then edit.read_history(hist) end
    io.stdout:write("rollout ", rollout.version, " repl", pb and (": " .. pb.service) or "",
      ". Expressions print their value; Ctrl-D leaves.\n")
  end
  local failed = false
  local prompt = "> "
  while true do
    local line = edit.readline(prompt)
    if not line then break end
    if tty and line:find("%S") then edit.add_history(line) end
    local res = session:eval(line)
    if res.text ~= "" then
      local out = res.ok and io.stdout or io.stderr
      out:write(res.text, "\n")
      out:flush()
    end
    if not res.ok then failed = true end
    prompt = res.incomplete and ">> " or "> "
  end
  edit.close()
  if tty and hist then edit.write_history(hist) end
  assemble.close(env.sources)
  if session.pending then
    io.stderr:write("rollout repl: input ended inside a statement\n")
    failed = true
  end
  return (failed and not tty) and 1 or 0
end

return M

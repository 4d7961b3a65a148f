-- rollout run PLAYBOOK [--config FILE] [--set key=value ...] [--json] [--verbose]
-- Runs a playbook for real: its router moves real traffic, its sources read real metrics.
-- SIGINT or SIGTERM pauses: traffic stays where the last confirmed weights put it, the
-- run exits 3; a second SIGINT within 5 s rolls back (exit 1 once 0 % is confirmed).
local rollout = require("rollout")
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local output = require("rollout.output")

local M = {}
local USAGE = "rollout run PLAYBOOK [--config FILE] [--set key=value ...] [--json] [--verbose]"

--- build(pb, emit) -> router, sources | nil, err   (shared with repl and check)
function M.build(pb, emit)
  local routers = require("rollout.routers")
  local sources_mod = require("rollout.sources")
  if not pb.router then return nil, "the playbook names no router (router = {type = ...})" end
  local function forward(kind, fields)
    local ev = {}
    for k, v in pairs(fields or {}) do ev[k] = v end
    ev.kind = kind
    if emit then emit("router", ev) end
  end
  local ok, router = pcall(routers.new, pb.router, { emit = forward })
  if not ok then return nil, tostring(router) end
  local list = {}
  local ctx = { versions = pb.versions, service = pb.service, emit = function(kind, fields)
    local ev = {}
    for k, v in pairs(fields or {}) do ev[k] = v end
    ev.kind = kind
    if emit then emit("source", ev) end
  end }
  for i, cfg in ipairs(pb.sources) do
    local sok, src = pcall(sources_mod.new, cfg, ctx)
    if not sok then return nil, "sources[" .. i .. "]: " .. tostring(src) end
    list[#list + 1] = src
  end
  local has_signals = false
  for _, s in ipairs(list) do if s.signals then has_signals = true end end
  if not has_signals then return nil, "the playbook has no metric source with signals (scrape, prometheus or probe)" end
  return router, list
end

function M.main(argv)
  local opts, pos = args.parse(argv, { config = "value", set = "list", json = "flag", verbose = "flag" })
  if not opts then return args.usage_error("run", pos, USAGE) end
  if #pos ~= 1 then return args.usage_error("run", "expected one playbook", USAGE) end
  local pb, errs = playbook.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then
    for _, e in ipairs(errs) do io.stderr:write(playbook.format_error(e), "\n") end
    return 2
  end
  for _, w in ipairs(pb.warnings or {}) do io.stderr:write("warning: ", playbook.format_error(w), "\n") end
  local printer = output.printer({ json = opts.json, verbose = opts.verbose })
  local e
  local router, sources = M.build(pb, function(kind, fields) if e then e:emit(kind, fields) end end)
  if not router then
    io.stderr:write("rollout run: ", sources, "\n")
    return 2
  end
  e = engine.new(pb, { router = router, sources = sources, emit = printer, interactive = false,
    who = os.getenv("SUDO_USER") or os.getenv("USER") or "unknown" })
  local main = rollout.current()
  local interrupted
  local watcher = rollout.spawn(function()
    local sig = rollout.wait_signal("INT", "TERM")
    interrupted = sig
    e:command("pause", "SIG" .. sig, "signal")
  end)
  local task = rollout.spawn(function() return e:run() end)
  local outcome = task:wait()
  watcher:cancel()
  if interrupted and outcome.outcome == "paused" then
    io.stderr:write(string.format("rollout: paused by SIG%s with traffic at baseline %d%% / canary %d%%; press Ctrl-C again within 5 s to roll back\n",
      interrupted, e.weights.baseline, e.weights.canary))
    local again = rollout.wait_signal("INT", 5)
    if again then
      e.outcome = nil
      outcome = e:rollback({ reason = "manual", detail = "second SIGINT" })
    end
  end
  for _, s in ipairs(sources) do if s.close then pcall(s.close, s) end end
  output.summary(outcome, { json = opts.json })
  local _ = main
  return engine.EXIT[outcome.outcome] or 3
end

return M

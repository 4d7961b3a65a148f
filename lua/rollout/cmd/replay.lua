-- rollout replay PLAYBOOK --from TIME --to TIME [--prometheus URL] [--json] [--set k=v ...]
-- Runs a playbook's decisions against metrics a Prometheus recorded, in virtual time: t = 0
-- is --from, and every query of the playbook's prometheus source is evaluated at
-- from + t (the HTTP API's `time` parameter), so a rollout of an hour replays in seconds.
-- The router is simulated (weights are recorded, nothing moves) and the signals are what
-- the versions really did at the time, whatever share of traffic they had then. Alert
-- sources cannot be replayed (Alertmanager keeps no history) and are left out, said so.
-- A replay that reaches --to before the rollout ends stops paused, reason
-- inconclusive:end_of_recording. TIME: epoch seconds, RFC 3339 (2026-11-27T04:00:00Z),
-- or relative to now ("-30m").
-- Error policy: usage errors, a playbook that does not load (file:line: key: problem) and
-- a source that cannot be built (or no prometheus source) return 2 before anything runs;
-- a Prometheus that cannot answer is a source error of the interval, as in a live run (no
-- data, never a value); exit codes as `rollout run`'s (rollout.engine.EXIT). Nothing raises.
local rollout = require("rollout")
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local output = require("rollout.output")
local datetime = require("rollout.datetime")
local assemble = require("rollout.assemble")
local sim_router = require("rollout.sim.router")
local exit = require("rollout.exit")

local M = {}
M.summary = "run a playbook's decisions against what a real Prometheus recorded"
M.usage = "rollout replay PLAYBOOK --from TIME --to TIME [OPTIONS]"
M.description = "Runs PLAYBOOK in virtual time from --from to --to, evaluating every query of its "
  .. "prometheus source at the time it would have run, so a rollout of an hour replays in seconds. The "
  .. "router is simulated (nothing moves); alert sources are left out (Alertmanager keeps no history). A "
  .. "replay that reaches --to first stops paused, reason inconclusive:end_of_recording. TIME is epoch "
  .. "seconds, RFC 3339 (2026-11-27T04:00:00Z) or relative to now (-30m)."
M.options = {
  { "--from TIME", "where the replay starts: t = 0 (required)" },
  { "--to TIME", "where the recording ends (required)" },
  { "--prometheus URL", "read from this Prometheus instead of the playbook's prometheus source's url" },
  { "--json", "print one JSON object per event; the last line is the summary" },
  { "--verbose", "also print the events that have no line of their own" },
  { "--set KEY=VALUE", "override a playbook value before validation, e.g. --set stages[2].hold=20s or "
    .. "--set sources[1].url=http://prom:9090; numbers and booleans are read as such, a value starting with "
    .. "[ or { as JSON; repeatable", list = true },
  { "--config FILE", "map a runbook CanaryDeployment YAML onto the playbook (stages, golden signals, "
    .. "rollback triggers, feature flags, abTest); keys rollout cannot use are warned about with file and line" },
}
M.exit = exit.describe({ { "PROMOTED", "promoted" }, { "ROLLED_BACK", "rolled back" },
  { "USAGE", "usage or configuration error (nothing was done)" }, { "PAUSED", "paused, aborted or failed" } })

--- parse_time(s, now) -> epoch seconds | nil, err   (rollout.datetime: every form it reads)
M.parse_time = datetime.parse

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("replay", pos, M.usage) end
  if #pos ~= 1 or not opts.from or not opts.to then return args.usage_error("replay", "expected a playbook, --from and --to", M.usage) end
  local wall = rollout.time()
  local from, ferr = M.parse_time(opts.from, wall)
  local to, terr = M.parse_time(opts.to, wall)
  if not from or not to then return args.usage_error("replay", ferr or terr, M.usage) end
  if to <= from then return args.usage_error("replay", "--to must be after --from", M.usage) end
  local sets = opts.set or {}
  local pb, errs = playbook.load(pos[1], { sets = sets, config = opts.config })
  if not pb then
    return playbook.print_errors(errs)
  end
  -- the playbook's prometheus sources (--prometheus in place of their url), built by
  -- rollout.assemble with the replay's parts: the simulated router, these sources
  local rpb = setmetatable({ sources = {} }, { __index = pb })
  for _, cfg in ipairs(pb.sources) do
    local c = {}
    for k, v in pairs(cfg) do c[k] = v end
    if c.type == "prometheus" and opts.prometheus then c.url = opts.prometheus end
    rpb.sources[#rpb.sources + 1] = c
  end
  local list = {}
  for i, cfg in ipairs(rpb.sources) do
    if cfg.type == "prometheus" then
      local src, serr = assemble.source(rpb, i)
      if not src then
        assemble.close(list)
        io.stderr:write("rollout replay: ", serr, "\n")
        return 2
      end
      list[#list + 1] = src
    else
      io.stderr:write("rollout replay: source ", tostring(cfg.type), " cannot be replayed and is left out\n")
    end
  end
  if #list == 0 then
    io.stderr:write("rollout replay: the playbook has no prometheus source to replay\n")
    return 2
  end
  local router, sources = assemble.build(rpb, nil, { router = sim_router.new({}), sources = list })
  rollout.clock("virtual")
  local t0 = rollout.now()
  for _, src in ipairs(sources) do src.time_of = function(now) return from + (now - t0) end end
  local printer = output.printer({ json = opts.json, verbose = opts.verbose })
  local e = engine.new(pb, { router = router, sources = sources, emit = printer, simulate = true, who = "replay",
    preflight = {} })
  local stopper = rollout.spawn(function()
    rollout.sleep(to - from)
    e:interrupt({ action = "stop_paused", reason = "inconclusive:end_of_recording" })
  end)
  local outcome = e:run()
  stopper:cancel()
  assemble.close(sources)
  output.summary(outcome, { json = opts.json })
  return engine.EXIT[outcome.outcome] or 3
end

return M

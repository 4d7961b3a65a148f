-- rollout simulate PLAYBOOK --scenario FILE [--json] [--set k=v] [--config FILE] [--verbose]
-- Runs the playbook in virtual time with the simulated router and the scenario's
-- synthetic traffic, whatever router and sources the playbook names. Hooks do not run
-- (they would touch real systems) unless --run-hooks; pre-flight checks pass unless the
-- scenario's `preflight` table says otherwise. Exit codes as docs/semantics.md: 0 promoted,
-- 1 rolled back, 3 paused/aborted/failed, 2 usage or configuration error.
-- Error policy: usage, playbook and scenario errors (file:line: key: problem) are printed
-- and return 2 before anything runs; the run's own failures are its outcome (exit 3).
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local scenario = require("rollout.sim.scenario")
local engine = require("rollout.engine")
local output = require("rollout.output")
local simulation = require("rollout.simulation")
local exit = require("rollout.exit")

local M = {}
M.summary = "run a playbook in virtual time against a scenario's synthetic traffic"
M.usage = "rollout simulate PLAYBOOK --scenario FILE [OPTIONS]"
M.description = "Runs PLAYBOOK in virtual time (a 55-minute rollout in well under a second) with a "
  .. "simulated router and the synthetic traffic of a scenario file (scenarios/*.lua), whatever router "
  .. "and sources the playbook names. The same seed gives the same run, byte for byte. Hooks do not run "
  .. "unless --run-hooks; pre-flight checks pass unless the scenario says otherwise."
M.options = {
  { "--scenario FILE", "the scenario: traffic, the versions' behaviour and its changes, alerts, restarts, "
    .. "source errors (required)" },
  { "--config FILE", "map a runbook CanaryDeployment YAML onto the playbook (stages, golden signals, "
    .. "rollback triggers, feature flags, abTest); keys rollout cannot use are warned about with file and line" },
  { "--set KEY=VALUE", "override a playbook value before validation, e.g. --set stages[2].hold=20s or "
    .. "--set sources[1].url=http://prom:9090; numbers and booleans are read as such, a value starting with "
    .. "[ or { as JSON; repeatable", list = true },
  { "--json", "print one JSON object per event; the last line is the summary {outcome, reason, at, stage}" },
  { "--verbose", "also print the events that have no line of their own (per-interval evaluations)" },
  { "--run-hooks", "run the playbook's hooks too (they may touch real systems)" },
}
M.exit = exit.describe({ { "PROMOTED", "promoted" }, { "ROLLED_BACK", "rolled back" },
  { "USAGE", "usage or configuration error (nothing was done)" }, { "PAUSED", "paused, aborted or failed" } })

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("simulate", pos, M.usage) end
  if #pos ~= 1 or not opts.scenario then return args.usage_error("simulate", "expected a playbook and --scenario FILE", M.usage) end
  local pb, errs = playbook.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then
    return playbook.print_errors(errs)
  end
  for _, w in ipairs(pb.warnings or {}) do io.stderr:write("warning: ", playbook.format_error(w), "\n") end
  local sc, serrs = scenario.load(opts.scenario)
  if not sc then
    for _, e in ipairs(serrs) do io.stderr:write(scenario.format_error(e), "\n") end
    return 2
  end
  local emit = output.printer({ json = opts.json, verbose = opts.verbose })
  local outcome = simulation.run(pb, sc, { emit = emit, run_hooks = opts.run_hooks })
  output.summary(outcome, { json = opts.json })
  return engine.EXIT[outcome.outcome] or 3
end

return M

-- rollout.simulation: one playbook run in virtual time against a scenario's synthetic
-- traffic: the simulated router (rollout.sim.router) and the scenario's source
-- (rollout.sim.source) stand in for whatever router and sources the playbook names, put
-- together by rollout.assemble as every other run's are. Used by `rollout simulate`,
-- `rollout verify` (rollout.verify), tools/eval.lua, the benchmarks and the specs.
--   run(pb, sc, opts) -> outcome, engine
--     pb a validated playbook, sc a loaded scenario (rollout.sim.scenario)
--     opts = {emit =, run_hooks =, interactive =, on_engine = function(engine),
--             extra_sources = {...}, reservoir = N, t0 =}
--     outcome = the engine's {outcome, reason, at, stage, ...} plus requests (generated)
-- Error policy: the playbook and the scenario are validated by their loaders before this;
-- a simulated router or source cannot fail to build, so nothing here returns nil, err.
-- Errors raised by the engine's run (a playbook hook that raises) propagate to the caller.
-- Journaling is the caller's: events go to opts.emit.
local rollout = require("rollout")
local engine = require("rollout.engine")
local assemble = require("rollout.assemble")
local sim_router = require("rollout.sim.router")
local sim_source = require("rollout.sim.source")
local analysis = require("rollout.analysis")

local M = {}

function M.run(pb, sc, opts)
  opts = opts or {}
  if rollout.clock() ~= "virtual" then rollout.clock("virtual") end
  local router = sim_router.new({ faults = sc.router_faults, now = function() return rollout.now() - (opts.t0 or 0) end })
  local t0 = rollout.now()
  router.now = function() return rollout.now() - t0 end
  -- raw latencies for the judge only when a stage uses it (rollout.analysis)
  local keep = opts.reservoir or (analysis.wanted(pb) and 500 or 0)
  local src = sim_source.new(sc, { router = router, interval = pb.interval,
    history = math.max(pb.gate_window, pb.trigger_window), reservoir = keep })
  -- the source lives on scenario time (t = 0 at the start); the clock may be past 0
  local source = src:from(t0)
  local _, sources = assemble.build(pb, nil, { router = router, sources = { source }, extra_sources = opts.extra_sources })
  local e = engine.new(pb, { router = router, sources = sources, emit = opts.emit, simulate = true,
    run_hooks = opts.run_hooks, preflight = sc.preflight, interactive = opts.interactive, who = "simulation" })
  if opts.on_engine then opts.on_engine(e) end
  local outcome = e:run()
  outcome.requests = src.generated
  return outcome, e
end

return M

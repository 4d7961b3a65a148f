-- spec/support/observability.lua: helpers for the /metrics, notification and report specs.
--
--   obs.playbook{...overrides} -> a validated playbook with short real-time stages
--   obs.run(pb, scenario_table, {emit=, on_engine=, simulate=false, resume=}) -> outcome, engine, events
--       (resume: journal.replay's table, to continue a rollout as `rollout run --resume` does)
--       runs the engine on the *real* clock (the spec runner's) with the simulated router and
--       the scenario's synthetic traffic, so a rollout takes seconds of wall time and its
--       events carry wall-clock `ts` as in `rollout run`.
--   obs.crash_at(pb, scenario_table, weight, emit [, settle]) -> events: a run stopped (as by
--       kill -9) once the canary's weight is confirmed: the journal a resume reads
--   obs.capture(playbook_path, scenario_path) -> path of a `rollout simulate --json` capture
--   obs.journalize(src, dst, ts0) -> a copy with `ts` = ts0 + t on every event (a real run's shape)
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local scenario = require("rollout.sim.scenario")
local sim_router = require("rollout.sim.router")
local sim_source = require("rollout.sim.source")

local M = {}

-- The labelled scenarios shipped with the repository.
M.SCENARIOS = "scenarios"

local function merge(dst, src)
  for k, v in pairs(src or {}) do dst[k] = v end
  return dst
end

function M.playbook(over)
  local raw = merge({
    name = "obs-demo", service = "obs-demo",
    versions = { baseline = { version = "v1.0.0" }, canary = { version = "v1.1.0" } },
    interval = "100ms", trigger_window = "300ms", gate_window = "400ms",
    thresholds = { error_rate = "5%", p99 = "500ms" },
    stages = { { name = "Initial", weight = 10, hold = "400ms" }, { name = "Half", weight = 50, hold = "400ms" },
      { name = "Full", weight = 100, hold = "400ms" } },
    triggers = { error_rate = { condition = "error_rate > 20%", duration = "200ms" } },
  }, over)
  local pb, errs = playbook.validate(raw, { file = "obs-demo.lua" })
  if not pb then error("playbook: " .. playbook.format_error(errs[1]), 2) end
  return pb
end

function M.scenario(over)
  local raw = merge({
    seed = 3, traffic = { rps = 2000 },
    baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
    canary = { error_rate = 0.003, latency = { p50 = "42ms", p99 = "190ms" } },
  }, over)
  local sc, errs = scenario.check(raw)
  if not sc then error("scenario: " .. tostring(errs[1].path) .. ": " .. errs[1].msg, 2) end
  return sc
end

function M.run(pb, sc, opts)
  opts = opts or {}
  local t0 = rollout.now()
  local router = sim_router.new({ faults = sc.router_faults, now = function() return rollout.now() - t0 end })
  local src = sim_source.new(sc, { router = router, interval = pb.interval,
    history = math.max(pb.gate_window, pb.trigger_window) })
  local source = src:from(t0)
  local events = {}
  local function emit(ev, e)
    events[#events + 1] = ev
    if opts.emit then opts.emit(ev, e) end
  end
  local e = engine.new(pb, { router = router, sources = { source }, emit = emit, simulate = opts.simulate or false,
    interactive = opts.interactive, who = opts.who or "spec", resume = opts.resume })
  if opts.on_engine then opts.on_engine(e) end
  local outcome = e:run()
  return outcome, e, events
end

--- crash_at(pb, sc, weight, emit [, settle]) -> events: run as M.run does, and stop the
--- engine (as kill -9 would: no more events) `settle` seconds after the router confirmed
--- `weight` % for the canary. The events are the journal a `--resume` would read.
function M.crash_at(pb, sc, weight, emit, settle)
  local events, reached = {}, false
  local task = rollout.spawn(function()
    M.run(pb, sc, { emit = function(ev, e)
      events[#events + 1] = ev
      if ev.event == "weight_confirmed" and ev.canary == weight then reached = true end
      if emit then return emit(ev, e) end
    end })
  end)
  local deadline = rollout.now() + 20
  while not reached and rollout.now() < deadline do rollout.sleep(0.02) end
  assert(reached, "the run never reached " .. weight .. " %")
  rollout.sleep(settle or 0)
  task:cancel()
  return events
end

function M.capture(pb_path, sc_path, dst)
  local r = assert(proc.run({ argv = { rollout.exe, "simulate", pb_path, "--scenario", sc_path, "--json" }, timeout = 60 }))
  assert(r.stdout:find('"outcome"'), "simulate printed no summary: " .. r.stderr)
  assert(fs.write_atomic(dst, r.stdout))
  return dst
end

function M.journalize(src, dst, ts0)
  local out = {}
  for line in assert(io.open(src)):lines() do
    local v = json.decode(line)
    if v and v.event then v.ts = ts0 + v.t end
    out[#out + 1] = v and json.encode(v, { sort = true }) or line
  end
  assert(fs.write_atomic(dst, table.concat(out, "\n") .. "\n"))
  return dst
end

function M.events_of(events, kind)
  local out = {}
  for _, ev in ipairs(events) do if ev.event == kind then out[#out + 1] = ev end end
  return out
end

return M

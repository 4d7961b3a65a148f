-- Benchmark: a full 55-minute five-stage simulation of playbooks/canary.lua at 1,000 req/s
-- of synthetic traffic (3.3 M requests plus 5 min of baseline history) with 10 s
-- evaluations. Target: <= 1 s on this machine. Printed beside its anchor: the 55 minutes
-- the same rollout takes in real time (the speed-up is the ratio).
local playbook = require("rollout.playbook")
local scenario = require("rollout.sim.scenario")
local simulation = require("rollout.simulation")

local pb = assert(playbook.load("playbooks/canary.lua"))
local sc = assert(scenario.load("bench/fixtures/healthy-1000.lua"))
local runs = tonumber(arg and arg[1]) or 3
local best, outcome = math.huge, nil
for _ = 1, runs do
  local c0 = os.clock()
  outcome = simulation.run(pb, sc, {})
  best = math.min(best, os.clock() - c0)
end
local real = 55 * 60
print(string.format("simulation: %s at %s, %d requests", outcome.outcome, outcome.at, outcome.requests))
print(string.format("  best of %d: %.3f s CPU for a 55-minute rollout (target <= 1 s)", runs, best))
print(string.format("  %.2f M requests simulated per second; anchor: real time %d s -> speed-up x%.0f",
  outcome.requests / best / 1e6, real, real / best))

-- Drive an engine under the virtual clock with operator commands at given times:
--   rollout --clock=virtual spec/support/engine_driver.lua PLAYBOOK SCENARIO 'cmd@time' ...
-- Prints the events and the summary as JSON lines, like `rollout simulate --json`.
local playbook = require("rollout.playbook")
local scenario = require("rollout.sim.scenario")
local simulation = require("rollout.simulation")
local output = require("rollout.output")
local units = require("rollout.units")

local pb = assert(playbook.load(arg[1]))
local sc = assert(scenario.load(arg[2]))
local emit = output.printer({ json = true })
local outcome = simulation.run(pb, sc, {
  emit = emit, interactive = true, run_hooks = os.getenv("RUN_HOOKS") == "1",
  on_engine = function(e)
    for i = 3, #arg do
      local cmd, at = arg[i]:match("^([%w_]+)@(.+)$")
      rollout.spawn(function()
        rollout.sleep(units.duration(at))
        e:command(cmd, nil, "driver")
      end)
    end
  end,
})
output.summary(outcome, { json = true })

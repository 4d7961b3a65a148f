-- Run `rollout simulate` in a child process (the simulation needs the virtual clock;
-- the spec runner keeps the real one) and return the parsed events and summary.
local proc = require("rollout.proc")
local json = require("rollout.json")

local M = {}

-- The labelled scenarios shipped with the repository.
M.SCENARIOS = "scenarios"

--- simulate(playbook, scenario, extra_args) -> summary, events, result
function M.simulate(playbook, scenario, extra)
  local argv = { rollout.exe, "simulate", playbook, "--scenario", scenario, "--json" }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local r = assert(proc.run({ argv = argv, timeout = 60 }))
  local events, summary = {}, nil
  for line in r.stdout:gmatch("[^\n]+") do
    local v = json.decode(line)
    if v then
      if v.event then events[#events + 1] = v else summary = v end
    end
  end
  return summary, events, r
end

function M.events_of(events, kind)
  local out = {}
  for _, e in ipairs(events) do if e.event == kind then out[#out + 1] = e end end
  return out
end

return M

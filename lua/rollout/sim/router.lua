-- rollout.sim.router: the simulated router `rollout simulate` uses whatever router the
-- playbook names. Weights apply at once and read back exactly, unless the scenario lists
-- router_faults = {{from=, to=}} during which every set fails (rollback retries).
-- Error policy: as a real router's: a failed set or read returns nil, err.
local units = require("rollout.units")

local M = {}
M.__index = M

function M.new(opts)
  opts = opts or {}
  local faults = {}
  for i, f in ipairs(opts.faults or {}) do
    faults[i] = { from = units.duration(f.from), to = units.duration(f.to) }
  end
  return setmetatable({ weights = { baseline = 100, canary = 0 }, faults = faults, now = opts.now, emit = opts.emit, sets = 0 }, M)
end

function M:faulty()
  local t = self.now and self.now() or 0
  for _, f in ipairs(self.faults) do if t >= f.from and t < f.to then return true end end
  return false
end

function M:set_weights(w)
  self.sets = self.sets + 1
  if self:faulty() then return nil, "simulated router fault" end
  self.weights = { baseline = w.baseline, canary = w.canary }
  self.confirmed = { baseline = w.baseline, canary = w.canary }
  return true
end

function M:get_weights()
  if self:faulty() then return nil, "simulated router fault" end
  return { baseline = self.weights.baseline, canary = self.weights.canary }
end

function M:verify() return true end
function M:check() return { { name = "simulated router", ok = true, detail = "simulation" } } end
function M:describe() return { type = "simulated", weights = self.weights } end
function M:header_override(h) self.override = h; return true end -- preview traffic (scenario `preview`)

return M

-- The calibration families of `make eval`: playbooks/canary.lua's static gates against
-- canaries a margin away from a threshold, over many seeds, to measure how often a gate
-- decides wrongly on sampling noise (README "Gates on proportions").
--
--   generate(seeds [, first_seed]) -> list of {name=, family=, want=, reasons=, scenario=}
--
-- Every family is one canary, `seeds` times with seeds first_seed, first_seed + 1, ...:
--   health_good   health 0.995 (threshold 0.99, then 0.98)         want promoted
--   health_bad    health 0.95                                       want rolled back by health
--   errors_good   error rate 0.5 % (0.5x the 1 % gate)              want promoted
--   errors_bad    error rate 2 % (2x the 1 % gate)                  want rolled back by error_rate
--   p99_good      p99 400 ms (0.8x the 500 ms gate)                 want promoted
--   p99_bad       p99 750 ms (1.5x the 500 ms gate)                 want rolled back by p99
-- and each again at low traffic (`low_` prefix): 120 requests/s in all, just above the
-- runbook's 100 req/s minimum, so the Initial stage sees ~1,800 canary requests. There a
-- good canary must be promoted or paused (inconclusive), never rolled back; a bad one
-- rolled back by its signal or paused, never promoted.
local M = {}

M.SEED = 7100
M.RPS, M.LOW_RPS = 400, 120

local BASE = { error_rate = 0.002, latency = { p50 = 0.040, p99 = 0.180 }, health = 1 }

-- family = {canary changes, want, the rollback reasons that name the right signal}
M.FAMILIES = {
  { "health_good", { health = 0.995 }, "promoted" },
  { "health_bad", { health = 0.95 }, "rolled_back", { "gate:health", "trigger:health_score" } },
  { "errors_good", { error_rate = 0.005 }, "promoted" },
  { "errors_bad", { error_rate = 0.02 }, "rolled_back", { "gate:error_rate", "trigger:error_rate" } },
  { "p99_good", { latency = { p50 = 0.040, p99 = 0.400 } }, "promoted" },
  { "p99_bad", { latency = { p50 = 0.040, p99 = 0.750 } }, "rolled_back", { "gate:p99", "trigger:latency_p99" } },
}

local function version(over)
  local v = { error_rate = BASE.error_rate, latency = { p50 = BASE.latency.p50, p99 = BASE.latency.p99 }, health = BASE.health }
  for k, x in pairs(over or {}) do v[k] = x end
  return v
end

function M.generate(seeds, first)
  first = first or M.SEED
  local out = {}
  for _, low in ipairs({ false, true }) do
    for _, f in ipairs(M.FAMILIES) do
      local name = (low and "low_" or "") .. f[1]
      for i = 0, seeds - 1 do
        out[#out + 1] = {
          name = "calibration/" .. name .. "/" .. (first + i), family = name, want = f[3], low = low,
          reasons = f[4],
          scenario = { seed = first + i, traffic = { rps = low and M.LOW_RPS or M.RPS },
            baseline = version(), canary = version(f[2]) },
        }
      end
    end
  end
  return out
end

--- judge(case, outcome, reason) -> "right" | "wrong", why: whether a run decided as its
--- family wants. At low traffic a pause (inconclusive) is right too.
function M.judge(c, outcome, reason)
  if c.want == "promoted" then
    if outcome == "promoted" or (c.low and outcome == "paused") then return "right" end
    return "wrong", outcome .. (reason and (" " .. reason) or "")
  end
  if outcome == "rolled_back" then
    for _, r in ipairs(c.reasons or {}) do if r == reason then return "right" end end
    return "wrong", "rolled back by " .. tostring(reason)
  end
  if c.low and outcome == "paused" then return "right" end
  return "wrong", outcome .. (reason and (" " .. reason) or "")
end

return M

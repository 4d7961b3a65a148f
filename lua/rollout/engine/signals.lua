-- rollout.engine.signals: what the engine reads from its metric sources — every source's
-- signals for a window merged into one {baseline=, canary=}, which signals are measured, and
-- compact(), the summary events carry. Part of the engine class (rollout.engine installs
-- M.methods on it).
--
-- Error policy: raises nothing for what a source does. E:signals returns the merged signals,
-- or nil, err (the first failing source's error, or "no metric source configured"): the
-- caller journals it as no data, never as a pass.
local safety = require("rollout.safety")

local M = {}
local E = {}
M.methods = E

--- compact(s) -> the signal summary an event carries (nil for nil).
function M.compact(s)
  if not s then return nil end
  return { requests = s.requests, rps = s.rps, error_rate = s.error_rate, errors = s.errors, p50 = s.p50, p95 = s.p95,
    p99 = s.p99, health = s.health, health_ok = s.health_ok, health_total = s.health_total, cpu = s.cpu,
    memory = s.memory, disk = s.disk, restarts = s.restarts }
end

function E:signals(now, win)
  local merged = { baseline = {}, canary = {} }
  local any = false
  local real = safety.real_traffic(self.sources) -- a probe adds evidence, never replaces it
  for _, src in ipairs(self.sources) do
    if src.signals then
      any = true
      local s, err = src:signals(now, win)
      if not s then return nil, err or "source error" end
      for _, v in ipairs({ "baseline", "canary" }) do
        for k, x in pairs(s[v] or {}) do
          if merged[v][k] == nil and safety.signal_source(src, k, real) then merged[v][k] = x end
        end
      end
    end
  end
  if not any then return nil, "no metric source configured" end
  return merged
end

function E:provides(signal)
  for _, src in ipairs(self.sources) do
    if src.signals and (not src.provides or src.provides[signal]) then return true end
  end
  return false
end

return M

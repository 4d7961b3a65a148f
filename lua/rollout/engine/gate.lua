-- rollout.engine.gate: the gate at the end of a stage's hold (docs/semantics.md "Gates"):
-- every threshold on the gate window (absolute, or relative to the baseline captured before
-- the first shift), sample and traffic minimums, the canary's share of evidence, broken
-- trigger checks, then the statistical judge (rollout.analysis). Part of the engine class
-- (rollout.engine installs M.methods on it).
--
-- Error policy: raises nothing. No evidence is never a pass: a source error, a signal with
-- no data, too few samples or a short proportion test extend the hold, and past max_hold
-- are "inconclusive". E:evaluate_gate journals `gate` with every number and returns the
-- verdict; E:capture_baseline returns false after `baseline_missing`.
local rollout = require("rollout")
local playbook = require("rollout.playbook")
local safety = require("rollout.safety")
local analysis = require("rollout.analysis")
local signals = require("rollout.engine.signals")
local triggers = require("rollout.engine.triggers")

local compact = signals.compact

local M = {}
local E = {}
M.methods = E

function E:capture_baseline()
  local win = self.pb.gate_window
  for attempt = 1, 3 do
    local now = rollout.now()
    for _, src in ipairs(self.sources) do if src.tick then src:tick(now) end end
    local sig = self:signals(now, win)
    if sig and sig.baseline.requests and sig.baseline.requests > 0 then
      self.baseline_snapshot = sig.baseline
      self:emit("baseline_captured", { baseline = compact(sig.baseline), window = win })
      return true
    end
    if attempt < 3 then rollout.sleep(self.pb.interval) end
  end
  self:emit("baseline_missing", { detail = "no baseline traffic measured; thresholds relative to the baseline cannot pass" })
  return false
end

local GATE_ORDER = { "error_rate", "p99", "p95", "p50", "health", "cpu", "memory", "disk" }

function E:threshold_limit(t, sig)
  if not t.relative then return t.value end
  -- relative to the baseline captured before the first shift (the runbook's Step 2), or
  -- with policy.relative_to = "live" to the baseline in the same window (falling back to
  -- the capture when the baseline has no traffic, as at 100 %)
  local b = self.pb.policy.relative_to == "live" and sig and sig.baseline[t.signal] or nil
  if b == nil then b = self.baseline_snapshot and self.baseline_snapshot[t.signal] end
  if b == nil then return nil end
  if t.relative == "factor" then return b * t.factor end
  return b + t.plus
end

--- The gate at the end of a hold: "pass" | "fail", signal | "extend", why | "inconclusive", why
function E:evaluate_gate(stage)
  local pb = self.pb
  local now = rollout.now()
  if self.last_tick and now - self.last_tick < pb.interval / 2 then now = self.last_tick end -- the grid
  local held = now - self.stage_start
  local win = math.min(stage.hold, pb.gate_window)
  local th = playbook.stage_thresholds(pb, stage)
  local ev = { stage = stage.name, window = win, held = held, checks = {} }
  -- which look at the evidence this is: 1 at the end of the hold, then one per extension
  local look = { math.max(1, math.floor((held - (self.paused_in_stage or 0) - stage.hold) / pb.interval + 0.5) + 1),
    math.floor((stage.max_hold - stage.hold) / pb.interval + 1e-9) + 1 }
  local sig, err = self:signals(now, win)
  local short = {}
  local failed, nodata
  if not sig then
    short[#short + 1] = "source_error"
    ev.error = err
  else
    ev.baseline, ev.canary = compact(sig.baseline), compact(sig.canary)
    local whole = self:signals(now, held - 1e-6) -- (stage_start, now]: intervals ended after the shift
    local n = whole and whole.canary.requests or 0
    ev.samples, ev.min_samples = n, stage.min_samples
    if n < stage.min_samples then short[#short + 1] = "min_samples" end
    if th.min_rps then
      local total = (sig.baseline.rps or 0) + (sig.canary.rps or 0)
      ev.total_rps, ev.min_rps = total, th.min_rps.value
      if total < th.min_rps.value then short[#short + 1] = "min_rps" end
    end
    for _, name in ipairs(GATE_ORDER) do
      local t = th[name]
      if t then
        local check = { signal = name, dir = t.dir }
        ev.checks[#ev.checks + 1] = check
        if not self:provides(t.signal) then
          check.status = "not_measured"
        else
          local v, limit = sig.canary[t.signal], self:threshold_limit(t, sig)
          check.value, check.threshold = v, limit
          if t.relative then
            check.relative = t.relative
            check.baseline = self.pb.policy.relative_to == "live" and sig.baseline[t.signal]
              or (self.baseline_snapshot and self.baseline_snapshot[t.signal])
          end
          if v == nil or limit == nil then
            check.status = "nodata"
            nodata = nodata or name
          else
            -- a proportion with its counts: decided with evidence (rollout.proportion)
            local pstatus, evidence = analysis.proportion_check(pb, t, sig.canary, limit, look)
            local pass = (t.dir == "max" and v <= limit) or (t.dir == "min" and v >= limit)
            if pstatus then pass = pstatus == "pass"; check.evidence = evidence end
            check.status = pstatus == "short" and "short" or (pass and "pass" or "fail")
            if pstatus == "short" then short[#short + 1] = "evidence:" .. name
            elseif not pass then failed = failed or name end
          end
        end
      end
    end
  end
  if nodata then short[#short + 1] = "no_data:" .. nodata end
  for _, tr in ipairs(pb.triggers) do -- a check that keeps raising watches nothing: no data, never a pass
    if (self.trig[tr.name].errors or 0) >= triggers.TRIGGER_ERROR_LIMIT then
      short[#short + 1] = "trigger_error:" .. tr.name
      ev.trigger_errors = ev.trigger_errors or {}
      ev.trigger_errors[tr.name] = self.trig[tr.name].errors
    end
  end
  if sig then -- no evidence is not health: a canary far below its share (rollout.safety)
    local lack, fields = safety.gate_evidence(self, sig)
    ev.canary_share = fields
    if lack then table.insert(short, 1, lack) end -- the root cause: the canary has no traffic
  end
  if #short == 0 and not failed then
    -- every static threshold holds: the statistical judge, where enabled (rollout.analysis)
    local verdict, jwhy = analysis.gate(self, stage)
    if verdict == "fail" then failed = jwhy elseif verdict == "inconclusive" then short[1] = jwhy end
  end
  local result, why
  -- "Any threshold broken: rollback" (docs/semantics.md), also while samples are short: a canary
  -- over its limit does not keep its traffic waiting for more data
  local active = held - (self.paused_in_stage or 0)
  if failed then result, why = "fail", failed
  elseif #short > 0 then
    if active + pb.interval <= stage.max_hold + 1e-9 then result, why = "extend", table.concat(short, ",")
    else result, why = "inconclusive", short[1] end
  else result = "pass" end
  ev.result, ev.why = result, why
  self:emit("gate", ev)
  return result, why
end

return M

-- rollout.report.dora: DORA figures over many journals (deployment frequency, lead time,
-- change failure rate, time to restore; see docs/observability.md).
-- Error policy: raises only on programming errors.
local json = require("rollout.json")
local output = require("rollout.output")
local datetime = require("rollout.datetime")
local markdown = require("rollout.report.markdown")

local M = {}

local clock = output.clock
local iso = datetime.iso8601
local function null(v) if v == nil then return json.null end return v end

local function median(list)
  if #list == 0 then return nil end
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end
M.median = median

local function stats(list)
  if #list == 0 then return json.null end
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(list) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return { count = #list, median = median(list), min = lo, max = hi }
end

--- The frequency label: by promoted deployments per day over the period.
function M.frequency_label(per_day)
  if per_day >= 1.5 then return "Multiple per day" end
  if per_day >= 5 / 7 then return "Daily" end
  if per_day >= 1 / 7 then return "Weekly" end
  if per_day >= 1 / 30 then return "Monthly" end
  return "Less than monthly"
end

--- dora(models) -> figures (see docs/observability.md for the definitions)
function M.dora(models)
  local r = { rollouts = #models, skipped = {}, promoted = 0, rolled_back = 0, failed = 0, aborted = 0, unfinished = 0,
    rollouts_list = {} }
  local first, last
  local restore, detect, lead = {}, {}, {}
  local changes, failures = 0, 0
  for _, m in ipairs(models) do
    local o = m.outcome and m.outcome.outcome or "unfinished"
    local item = { deployment_id = m.deployment_id, service = m.service, outcome = o, reason = null(m.outcome and m.outcome.reason),
      started_at = null(iso(m.started_ts)), duration_seconds = m.duration, source = null(m.path) }
    r.rollouts_list[#r.rollouts_list + 1] = item
    if not m.started_ts then
      r.skipped[#r.skipped + 1] = (m.path or m.deployment_id) .. ": no wall-clock times (a simulation)"
    elseif m.observe then
      r.skipped[#r.skipped + 1] = (m.path or m.deployment_id) .. ": observe-only (it deployed nothing)"
    else
      first = math.min(first or m.started_ts, m.started_ts)
      last = math.max(last or m.ended_ts, m.ended_ts)
      if o == "promoted" then r.promoted = r.promoted + 1
      elseif o == "rolled_back" then r.rolled_back = r.rolled_back + 1
      elseif o == "failed" then r.failed = r.failed + 1
      elseif o == "aborted" then r.aborted = r.aborted + 1
      else r.unfinished = r.unfinished + 1 end
      if m.shifted and (o == "promoted" or o == "rolled_back" or o == "failed") then
        changes = changes + 1
        if o ~= "promoted" then failures = failures + 1 end
      end
      for _, rb in ipairs(m.rollbacks) do
        if rb.restore then
          restore[#restore + 1] = rb.restore
          item.restore_seconds = rb.restore
          -- from the first sign (a trigger going pending, a failing gate) to traffic back
          local sign = rb.t
          for _, e in ipairs(m.triggers) do
            if e.event == "trigger_pending" and e.t <= rb.t and rb.reason == "trigger:" .. tostring(e.trigger) then
              sign = math.min(sign, e.t)
            end
          end
          detect[#detect + 1] = rb.at - sign
        end
      end
      if o == "promoted" and m.commit_ts then
        lead[#lead + 1] = m.ended_ts - m.commit_ts
        item.lead_time_seconds = m.ended_ts - m.commit_ts
      end
    end
  end
  local period = first and math.max(86400, last - first) or nil
  r.period = first and { from = iso(first), to = iso(last), seconds = last - first } or json.null
  local per_day = period and r.promoted / (period / 86400) or 0
  r.deployment_frequency = period and { deployments = r.promoted, per_day = per_day, per_week = per_day * 7,
    label = M.frequency_label(per_day), period_seconds = period } or json.null
  r.change_failure_rate = changes > 0 and { rate = failures / changes, failed = failures, changes = changes } or json.null
  r.time_to_restore = stats(restore)
  r.time_from_first_sign_to_restore = stats(detect)
  r.lead_time = stats(lead)
  r.lead_time_recorded = #lead
  r.rollouts_list = json.array(r.rollouts_list)
  r.skipped = json.array(r.skipped)
  return r
end

--- dora_text(figures) -> lines for a person
function M.dora_text(d)
  local L = { string.format("DORA over %d rollouts%s", d.rollouts,
    d.period ~= json.null and string.format(" from %s to %s", d.period.from, d.period.to) or "") }
  local f = d.deployment_frequency
  if f ~= json.null then
    L[#L + 1] = string.format("  deployment frequency   %s: %d promoted in %s (%.2f per day, %.1f per week)", f.label, f.deployments,
      markdown.human_duration(f.period_seconds), f.per_day, f.per_week)
  else
    L[#L + 1] = "  deployment frequency   n/a (no rollout with wall-clock times)"
  end
  local c = d.change_failure_rate
  L[#L + 1] = c ~= json.null and string.format(
    "  change failure rate    %.1f%% (%d of %d changes that reached users were rolled back or failed)",
    c.rate * 100, c.failed, c.changes) or "  change failure rate    n/a (no finished change)"
  local t = d.time_to_restore
  L[#L + 1] = t ~= json.null and string.format(
    "  time to restore        median %s, max %s over %d rollbacks (decision to traffic back on the baseline)",
    clock(t.median), clock(t.max), t.count) or "  time to restore        n/a (no rollback)"
  local s = d.time_from_first_sign_to_restore
  if s ~= json.null then L[#L + 1] = string.format("  first sign to restore  median %s, max %s", clock(s.median), clock(s.max)) end
  local l = d.lead_time
  L[#L + 1] = l ~= json.null and string.format("  lead time for changes  median %s (min %s, max %s) over %d promoted with commit_time",
    markdown.human_duration(l.median), markdown.human_duration(l.min), markdown.human_duration(l.max), l.count) or
    "  lead time for changes  n/a (no promoted rollout recorded a commit_time)"
  L[#L + 1] = string.format("  outcomes               %d promoted, %d rolled back, %d failed, %d aborted, %d unfinished",
    d.promoted, d.rolled_back, d.failed, d.aborted, d.unfinished)
  for _, s2 in ipairs(d.skipped) do L[#L + 1] = "  skipped: " .. s2 end
  return table.concat(L, "\n") .. "\n"
end

return M

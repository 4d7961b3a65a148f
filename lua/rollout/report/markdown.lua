-- rollout.report.markdown: an entry in the runbook's deployment-log format (its Step 9).
-- Error policy: raises only on programming errors.
local output = require("rollout.output")
local model = require("rollout.report.model")

local M = {}

local fmt_value, clock = output.value, output.clock
local count, check_text = model.count, model.check_text

local function minutes(s)
  if not s then return "?" end
  local mnt = s / 60
  if mnt >= 10 then return string.format("%d", math.floor(mnt + 0.5)) end
  return (string.format("%.1f", mnt):gsub("%.0$", ""))
end

function M.human_duration(s)
  if not s then return "?" end
  if s < 120 then return string.format("%.0f seconds", s) end
  if s < 7200 then return string.format("%s minutes", minutes(s)) end
  if s < 172800 then return (string.format("%.1f hours", s / 3600):gsub("%.0 ", " ")) end
  return (string.format("%.1f days", s / 86400):gsub("%.0 ", " "))
end

local function issues_of(m)
  local out = {}
  for _, e in ipairs(m.triggers) do
    if e.event == "trigger_fired" then
      out[#out + 1] = string.format("trigger %s fired at %s (%s)", e.trigger, clock(e.t), e.condition or tostring(e.value))
    end
  end
  for _, g in ipairs(m.gates) do
    if g.result == "fail" or g.result == "inconclusive" then
      local bad = {}
      for _, c in ipairs(g.checks or {}) do if c.status == "fail" or c.status == "nodata" then bad[#bad + 1] = check_text(c) end end
      out[#out + 1] = string.format("gate %s %s at %s%s", tostring(g.stage), g.result, clock(g.t),
        #bad > 0 and (": " .. table.concat(bad, ", ")) or (g.why and (" (" .. g.why .. ")") or ""))
    end
  end
  local c = m.counts
  if c.source_errors > 0 then out[#out + 1] = string.format("%d failed metric evaluations", c.source_errors) end
  if c.router_errors > 0 then out[#out + 1] = string.format("%d router errors", c.router_errors) end
  if c.hook_failures > 0 then out[#out + 1] = string.format("%d hook failures", c.hook_failures) end
  if c.share_warnings > 0 then out[#out + 1] = string.format("%d request-share warnings", c.share_warnings) end
  if #m.notifications.failed > 0 then out[#out + 1] = string.format("%d notifications not delivered", #m.notifications.failed) end
  for _, p in ipairs(m.preflight) do
    if p.status == "fail" then out[#out + 1] = "pre-flight " .. p.check .. " failed: " .. tostring(p.detail) end
    -- a check that could not run is not a pass: the report says so
    if p.status == "skip" then out[#out + 1] = "pre-flight " .. p.check .. " skipped: " .. tostring(p.detail) end
  end
  return out
end
M.issues = issues_of

--- markdown(model, {dora = figures from M.dora, now = epoch}) -> text
function M.markdown(m, opts)
  opts = opts or {}
  local o = m.outcome and m.outcome.outcome or "unfinished"
  local success = ({ promoted = "✅ Yes", rolled_back = "❌ No (rolled back)", aborted = "❌ No (aborted)",
    failed = "❌ No (failed)", paused = "⏸️ Not yet (paused)" })[o] or "⏳ Not yet (unfinished)"
  local rb = {}
  for _, r in ipairs(m.rollbacks) do
    rb[#rb + 1] = string.format("%s at %s%s%s", r.reason, clock(r.t), r.stage and (" in " .. r.stage) or "",
      r.restore and string.format("; traffic back on %s in %s", tostring(m.baseline), clock(r.restore)) or "")
  end
  local issues = issues_of(m)
  local h = m.headline
  local function metric(signal)
    if not h then return "no data" end
    local c, b = h.canary[signal], h.baseline and h.baseline[signal]
    return string.format("%s (canary, %s at %s; baseline %s)", fmt_value(signal, c), h.from, clock(h.t), fmt_value(signal, b))
  end
  local d = opts.dora
  local freq = d and d.deployment_frequency and string.format("%s (%d promoted in %s)", d.deployment_frequency.label,
    d.deployment_frequency.deployments, M.human_duration(d.deployment_frequency.period_seconds))
    or "n/a for a single rollout (`rollout report --dora DIR`)"
  local lead
  if m.commit_ts and m.ended_ts and o == "promoted" then lead = M.human_duration(m.ended_ts - m.commit_ts) .. " (commit to promoted)"
  elseif m.commit_ts then lead = "n/a (not promoted)"
  else lead = "not recorded (set commit_time in the playbook)" end
  local date = m.started_ts and os.date("!%a %b %d %H:%M:%S UTC %Y", math.floor(m.started_ts)) or "n/a (simulation)"
  local L = {
    "", "## Deployment: " .. m.deployment_id, "",
    "- **Date:** " .. date,
    "- **Version:** " .. tostring(m.canary) .. (m.baseline and (" (from " .. m.baseline .. ")") or ""),
    "- **Type:** " .. (m.strategy == "blue_green" and "Blue-green" or "Canary") .. (m.observe and " (observe-only)" or ""),
    "- **Duration:** " .. (m.duration < 60 and string.format("%.1f seconds", m.duration) or (minutes(m.duration) .. " minutes")),
    "- **Success:** " .. success,
    "- **Rollbacks:** " .. (#rb > 0 and (#rb .. " (" .. table.concat(rb, "; ") .. ")") or "None"),
    "- **Issues:** " .. (#issues > 0 and table.concat(issues, "; ") or "None"),
    "", "### Metrics", "",
    "- **Error Rate:** " .. metric("error_rate"),
    "- **Latency P99:** " .. metric("p99"),
    "- **Deployment Frequency:** " .. freq,
    "- **Lead Time:** " .. lead,
    "", "### Notes", "", m.why, "",
  }
  if #m.stages > 0 then
    L[#L + 1] = "| Stage | Weight | Gate | Checks | Samples |"
    L[#L + 1] = "|-------|--------|------|--------|---------|"
    for _, st in ipairs(m.stages) do
      local g = st.gates[#st.gates]
      local checks = {}
      for _, c in ipairs(g and g.checks or {}) do
        if c.status ~= "not_measured" then
          checks[#checks + 1] = check_text(c) .. (c.status ~= "pass" and (" **" .. c.status .. "**") or "")
        end
      end
      L[#L + 1] = string.format("| %s | %s%% | %s | %s | %s |", st.name, tostring(st.weight), g and g.result or "not reached",
        #checks > 0 and table.concat(checks, ", ") or "–",
        g and g.samples and string.format("%s/%s", count(g.samples), count(g.min_samples or 0)) or "–")
    end
    L[#L + 1] = ""
  end
  return table.concat(L, "\n")
end

return M

-- rollout.report.model: a rollout's events turned into what the reports show — stages with
-- their weights and gates, the evaluations (signals per version over time), triggers,
-- decisions, and one sentence of why it ended as it did, with the numbers behind it.
-- Error policy: analyze() never raises on odd events (a journal is evidence, not input to
-- validate); it raises only on programming errors.
local output = require("rollout.output")
local datetime = require("rollout.datetime")
local journal = require("rollout.journal")

local M = {}

local fmt_value, clock = output.value, output.clock
M.TERMINAL = journal.TERMINAL

local iso = datetime.iso8601

-- A count as text: whole numbers as they are, an estimate (Prometheus' increase() gives
-- 53.75 requests) to one decimal; never an error, whatever the source put there.
local function count(n)
  if type(n) ~= "number" then return n == nil and "–" or tostring(n) end
  if n ~= n or n == math.huge or n == -math.huge then return tostring(n) end
  if n == math.floor(n) and math.abs(n) < 2 ^ 53 then return string.format("%d", math.floor(n)) end
  return string.format("%.1f", n)
end
M.count = count
M.iso8601 = iso

M.parse_time = datetime.parse

--- The runbook's deployment id: <service>-canary-YYYYMMDD-HHMMSS of the UTC start, unless given.
M.deployment_id = datetime.deployment_id

local function new_model(run)
  return {
    path = run.path, stages = {}, stage_by_name = {}, weights = {}, series = {}, gates = {}, triggers = {},
    decisions = {}, preflight = {}, rollbacks = {}, notifications = { sent = 0, failed = {} },
    counts = { source_errors = 0, router_errors = 0, share_warnings = 0, hook_failures = 0, evaluations = 0 },
    hooks = {}, commands = {}, torn = run.torn and true or false, events = run.events, summary = run.summary,
  }
end

local function stage_of(m, name)
  return name and m.stage_by_name[name] or m.stages[#m.stages]
end

local A = {} -- per-event analysis

function A.rollout_started(m, ev)
  m.service, m.playbook, m.who = ev.service, ev.playbook, ev.who
  m.baseline, m.canary, m.stage_count = ev.baseline, ev.canary, ev.stages
  m.simulated = ev.simulate and true or false
  m.observe = ev.observe and true or false
  m.strategy = ev.strategy or "canary"
  m.started_ts = ev.ts and (ev.ts - (ev.t or 0)) or m.started_ts
  m.deployment_id_given = ev.deployment_id or m.deployment_id_given
  m.commit_time = ev.commit_time or m.commit_time
end
function A.rollout_resumed(m, ev)
  m.resumed = (m.resumed or 0) + 1
  m.started_ts = m.started_ts or (ev.ts and ev.ts - (ev.t or 0))
  m.decisions[#m.decisions + 1] = ev
end
function A.preflight_check(m, ev) m.preflight[#m.preflight + 1] = ev end
function A.stage_entered(m, ev)
  local st = m.stage_by_name[ev.stage]
  if not st then
    st = { name = ev.stage, index = ev.index, weight = ev.weight, hold = ev.hold, gates = {} }
    m.stages[#m.stages + 1] = st
    m.stage_by_name[ev.stage] = st
  end
  st.t_enter = st.t_enter or ev.t
  m.decisions[#m.decisions + 1] = ev
end
A.stage_resumed = A.stage_entered
function A.weight_confirmed(m, ev)
  m.weights[#m.weights + 1] = { t = ev.t, canary = ev.canary, baseline = ev.baseline }
  local st = stage_of(m, ev.stage)
  if st and ev.canary == st.weight and not st.t_start then st.t_start = ev.t end
  if ev.canary and ev.canary > 0 then m.shifted = true end
end
function A.evaluation(m, ev)
  m.counts.evaluations = m.counts.evaluations + 1
  m.series[#m.series + 1] = { t = ev.t, baseline = ev.baseline or {}, canary = ev.canary or {}, weight = ev.weight }
end
function A.gate(m, ev)
  m.gates[#m.gates + 1] = ev
  local st = stage_of(m, ev.stage)
  if st then st.gates[#st.gates + 1] = ev; st.result = ev.result; st.t_gate = ev.t end
  if ev.result ~= "extend" then m.decisions[#m.decisions + 1] = ev end
end
local function trig(m, ev) m.triggers[#m.triggers + 1] = ev end
A.trigger_pending, A.trigger_resolved, A.trigger_reset = trig, trig, trig
function A.trigger_fired(m, ev) trig(m, ev); m.decisions[#m.decisions + 1] = ev end
function A.trigger_error(m, ev) trig(m, ev) end
function A.source_error(m) m.counts.source_errors = m.counts.source_errors + 1 end
function A.share_warning(m) m.counts.share_warnings = m.counts.share_warnings + 1 end
function A.weight_failed(m, ev) m.counts.router_errors = m.counts.router_errors + 1; m.decisions[#m.decisions + 1] = ev end
function A.rollback_attempt(m, ev) if not ev.ok then m.counts.router_errors = m.counts.router_errors + 1 end end
function A.hook_failed(m, ev)
  m.counts.hook_failures = m.counts.hook_failures + 1
  m.hooks[#m.hooks + 1] = ev
  m.decisions[#m.decisions + 1] = ev
end
function A.hook_finished(m, ev) m.hooks[#m.hooks + 1] = ev end
A.hook_cancelled = A.hook_failed
function A.rollback_started(m, ev)
  m.rollbacks[#m.rollbacks + 1] = { t = ev.t, ts = ev.ts, reason = ev.reason, detail = ev.detail, value = ev.value, stage = ev.stage }
  m.decisions[#m.decisions + 1] = ev
end
function A.rolled_back(m, ev)
  local rb = m.rollbacks[#m.rollbacks]
  if rb then rb.at = ev.at or ev.t; rb.restore = rb.at - rb.t end
  m.decisions[#m.decisions + 1] = ev
end
function A.rollback_unconfirmed(m, ev) m.decisions[#m.decisions + 1] = ev end
function A.command(m, ev) m.commands[#m.commands + 1] = ev; m.decisions[#m.decisions + 1] = ev end
local function decision(m, ev) m.decisions[#m.decisions + 1] = ev end
for _, k in ipairs({ "paused", "resumed", "promoting", "promote_full", "stage_skipped", "hold_extended", "preflight_done" }) do
  A[k] = decision
end
function A.notification_sent(m) m.notifications.sent = m.notifications.sent + 1 end
function A.notification_failed(m, ev) m.notifications.failed[#m.notifications.failed + 1] = ev end
function A.outcome(m, ev)
  m.outcome = { outcome = ev.outcome, reason = ev.reason, at = ev.at, t = ev.t, ts = ev.ts, stage = ev.stage }
  m.decisions[#m.decisions + 1] = ev
end

-- The canary's (and baseline's) signal that best stands for the rollout: the later of the
-- last gate and the last evaluation before the decision that ended it.
local function headline(m)
  local stop = (m.rollbacks[1] and m.rollbacks[1].t) or (m.outcome and m.outcome.t) or math.huge
  local pick
  for _, s in ipairs(m.series) do if s.t <= stop + 1e-9 and s.canary.requests and s.canary.requests > 0 then pick = s end end
  local g = m.gates[#m.gates]
  if g and g.canary and g.t <= stop + 1e-9 and (not pick or g.t >= pick.t) then
    pick = { t = g.t, canary = g.canary, baseline = g.baseline or {}, from = "gate " .. tostring(g.stage) }
  elseif pick then
    pick = { t = pick.t, canary = pick.canary, baseline = pick.baseline, from = "evaluation" }
  end
  return pick
end

local function check_text(c)
  if c.status == "not_measured" then return c.signal .. " not measured" end
  local op = c.dir == "max" and "≤" or "≥"
  if c.status == "fail" then op = c.dir == "max" and ">" or "<" end
  return string.format("%s %s %s %s", c.signal, fmt_value(c.signal, c.value), op, fmt_value(c.signal, c.threshold))
end
M.check_text = check_text

local function find_last(list, pred)
  for i = #list, 1, -1 do if pred(list[i]) then return list[i] end end
end

-- One or two sentences: why it ended as it did, with the numbers.
local function explain(m)
  local o = m.outcome
  if not o then
    return string.format("Unfinished: the record stops at %s%s (the rollout is still running, or its process died; "
      .. "`rollout run` resumes it).",
      clock(m.duration), m.last_stage and (" in stage " .. m.last_stage) or "")
  end
  local reason, at = o.reason or "", clock(o.at or o.t)
  local where = o.stage and string.format(" during %s", o.stage) or ""
  local st = o.stage and m.stage_by_name[o.stage]
  if st and st.weight then where = where .. string.format(" (canary at %s%%)", tostring(st.weight)) end
  if o.outcome == "promoted" then
    local passed = 0
    for _, s in ipairs(m.stages) do if s.result == "pass" then passed = passed + 1 end end
    return string.format("Promoted at %s: %d of %d stages passed their gates; %s now takes 100%% of traffic.",
      at, passed, m.stage_count or #m.stages, tostring(m.canary))
  end
  local text
  local name = reason:match("^trigger:(.*)$")
  local signal = reason:match("^gate:(.*)$")
  if name then
    local f = find_last(m.triggers, function(e) return e.event == "trigger_fired" and e.trigger == name end)
    local detail = ""
    if f then
      local sig = f.condition and f.condition:match("^%s*([%w_]+)") or name
      sig = ({ latency_p99 = "p99", latency_p95 = "p95", latency_p50 = "p50", health_score = "health" })[sig] or sig
      local v = type(f.value) == "number" and fmt_value(sig, f.value) or tostring(f.value)
      detail = string.format(": %s held for %s (value %s)", f.condition or ("trigger " .. name), clock(f.held or f["for"] or 0), v)
    end
    text = string.format("trigger %s fired%s", name, detail)
  elseif signal then
    local g = find_last(m.gates, function(e) return e.result == "fail" end)
    local chk
    for _, c in ipairs(g and g.checks or {}) do if c.signal == signal and c.status == "fail" then chk = c end end
    text = string.format("the %s gate failed on %s", g and g.stage or "stage", signal)
    if chk then
      text = text .. string.format(": canary %s (baseline %s) over %s", check_text(chk),
        fmt_value(signal, g.baseline and g.baseline[signal]), clock(g.window))
    end
  elseif reason:match("^inconclusive:") then
    local g = find_last(m.gates, function(e) return e.result == "inconclusive" end)
    text = "the analysis was inconclusive (" .. reason:gsub("^inconclusive:", "") .. ")"
    if g and g.samples then text = text .. string.format(": %s of %s canary requests", count(g.samples), count(g.min_samples or 0)) end
    if reason:find("source_errors", 1, true) then text = text .. string.format("; %d failed evaluations", m.counts.source_errors) end
  elseif reason == "manual" then
    local c = find_last(m.commands, function(e) return e.command == "abort" or e.command == "pause" end)
    text = c and string.format("%s by %s%s", c.command, tostring(c.who), c.arg and (" (" .. tostring(c.arg) .. ")") or "")
      or "by an operator"
  elseif reason:match("^preflight:") then
    local chk = find_last(m.preflight, function(e) return e.status == "fail" end)
    text = "pre-flight check " .. reason:gsub("^preflight:", "") .. " failed"
      .. (chk and chk.detail and (": " .. tostring(chk.detail)) or "")
  else
    text = reason ~= "" and reason or "no reason recorded"
    local rb = m.rollbacks[#m.rollbacks]
    if rb and rb.detail then text = text .. " (" .. tostring(rb.detail) .. ")" end
  end
  local verb = ({ rolled_back = "Rolled back", paused = "Paused", aborted = "Aborted", failed = "Failed" })[o.outcome] or o.outcome
  local s = string.format("%s at %s%s: %s.", verb, at, where, text)
  local rb = m.rollbacks[#m.rollbacks]
  if o.outcome == "rolled_back" and rb and rb.restore then
    s = s .. string.format(" Traffic was back on %s %s after the decision.", tostring(m.baseline), clock(rb.restore))
  elseif o.outcome == "aborted" and not m.shifted then
    s = s .. " No traffic had moved."
  elseif o.outcome == "paused" then
    s = s .. " Traffic stays where it was; a person decides (resume, promote or abort)."
  end
  return s
end

--- analyze(run) -> model
function M.analyze(run)
  local m = new_model(run)
  local last_t, last_ts = 0, nil
  for _, ev in ipairs(run.events) do
    local f = A[ev.event]
    if f then f(m, ev) end
    if type(ev.t) == "number" and ev.t > last_t then last_t = ev.t end
    last_ts = ev.ts or last_ts
    if ev.stage then m.last_stage = ev.stage end
    if ev.deployment_id and not m.deployment_id_given then m.deployment_id_given = ev.deployment_id end
    if ev.commit_time and not m.commit_time then m.commit_time = ev.commit_time end
  end
  if not m.outcome and run.summary and run.summary.outcome then
    local s = run.summary
    m.outcome = { outcome = s.outcome, reason = s.reason ~= json.null and s.reason or nil, at = s.at,
      stage = s.stage ~= json.null and s.stage or nil, t = s.at }
  end
  m.duration = math.max(last_t, m.outcome and (m.outcome.at or 0) or 0)
  m.ended_ts = m.started_ts and (m.started_ts + m.duration) or last_ts
  m.finished = m.outcome ~= nil and M.TERMINAL[m.outcome.outcome] or false
  m.deployment_id = M.deployment_id(m.service, m.started_ts, m.deployment_id_given)
  if not m.started_ts and not m.deployment_id_given then m.deployment_id = (m.service or "rollout") .. "-canary-simulated" end
  m.commit_ts = M.parse_time(m.commit_time)
  -- stage spans: from the weight's confirmation (or entry) to the next stage or the end
  for i, st in ipairs(m.stages) do
    st.t_start = st.t_start or st.t_enter
    local nxt = m.stages[i + 1]
    st.t_end = nxt and (nxt.t_start or nxt.t_enter) or (m.rollbacks[#m.rollbacks] and m.rollbacks[#m.rollbacks].t) or m.duration
  end
  m.headline = headline(m)
  m.why = explain(m)
  if m.observe then m.why = "Observe-only: no weight was changed and no hook ran; this is what the playbook would have decided. " .. m.why end
  return m
end

return M

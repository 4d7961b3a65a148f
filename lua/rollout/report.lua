-- rollout.report: read a rollout's record back and say what happened and why.
--
-- Input is a journal (rollout.journal: JSON lines, one engine event each) or a
-- `rollout simulate --json` capture (the same events, then a summary line). load() reads
-- either; analyze() turns the events into a model: stages with their weights and gates,
-- the evaluations (signals per version over time), triggers, decisions, and one sentence
-- of why it ended as it did, with the numbers behind it. Renderers:
--   html(model)      one self-contained page: inline SVG charts (canary vs baseline error
--                    rate and P99 over time, stage bands, weight steps, a marker for every
--                    gate, trigger and decision), the gate table (each value against its
--                    threshold), the decision timeline. No script, no external resource.
--   markdown(model)  an entry in the runbook's deployment-log format (Step 9)
--   json(model)      the model for pipelines
-- and dora(models) over many journals (rollout.report's DORA figures; see docs/observability.md).
--
-- Error policy: load() returns nil, err for a file that cannot be read or is not a
-- journal; renderers raise only on programming errors.
local json = require("rollout.json")
local output = require("rollout.output")

local M = {}

local fmt_value, clock = output.value, output.clock
M.TERMINAL = { promoted = true, rolled_back = true, aborted = true, failed = true }

-- ---- loading ---------------------------------------------------------------------------

--- parse(text, name) -> {events=, summary=, torn=} | nil, err
function M.parse(text, name)
  local events, summary, torn = {}, nil, nil
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  if text:sub(-1) ~= "\n" and #lines > 0 and lines[#lines] ~= "" then
    -- an unterminated last line is a write cut short (journal.lua): ignore it unless it parses
    local v = json.decode(lines[#lines])
    if type(v) ~= "table" then torn = lines[#lines]; lines[#lines] = nil end
  end
  for i, line in ipairs(lines) do
    if line:find("%S") then
      local v, err = json.decode(line)
      if type(v) ~= "table" then
        return nil, string.format("%s:%d: not a journal line (%s): %s", name or "journal", i, err or "not an object", line:sub(1, 80))
      end
      if type(v.event) == "string" then events[#events + 1] = v
      elseif v.outcome ~= nil then summary = v
      end
    end
  end
  if #events == 0 then return nil, (name or "journal") .. ": no events (not a journal or a `rollout simulate --json` capture)" end
  return { events = events, summary = summary, torn = torn }
end

--- load(path) -> run | nil, err
function M.load(path)
  local h, err = io.open(path, "rb")
  if not h then return nil, err end
  local text = h:read("a")
  h:close()
  local run, perr = M.parse(text, path)
  if not run then return nil, perr end
  run.path = path
  return run
end

-- ---- analysis --------------------------------------------------------------------------

local function iso(ts) return ts and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(ts)) or nil end

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

--- parse_time("2025-11-11T04:00:00Z" | "2025-11-11 04:00:00+02:00" | epoch) -> epoch | nil
function M.parse_time(s)
  if type(s) == "number" then return s end
  if type(s) ~= "string" then return nil end
  if s:match("^%d+%.?%d*$") then return tonumber(s) end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):?(%d*%.?%d*)(.*)$")
  if not y then
    y, mo, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
    if not y then return nil end
    h, mi, sec, rest = 0, 0, "0", "Z"
  end
  -- days since the epoch for a UTC civil date (Howard Hinnant's algorithm): no TZ games
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  local yy = mo <= 2 and y - 1 or y
  local era = (yy >= 0 and yy or yy - 399) // 400
  local yoe = yy - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  local t = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + (tonumber(sec) or 0)
  rest = rest or ""
  local sign, oh, om = rest:match("^%s*([%+%-])(%d%d):?(%d%d)$")
  if sign then
    local off = tonumber(oh) * 3600 + tonumber(om) * 60
    t = sign == "+" and t - off or t + off
  elseif rest ~= "" and rest ~= "Z" and not rest:match("^%s*UTC$") then
    return nil
  end
  return t
end

--- The runbook's deployment id: <service>-canary-YYYYMMDD-HHMMSS of the UTC start, unless given.
function M.deployment_id(service, ts, explicit)
  return require("rollout.notify").deployment_id(service, ts, explicit)
end

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

-- ---- JSON --------------------------------------------------------------------------------

local function null(v) if v == nil then return json.null end return v end

--- json(model) -> a table for json.encode (pipelines)
function M.json(m)
  local stages = {}
  for _, st in ipairs(m.stages) do
    local last = st.gates[#st.gates]
    stages[#stages + 1] = { name = st.name, index = st.index, weight = st.weight, hold = st.hold, started = null(st.t_start),
      ended = null(st.t_end), result = null(st.result), gate_evaluations = #st.gates,
      checks = last and last.checks or json.array({}), samples = null(last and last.samples),
      min_samples = null(last and last.min_samples) }
  end
  local gates = {}
  for _, g in ipairs(m.gates) do
    gates[#gates + 1] = { t = g.t, stage = g.stage, result = g.result, why = null(g.why), window = null(g.window),
      samples = null(g.samples), min_samples = null(g.min_samples), total_rps = null(g.total_rps), min_rps = null(g.min_rps),
      checks = g.checks or json.array({}), canary = null(g.canary), baseline = null(g.baseline) }
  end
  local triggers = {}
  for _, e in ipairs(m.triggers) do
    triggers[#triggers + 1] = { t = e.t, event = e.event, trigger = e.trigger, value = null(e.value), condition = null(e.condition),
      ["for"] = null(e["for"]), held = null(e.held), why = null(e.why) }
  end
  local rollbacks = {}
  for _, r in ipairs(m.rollbacks) do
    rollbacks[#rollbacks + 1] = { t = r.t, reason = r.reason, detail = null(r.detail), value = null(r.value), stage = null(r.stage),
      confirmed_at = null(r.at), restore_seconds = null(r.restore) }
  end
  local decisions = {}
  for _, d in ipairs(m.decisions) do
    decisions[#decisions + 1] = { t = d.t, event = d.event, stage = null(d.stage), text = output.line(d) or d.event }
  end
  local h = m.headline
  return {
    format = "rollout-report/1", source = null(m.path), service = null(m.service), deployment_id = m.deployment_id,
    playbook = null(m.playbook), baseline = null(m.baseline), canary = null(m.canary), started_by = null(m.who),
    started_at = null(iso(m.started_ts)), ended_at = null(iso(m.ended_ts)), duration_seconds = m.duration,
    simulated = m.simulated, observe = m.observe or false, strategy = m.strategy or "canary", finished = m.finished, commit_time = null(m.commit_time),
    lead_time_seconds = null((m.commit_ts and m.outcome and m.outcome.outcome == "promoted" and m.ended_ts)
      and (m.ended_ts - m.commit_ts) or nil),
    outcome = m.outcome and m.outcome.outcome or "unfinished", reason = null(m.outcome and m.outcome.reason),
    at = null(m.outcome and m.outcome.at), why = m.why,
    headline = h and { from = h.from, t = h.t, canary = h.canary, baseline = h.baseline } or json.null,
    stages = json.array(stages), gates = json.array(gates), triggers = json.array(triggers),
    rollbacks = json.array(rollbacks), decisions = json.array(decisions), counts = m.counts,
    notifications = { sent = m.notifications.sent, failed = #m.notifications.failed },
    preflight = json.array((function()
      local out = {}
      for _, p in ipairs(m.preflight) do out[#out + 1] = { check = p.check, status = p.status, detail = null(p.detail) } end
      return out
    end)()),
  }
end

-- ---- Markdown (the runbook's Step 9) --------------------------------------------------------

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

-- ---- HTML ----------------------------------------------------------------------------------

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end
M.escape = esc

local function n2(v) return string.format("%.1f", v) end

local function nice_step(range, ticks)
  local raw = range / ticks
  local mag = 10 ^ math.floor(math.log(raw, 10))
  for _, k in ipairs({ 1, 2, 2.5, 5, 10 }) do if raw <= k * mag then return k * mag end end
  return 10 * mag
end

local TIME_STEPS = { 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400 }

local COLORS = { baseline = "#1f77b4", canary = "#e4572e", weight = "#7b61c4", threshold = "#b71c1c",
  pass = "#2e7d32", fail = "#c62828", extend = "#9e9e9e", inconclusive = "#f9a825",
  pending = "#f9a825", fired = "#c62828", resolved = "#2e7d32", reset = "#757575" }

local DECISION_STYLE = {
  rollback_started = { COLORS.fail, "", "rollback" }, paused = { "#f9a825", "5,3", "paused" },
  resumed = { "#1565c0", "5,3", "resumed" }, promoting = { COLORS.pass, "5,3", "promote" },
  command = { "#6d4c41", "2,3", "command" }, weight_failed = { COLORS.fail, "2,2", "router error" },
  hook_failed = { COLORS.fail, "2,2", "hook failed" }, outcome = { "#212121", "", "outcome" },
}

-- One chart: canary vs baseline `signal` over time, stage bands, weight steps, thresholds,
-- gate markers, trigger markers, decision lines. Returns an <svg> string.
local function chart(m, signal, title, id)
  local W, H, L, R, T, B = 1100, 300, 72, 60, 34, 40
  local pw, ph = W - L - R, H - T - B
  local tmax = math.max(m.duration, 1)
  local function x(t) return L + (math.max(0, math.min(t, tmax)) / tmax) * pw end
  local vmax = 0
  for _, s in ipairs(m.series) do
    for _, v in ipairs({ s.baseline[signal], s.canary[signal] }) do if type(v) == "number" and v > vmax then vmax = v end end
  end
  for _, g in ipairs(m.gates) do
    for _, c in ipairs(g.checks or {}) do
      if c.signal == signal then
        for _, v in ipairs({ c.threshold, c.value }) do if type(v) == "number" and v > vmax then vmax = v end end
      end
    end
  end
  if vmax <= 0 then vmax = signal == "error_rate" and 0.01 or 0.1 end
  local ystep = nice_step(vmax * 1.1, 5)
  local ymax = math.ceil(vmax * 1.1 / ystep) * ystep
  local function y(v) return T + ph - (v / ymax) * ph end
  local function yw(w) return T + ph - (w / 100) * ph end
  local o = {}
  local function add(s, ...) o[#o + 1] = select("#", ...) > 0 and string.format(s, ...) or s end
  add('<svg xmlns="http://www.w3.org/2000/svg" id="%s" class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img"'
    .. ' aria-labelledby="%s-title">',
    id, W, H, W, H, id)
  add('<title id="%s-title">%s</title>', id, esc(title))
  add('<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>', W, H)
  -- stage bands
  for i, st in ipairs(m.stages) do
    local x0, x1 = x(st.t_start or 0), x(st.t_end or tmax)
    add('<rect class="stage-band" x="%s" y="%d" width="%s" height="%d" fill="%s"><title>%s</title></rect>', n2(x0), T,
      n2(math.max(0.5, x1 - x0)), ph, i % 2 == 1 and "#eef2f8" or "#f8f9fb",
      esc(string.format("stage %s: %s%% from %s to %s", st.name, tostring(st.weight), clock(st.t_start), clock(st.t_end))))
    add('<line class="stage-boundary" x1="%s" y1="%d" x2="%s" y2="%d" stroke="#90a4ae" stroke-dasharray="3,3"/>', n2(x0), T, n2(x0), T + ph)
    add('<text x="%s" y="%d" font-size="11" fill="#455a64">%s %s%%</text>', n2(x0 + 3), T - 6, esc(st.name), tostring(st.weight))
  end
  -- grid and axes
  local v = 0
  while v <= ymax + ystep / 2 do
    add('<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="#e0e0e0"/>', L, n2(y(v)), L + pw, n2(y(v)))
    add('<text x="%d" y="%s" font-size="11" text-anchor="end" fill="#555">%s</text>', L - 6, n2(y(v) + 4), esc(fmt_value(signal, v)))
    v = v + ystep
  end
  local tstep = TIME_STEPS[#TIME_STEPS]
  for _, s in ipairs(TIME_STEPS) do if tmax / s <= 10 then tstep = s; break end end
  local t = 0
  while t <= tmax + 1e-9 do
    add('<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="#bbb"/>', n2(x(t)), T + ph, n2(x(t)), T + ph + 4)
    add('<text x="%s" y="%d" font-size="11" text-anchor="middle" fill="#555">%s</text>', n2(x(t)), T + ph + 16, esc(clock(t)))
    t = t + tstep
  end
  add('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#9e9e9e"/>', L, T, pw, ph)
  for _, w in ipairs({ 0, 50, 100 }) do
    add('<text x="%d" y="%s" font-size="11" fill="%s">%d%%</text>', L + pw + 6, n2(yw(w) + 4), COLORS.weight, w)
  end
  add('<text x="%d" y="%d" font-size="11" fill="#555" text-anchor="middle">time since start</text>', L + pw // 2, H - 4)
  -- weight steps (right axis)
  if #m.weights > 0 then
    local d = { string.format("M%s %s", n2(x(0)), n2(yw(0))) }
    local last = 0
    for _, w in ipairs(m.weights) do
      d[#d + 1] = string.format("H%s V%s", n2(x(w.t)), n2(yw(w.canary or last)))
      last = w.canary or last
    end
    d[#d + 1] = string.format("H%s", n2(x(tmax)))
    add('<path class="weight" d="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-opacity="0.75">'
      .. '<title>canary weight (right axis)</title></path>',
      table.concat(d, " "), COLORS.weight)
  end
  -- gate thresholds over each stage
  for _, g in ipairs(m.gates) do
    local st = m.stage_by_name[g.stage]
    for _, c in ipairs(g.checks or {}) do
      if c.signal == signal and type(c.threshold) == "number" then
        local x0 = st and x(st.t_start or 0) or x(g.t - (g.window or 0))
        add('<line class="threshold" x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.2" stroke-dasharray="6,4">'
          .. '<title>%s</title></line>',
          n2(x0), n2(y(c.threshold)), n2(x(g.t)), n2(y(c.threshold)), COLORS.threshold,
          esc(string.format("%s gate threshold: %s %s", tostring(g.stage), c.dir == "max" and "≤" or "≥",
            fmt_value(signal, c.threshold))))
      end
    end
  end
  -- the two series (a gap where a version had no data)
  for _, ver in ipairs({ "baseline", "canary" }) do
    local segs, cur = {}, nil
    for _, s in ipairs(m.series) do
      local val = s[ver][signal]
      if type(val) == "number" then
        cur = cur or {}
        cur[#cur + 1] = n2(x(s.t)) .. "," .. n2(y(val))
      elseif cur then segs[#segs + 1] = cur; cur = nil end
    end
    if cur then segs[#segs + 1] = cur end
    for _, sg in ipairs(segs) do
      if #sg == 1 then
        local cx, cy = sg[1]:match("([^,]+),(.+)")
        add('<circle class="series-%s" cx="%s" cy="%s" r="1.8" fill="%s"/>', ver, cx, cy, COLORS[ver])
      else
        add('<polyline class="series-%s" points="%s" fill="none" stroke="%s" stroke-width="1.6" stroke-linejoin="round">'
          .. '<title>%s %s</title></polyline>',
          ver, table.concat(sg, " "), COLORS[ver], ver, esc(signal))
      end
    end
  end
  -- decision lines (a label only where it does not sit on the previous one)
  local last_label = -math.huge
  for _, d in ipairs(m.decisions) do
    local style = DECISION_STYLE[d.event]
    if style then
      add('<line class="decision decision-%s" x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" stroke-width="1.4"%s><title>%s</title></line>',
        d.event, n2(x(d.t)), T, n2(x(d.t)), T + ph, style[1], style[2] ~= "" and (' stroke-dasharray="' .. style[2] .. '"') or "",
        esc(clock(d.t) .. "  " .. (output.line(d) or d.event)))
      if x(d.t) - last_label >= 12 then
        last_label = x(d.t)
        add('<text x="%s" y="%d" font-size="10" fill="%s" transform="rotate(-90 %s %d)" text-anchor="end">%s</text>',
          n2(x(d.t) - 3), T + 4, style[1], n2(x(d.t) - 3), T + 4, esc(style[3]))
      end
    end
  end
  -- gate markers at the canary's value (or on the axis when it had none)
  for _, g in ipairs(m.gates) do
    local val
    for _, c in ipairs(g.checks or {}) do if c.signal == signal then val = c.value end end
    if val == nil and g.canary then val = g.canary[signal] end
    local parts = {}
    for _, c in ipairs(g.checks or {}) do parts[#parts + 1] = check_text(c) .. " (" .. tostring(c.status) .. ")" end
    add('<circle class="marker gate gate-%s" cx="%s" cy="%s" r="5" fill="%s" stroke="#fff" stroke-width="1.5"><title>%s</title></circle>',
      esc(g.result), n2(x(g.t)), n2(type(val) == "number" and y(val) or (T + ph)), COLORS[g.result] or "#555",
      esc(string.format("%s gate %s: %s%s\n%s", clock(g.t), tostring(g.stage), tostring(g.result), g.why and (" (" .. g.why .. ")") or "",
        table.concat(parts, "\n"))))
  end
  -- trigger markers along the top edge
  for _, e in ipairs(m.triggers) do
    local kind = e.event:gsub("^trigger_", "")
    local color = COLORS[kind] or "#757575"
    local cx = x(e.t)
    local size = kind == "fired" and 7 or 5
    add('<path class="marker trigger trigger-%s" d="M%s %s L%s %s L%s %s Z" fill="%s"><title>%s</title></path>', esc(kind),
      n2(cx - size), n2(T + 2), n2(cx + size), n2(T + 2), n2(cx), n2(T + 2 + size * 1.4), color,
      esc(clock(e.t) .. "  " .. (output.line(e) or (e.event .. " " .. tostring(e.trigger)))))
  end
  add("</svg>")
  return table.concat(o, "\n")
end
M.chart = chart

local CSS = [[
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#212121;margin:24px auto;
max-width:1140px;padding:0 16px;line-height:1.45}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e0e0e0;padding-bottom:4px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;font-size:14px;vertical-align:middle}
.promoted{background:#2e7d32}.rolled_back,.failed,.aborted{background:#c62828}.paused,.unfinished{background:#f9a825;color:#212121}
.why{font-size:16px;background:#f5f7fa;border-left:4px solid #607d8b;padding:10px 14px;margin:12px 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0} dl.facts dt{color:#616161} dl.facts dd{margin:0}
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td.status,td.status.fail{color:#c62828;font-weight:600} td.status.pass{color:#2e7d32}
td.status.nodata,td.status.extend,td.status.inconclusive{color:#a07000}
.legend{font-size:12px;color:#424242;margin:4px 0 0} .legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
.chart{max-width:100%;height:auto;border:1px solid #eceff1;background:#fff}
footer{margin-top:32px;color:#757575;font-size:12px}
]]

local function legend()
  local items = {
    { COLORS.baseline, "baseline" }, { COLORS.canary, "canary" }, { COLORS.weight, "canary weight (right axis)" },
    { COLORS.threshold, "gate threshold" }, { COLORS.pass, "gate pass ●" }, { COLORS.fail, "gate fail ● / rollback" },
    { COLORS.inconclusive, "trigger pending ▼ / pause" }, { COLORS.fired, "trigger fired ▼" },
  }
  local o = { '<p class="legend">' }
  for _, it in ipairs(items) do o[#o + 1] = string.format('<span><i class="sw" style="background:%s"></i>%s</span>', it[1], esc(it[2])) end
  o[#o + 1] = "</p>"
  return table.concat(o)
end

local function gate_table(m)
  local o = { '<table class="gates"><thead><tr><th>time</th><th>stage</th><th>result</th><th>signal</th><th>canary</th>'
    .. '<th>threshold</th><th>baseline</th><th>status</th><th>samples</th></tr></thead><tbody>' }
  for _, g in ipairs(m.gates) do
    local checks = g.checks or {}
    local n = math.max(1, #checks)
    for i = 1, n do
      local c = checks[i]
      local row = { string.format('<tr class="%s">', esc(c and c.status or g.result)) }
      if i == 1 then
        local samples = g.samples and string.format("%s / %s", count(g.samples), count(g.min_samples or 0)) or "–"
        if g.total_rps then samples = samples .. string.format("<br>%.1f / %.0f req/s", g.total_rps, g.min_rps or 0) end
        row[#row + 1] = string.format('<td rowspan="%d">%s</td><td rowspan="%d">%s</td><td rowspan="%d" class="status %s">%s%s</td>',
          n, esc(clock(g.t)), n, esc(g.stage), n, esc(g.result), esc(g.result), g.why and ("<br><small>" .. esc(g.why) .. "</small>") or "")
        row.samples = string.format('<td rowspan="%d" class="num">%s</td>', n, samples)
      end
      if c and c.status == "not_measured" then
        row[#row + 1] = string.format('<td>%s</td><td colspan="3">not measured by any source</td>'
          .. '<td class="status not_measured">not measured</td>',
          esc(c.signal))
      elseif c then
        local op = c.dir == "max" and "≤ " or "≥ "
        row[#row + 1] = string.format('<td>%s</td><td class="num">%s</td><td class="num">%s%s</td><td class="num">%s</td>'
          .. '<td class="status %s">%s</td>',
          esc(c.signal), esc(fmt_value(c.signal, c.value)), op, esc(fmt_value(c.signal, c.threshold)),
          esc(fmt_value(c.signal, g.baseline and g.baseline[c.signal])), esc(c.status), esc(c.status))
      else
        row[#row + 1] = '<td colspan="5">' .. esc(g.error or "no checks") .. "</td>"
      end
      if row.samples then row[#row + 1] = row.samples end
      row[#row + 1] = "</tr>"
      o[#o + 1] = table.concat(row)
    end
  end
  if #m.gates == 0 then o[#o + 1] = '<tr><td colspan="9">no gate was evaluated</td></tr>' end
  o[#o + 1] = "</tbody></table>"
  return table.concat(o, "\n")
end

local function timeline(m)
  local o = { '<table class="timeline"><thead><tr><th>time</th><th>event</th><th>stage</th><th>what happened</th></tr></thead><tbody>' }
  local shown = {}
  for _, d in ipairs(m.decisions) do shown[d] = true end
  for _, e in ipairs(m.triggers) do shown[e] = true end
  for _, e in ipairs(m.notifications.failed) do shown[e] = true end
  for _, ev in ipairs(m.events) do
    if shown[ev] then
      o[#o + 1] = string.format('<tr class="ev-%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>', esc(ev.event), esc(clock(ev.t)),
        esc(ev.event), esc(ev.stage or ""), esc(output.line(ev) or (ev.event == "notification_failed"
          and string.format("notification %s for %s failed after %s attempts: %s", tostring(ev.notifier), tostring(ev["for"]),
            tostring(ev.attempts), tostring(ev.error)) or ev.event)))
    end
  end
  o[#o + 1] = "</tbody></table>"
  return table.concat(o, "\n")
end

--- html(model) -> a self-contained HTML page
function M.html(m)
  local o = m.outcome and m.outcome.outcome or "unfinished"
  local facts = {
    { "deployment", m.deployment_id }, { "service", m.service },
    { "versions", string.format("%s → %s", tostring(m.baseline), tostring(m.canary)) },
    { "started", m.started_ts and (iso(m.started_ts) .. (m.who and (" by " .. m.who) or "")) or "simulation (virtual time)" },
    { "duration", clock(m.duration) }, { "outcome", o .. (m.outcome and m.outcome.reason and (" (" .. m.outcome.reason .. ")") or "") },
    { "playbook", m.playbook or "?" }, { "record", m.path or "?" },
  }
  if m.commit_time then facts[#facts + 1] = { "commit time", m.commit_time } end
  local P = {
    "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>" .. esc(string.format("rollout %s: %s", tostring(m.service), o)) .. "</title>",
    "<style>" .. CSS .. "</style></head><body>",
    string.format('<h1>%s <span class="badge %s">%s</span></h1>',
      esc(tostring(m.service) .. " " .. tostring(m.baseline) .. " → " .. tostring(m.canary)), esc(o), esc((o:gsub("_", " ")))),
    '<p class="why" id="why">' .. esc(m.why) .. "</p>",
    '<dl class="facts">',
  }
  for _, f in ipairs(facts) do P[#P + 1] = string.format("<dt>%s</dt><dd>%s</dd>", esc(f[1]), esc(f[2])) end
  P[#P + 1] = "</dl>"
  P[#P + 1] = "<h2>Error rate: canary vs baseline</h2>"
  local what = "over time, canary vs baseline, with stage boundaries, weight steps, gates, triggers and decisions"
  P[#P + 1] = chart(m, "error_rate", "error rate " .. what, "chart-error-rate")
  P[#P + 1] = legend()
  P[#P + 1] = "<h2>Latency P99: canary vs baseline</h2>"
  P[#P + 1] = chart(m, "p99", "P99 latency " .. what, "chart-p99")
  P[#P + 1] = legend()
  P[#P + 1] = "<h2>Gates: each value against its threshold</h2>"
  P[#P + 1] = gate_table(m)
  P[#P + 1] = "<h2>Decisions, triggers and notifications</h2>"
  P[#P + 1] = timeline(m)
  if #m.preflight > 0 then
    P[#P + 1] = "<h2>Pre-flight checks</h2>"
    P[#P + 1] = '<table class="preflight"><thead><tr><th>check</th><th>status</th><th>detail</th></tr></thead><tbody>'
    for _, p in ipairs(m.preflight) do
      P[#P + 1] = string.format('<tr><td>%s</td><td class="status %s">%s</td><td>%s</td></tr>', esc(p.check), esc(p.status),
        esc(p.status), esc(p.detail or ""))
    end
    P[#P + 1] = "</tbody></table>"
  end
  local c = m.counts
  P[#P + 1] = string.format("<footer>%d evaluations, %d failed evaluations, %d router errors, %d notifications sent, %d not delivered%s. "
    .. "Generated by rollout %s from %s.</footer>", c.evaluations, c.source_errors, c.router_errors, m.notifications.sent,
    #m.notifications.failed, m.torn and "; the record ends in a torn line (ignored)" or "", esc(require("rollout").version),
    esc(m.path or "?"))
  P[#P + 1] = "</body></html>\n"
  return table.concat(P, "\n")
end

-- ---- DORA -----------------------------------------------------------------------------------

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
      M.human_duration(f.period_seconds), f.per_day, f.per_week)
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
    M.human_duration(l.median), M.human_duration(l.min), M.human_duration(l.max), l.count) or
    "  lead time for changes  n/a (no promoted rollout recorded a commit_time)"
  L[#L + 1] = string.format("  outcomes               %d promoted, %d rolled back, %d failed, %d aborted, %d unfinished",
    d.promoted, d.rolled_back, d.failed, d.aborted, d.unfinished)
  for _, s2 in ipairs(d.skipped) do L[#L + 1] = "  skipped: " .. s2 end
  return table.concat(L, "\n") .. "\n"
end

return M

-- rollout.metrics_endpoint: what a running rollout looks like to Prometheus.
--
-- Two halves. A collector is an engine event sink: it keeps the last value of everything a
-- dashboard needs (phase, stage, weights, signals as measured, each gate's value against
-- its threshold, trigger states) and counts decisions and errors. A tiny HTTP/1.1 server on
-- net.listen_tcp serves it as Prometheus text format 0.0.4 on /metrics. Names follow
-- Argo Rollouts (`rollout_info`, `rollout_phase`) and Flagger (`flagger_canary_status`,
-- `flagger_canary_weight`); docs/observability.md lists every series.
--
--   local me = require("rollout.metrics_endpoint")
--   local ep = assert(me.start("127.0.0.1:9464"))          -- or ":9464" for all interfaces
--   local emit = me.chain(printer, ep.emit)                  -- engine env.emit
--   local e = engine.new(pb, { ..., emit = emit }); ep:bind(e)
--   ...; ep:linger(M.LINGER); ep:close()       -- after the outcome: one more scrape
--
-- Series with no data are absent, never 0 (docs/semantics.md: no data is never 0).
-- Error policy: a bad address raises; a port that cannot be bound returns nil, err. The
-- sink never raises into the engine: a bug here is printed once to stderr and ignored.
local rollout = require("rollout")
local net = require("rollout.net")

local M = {}
local C = {}
C.__index = C

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
-- Seconds /metrics stays up after the outcome (`rollout run --metrics-linger`): one
-- Prometheus scrape interval, so the outcome is scraped before the endpoint goes.
M.LINGER = 15
M.PHASES = { "pending", "preflight", "deploy", "progressing", "paused", "rolling_back", "promoting",
  "promoted", "rolled_back", "aborted", "failed" }
M.TRIGGER_STATES = { "inactive", "ok", "pending", "firing", "nodata" }
M.SIGNALS = { "requests", "rps", "error_rate", "p50", "p95", "p99", "health", "cpu", "memory", "disk", "restarts" }

-- engine state -> phase label
local PHASE_OF = { stage = "progressing", rolling_back = "rolling_back" }
-- Flagger's flagger_canary_status: 0 running, 1 succeeded, 2 failed; 3 waits for a person.
local STATUS_OF = { promoted = 1, rolled_back = 2, aborted = 2, failed = 2, paused = 3 }

--- new{service=} -> collector. collector:observe(ev, engine) is the sink.
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    service = opts.service, phase = "pending", weights = {}, signals = { baseline = {}, canary = {} },
    gates = {}, gate_order = {}, gate_meta = {}, triggers = {}, trigger_order = {},
    counters = {}, counter_order = {}, evaluations = 0, consecutive_errors = 0,
  }, C)
end

function C:bind(engine)
  self.engine = engine
  local pb = engine.pb
  self.service = self.service or pb.service
  self.info = self.info or { service = pb.service, playbook = pb.file or "", baseline = pb.versions.baseline.version or "",
    canary = pb.versions.canary.version or "", deployment_id = pb.deployment_id or "" }
  self.stages = #pb.stages
  for _, tr in ipairs(pb.triggers) do self:trigger(tr.name) end
  return self
end

local function key_of(labels)
  local parts = {}
  for i = 1, #labels, 2 do parts[#parts + 1] = labels[i] .. "=" .. tostring(labels[i + 1]) end
  return table.concat(parts, ",")
end

-- counters: name -> {key -> {labels, value}}, in first-seen order
function C:inc(name, labels, by)
  local c = self.counters[name]
  if not c then
    c = { order = {}, series = {} }
    self.counters[name] = c
    self.counter_order[#self.counter_order + 1] = name
  end
  local k = key_of(labels)
  local s = c.series[k]
  if not s then
    s = { labels = labels, value = 0 }
    c.series[k] = s
    c.order[#c.order + 1] = k
  end
  s.value = s.value + (by or 1)
end

function C:counter(name, labels)
  local c = self.counters[name]
  local s = c and c.series[key_of(labels)]
  return s and s.value or 0
end

function C:trigger(name)
  local t = self.triggers[name]
  if not t then
    t = { state = "inactive" }
    self.triggers[name] = t
    self.trigger_order[#self.trigger_order + 1] = name
  end
  return t
end

function C:gate_check(stage, signal)
  local g = self.gates[stage]
  if not g then
    g = { order = {}, by = {} }
    self.gates[stage] = g
    self.gate_order[#self.gate_order + 1] = stage
  end
  local c = g.by[signal]
  if not c then
    c = {}
    g.by[signal] = c
    g.order[#g.order + 1] = signal
  end
  return c
end

local function copy_signals(dst, src)
  for k in pairs(dst) do dst[k] = nil end
  for k, v in pairs(src or {}) do if type(v) == "number" then dst[k] = v end end
end

-- ---- the sink ------------------------------------------------------------------------------

local OBSERVE = {}

function OBSERVE.rollout_started(self, ev)
  self.service = self.service or ev.service
  self.info = self.info or { service = ev.service or "", playbook = ev.playbook or "", baseline = ev.baseline or "",
    canary = ev.canary or "", deployment_id = ev.deployment_id or "" }
  self.stages = self.stages or ev.stages
  self.started_ts = ev.ts
  self.phase = "preflight"
end
function OBSERVE.rollout_resumed(self, ev) self.started_ts = self.started_ts or (ev.ts and ev.ts - ev.t) end
function OBSERVE.preflight_done(self) self.phase = "deploy" end
function OBSERVE.stage_entered(self, ev)
  self.phase, self.stage, self.stage_index = "progressing", ev.stage, ev.index
  self.stage_hold = ev.hold
end
OBSERVE.stage_resumed = OBSERVE.stage_entered
function OBSERVE.weight_confirmed(self, ev) self.weights = { baseline = ev.baseline, canary = ev.canary } end
function OBSERVE.weight_requested(self, ev) self.requested = { baseline = ev.baseline, canary = ev.canary } end
function OBSERVE.evaluation(self, ev)
  self.evaluations = self.evaluations + 1
  self.consecutive_errors = 0
  self.last_evaluation_ts = ev.ts
  copy_signals(self.signals.baseline, ev.baseline)
  copy_signals(self.signals.canary, ev.canary)
end
function OBSERVE.source_error(self, ev)
  self.consecutive_errors = ev.consecutive or (self.consecutive_errors + 1)
  for _, t in pairs(self.triggers) do t.state = "nodata" end -- a source error resets every trigger
  self:inc("rollout_source_errors_total", { "service", self.service })
end
function OBSERVE.gate(self, ev)
  local stage = ev.stage or "?"
  self.gate_meta[stage] = { samples = ev.samples, min_samples = ev.min_samples, result = ev.result }
  for _, chk in ipairs(ev.checks or {}) do
    if chk.status ~= "not_measured" then
      local c = self:gate_check(stage, chk.signal)
      c.value, c.threshold, c.dir, c.status = chk.value, chk.threshold, chk.dir, chk.status
    end
  end
  self:inc("rollout_gate_evaluations_total", { "service", self.service, "stage", stage, "result", ev.result or "?" })
  if ev.result == "pass" then self:inc("rollout_decisions_total", { "service", self.service, "decision", "advance" })
  elseif ev.result == "extend" then self:inc("rollout_decisions_total", { "service", self.service, "decision", "extend" }) end
end
function OBSERVE.trigger_pending(self, ev) local t = self:trigger(ev.trigger); t.state, t.value = "pending", ev.value end
function OBSERVE.trigger_fired(self, ev)
  local t = self:trigger(ev.trigger)
  t.state, t.value = "firing", ev.value
  self:inc("rollout_trigger_fired_total", { "service", self.service, "trigger", ev.trigger })
end
function OBSERVE.trigger_resolved(self, ev) local t = self:trigger(ev.trigger); t.state, t.value = "ok", ev.value end
function OBSERVE.trigger_reset(self, ev)
  self:trigger(ev.trigger).state = (ev.why == "no data" or ev.why == "source error") and "nodata" or "inactive"
end
function OBSERVE.weight_failed(self)
  self:inc("rollout_router_errors_total", { "service", self.service, "operation", "shift" })
end
function OBSERVE.rollback_attempt(self, ev)
  if not ev.ok then self:inc("rollout_router_errors_total", { "service", self.service, "operation", "rollback" }) end
end
function OBSERVE.header_override(self, ev)
  if ev.ok == false then self:inc("rollout_router_errors_total", { "service", self.service, "operation", "header_override" }) end
end
function OBSERVE.rollback_started(self, ev)
  self.phase = "rolling_back"
  self:inc("rollout_decisions_total", { "service", self.service, "decision", "rollback" })
  self:inc("rollout_rollbacks_total", { "service", self.service, "reason", tostring(ev.reason) })
end
function OBSERVE.paused(self, ev)
  self.phase = "paused"
  self:inc("rollout_decisions_total", { "service", self.service, "decision", "pause" })
  self.pause_reason = ev.reason
end
function OBSERVE.resumed(self)
  self.phase = "progressing"
  self:inc("rollout_decisions_total", { "service", self.service, "decision", "resume" })
end
function OBSERVE.stage_skipped(self) self:inc("rollout_decisions_total", { "service", self.service, "decision", "skip_stage" }) end
function OBSERVE.promote_full(self) self:inc("rollout_decisions_total", { "service", self.service, "decision", "promote_full" }) end
function OBSERVE.promoting(self)
  self.phase = "promoting"
  self:inc("rollout_decisions_total", { "service", self.service, "decision", "promote" })
end
function OBSERVE.hook_failed(self, ev) self:inc("rollout_hook_failures_total", { "service", self.service, "hook", tostring(ev.hook) }) end
function OBSERVE.share_warning(self) self:inc("rollout_share_warnings_total", { "service", self.service }) end
function OBSERVE.command(self, ev) self:inc("rollout_commands_total", { "service", self.service, "command", tostring(ev.command) }) end
function OBSERVE.notification_sent(self, ev)
  self:inc("rollout_notifications_total", { "service", self.service, "notifier", tostring(ev.notifier), "result", "sent" })
end
function OBSERVE.notification_failed(self, ev)
  self:inc("rollout_notifications_total", { "service", self.service, "notifier", tostring(ev.notifier), "result", "failed" })
end
function OBSERVE.outcome(self, ev)
  self.phase = ev.outcome
  self.outcome = { outcome = ev.outcome, reason = ev.reason }
  self.finished_t = ev.t
  if ev.outcome == "aborted" then self:inc("rollout_decisions_total", { "service", self.service, "decision", "abort" }) end
end

--- observe(ev, engine): the engine sink. Never raises.
function C:observe(ev, engine)
  if engine and not self.engine then self:bind(engine) end
  local f = OBSERVE[ev.event]
  self.last_t, self.last_ts = ev.t, ev.ts or self.last_ts
  if f then
    local ok, err = pcall(f, self, ev)
    if not ok and not self.warned then
      self.warned = true
      io.stderr:write("rollout: metrics: ", tostring(err), "\n")
    end
  end
end

-- ---- exposition ------------------------------------------------------------------------------

local function escape(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function number(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if math.type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
  for _, f in ipairs({ "%.15g", "%.16g" }) do
    local s = string.format(f, v)
    if tonumber(s) == v then return s end
  end
  return string.format("%.17g", v)
end
M.format_number = number

local Writer = {}
Writer.__index = Writer

function Writer:family(name, kind, help)
  self.out[#self.out + 1] = "# HELP " .. name .. " " .. help
  self.out[#self.out + 1] = "# TYPE " .. name .. " " .. kind
  self.name = name
end

function Writer:sample(labels, value)
  if type(value) ~= "number" then return end
  local parts = {}
  for i = 1, #labels, 2 do
    if labels[i + 1] ~= nil then parts[#parts + 1] = labels[i] .. '="' .. escape(labels[i + 1]) .. '"' end
  end
  local l = #parts > 0 and ("{" .. table.concat(parts, ",") .. "}") or ""
  self.out[#self.out + 1] = self.name .. l .. " " .. number(value)
end

local HELP = {
  rollout_source_errors_total = { "counter",
    "Evaluations whose metric sources failed (a failed query or scrape is an error, never a value)." },
  rollout_router_errors_total = { "counter", "Router operations that failed, by operation (shift, rollback attempt, header_override)." },
  rollout_decisions_total = { "counter",
    "Decisions taken: advance, extend, rollback, pause, resume, promote, promote_full, skip_stage, abort." },
  rollout_gate_evaluations_total = { "counter",
    "Gate evaluations at the end of a hold, by stage and result (pass, fail, extend, inconclusive)." },
  rollout_rollbacks_total = { "counter",
    "Rollbacks started, by reason (trigger:<name>, gate:<signal>, manual, error:<what>, inconclusive:<why>)." },
  rollout_trigger_fired_total = { "counter", "Rollback triggers that fired, by trigger." },
  rollout_hook_failures_total = { "counter", "Hooks that failed or timed out, by hook." },
  rollout_share_warnings_total = { "counter",
    "Evaluations where the canary's request share was more than the tolerance away from its weight." },
  rollout_commands_total = { "counter", "Operator commands received, by command." },
  rollout_notifications_total = { "counter", "Notifications delivered or given up on, by notifier and result (sent, failed)." },
}
--- Every metric family this module can expose (the counters after HELP appear on first use).
M.NAMES = { "rollout_build_info", "rollout_info", "rollout_phase", "rollout_status", "rollout_outcome_info",
  "rollout_stages", "rollout_stage_index", "rollout_stage_hold_seconds", "rollout_stage_held_seconds",
  "rollout_canary_weight", "rollout_baseline_weight", "rollout_start_time_seconds", "rollout_elapsed_seconds",
  "rollout_signal", "rollout_evaluations_total", "rollout_last_evaluation_time_seconds",
  "rollout_consecutive_source_errors", "rollout_gate_value", "rollout_gate_threshold", "rollout_gate_passed",
  "rollout_gate_samples", "rollout_gate_min_samples", "rollout_trigger_state", "rollout_trigger_value" }
for name in pairs(HELP) do M.NAMES[#M.NAMES + 1] = name end
table.sort(M.NAMES)

-- counters that exist (at 0) from the start, so rate() and alerts see them
local ALWAYS = { "rollout_source_errors_total", "rollout_router_errors_total", "rollout_decisions_total" }

--- render() -> the exposition text (format 0.0.4).
function C:render()
  local w = setmetatable({ out = {} }, Writer)
  local svc = self.service or "unknown"
  local st = self.engine and self.engine:status() or nil
  local phase = self.phase
  if st then phase = PHASE_OF[st.state] or st.state end
  local weights = st and st.weights or self.weights
  local S = { "service", svc }

  w:family("rollout_build_info", "gauge", "The rollout binary's version (value 1).")
  w:sample({ "version", rollout.version }, 1)
  if self.info then
    local i = self.info
    w:family("rollout_info", "gauge", "The rollout being run: service, playbook, baseline and canary versions (value 1).")
    w:sample({ "service", svc, "playbook", i.playbook, "baseline", i.baseline, "canary", i.canary, "deployment_id", i.deployment_id }, 1)
  end
  w:family("rollout_phase", "gauge", "The rollout's phase, one-hot over pending, preflight, deploy, progressing, paused, "
    .. "rolling_back, promoting, promoted, rolled_back, aborted, failed.")
  for _, p in ipairs(M.PHASES) do w:sample({ "service", svc, "phase", p }, p == phase and 1 or 0) end
  w:family("rollout_status", "gauge", "As flagger_canary_status: 0 running, 1 promoted, 2 rolled back, aborted or failed, 3 paused.")
  w:sample(S, STATUS_OF[phase] or 0)
  if self.outcome then
    w:family("rollout_outcome_info", "gauge", "How the rollout ended: outcome and reason (value 1).")
    w:sample({ "service", svc, "outcome", self.outcome.outcome, "reason", self.outcome.reason or "" }, 1)
  end
  w:family("rollout_stages", "gauge", "Number of stages in the playbook.")
  w:sample(S, self.stages)
  w:family("rollout_stage_index", "gauge", "Current stage, 1-based (0 before the first stage); the stage label names it.")
  w:sample({ "service", svc, "stage", self.stage or "" }, self.stage_index or 0)
  if st and st.hold then
    w:family("rollout_stage_hold_seconds", "gauge", "The current stage's hold.")
    w:sample({ "service", svc, "stage", st.stage }, st.hold)
    w:family("rollout_stage_held_seconds", "gauge", "Time spent in the current stage's hold so far.")
    w:sample({ "service", svc, "stage", st.stage }, st.held)
  end
  w:family("rollout_canary_weight", "gauge", "Canary traffic weight in percent, as last confirmed by the router (flagger_canary_weight).")
  w:sample(S, weights.canary)
  w:family("rollout_baseline_weight", "gauge", "Baseline traffic weight in percent, as last confirmed by the router.")
  w:sample(S, weights.baseline)
  if self.started_ts then
    w:family("rollout_start_time_seconds", "gauge", "When the rollout started, Unix seconds.")
    w:sample(S, self.started_ts)
  end
  w:family("rollout_elapsed_seconds", "gauge", "Seconds since the rollout started (frozen at its outcome).")
  w:sample(S, self.finished_t or (st and st.elapsed) or self.last_t)

  w:family("rollout_signal", "gauge", "Signals as measured at the last evaluation, per version (trigger window): "
    .. "error_rate and health are ratios, latencies seconds.")
  for _, v in ipairs({ "baseline", "canary" }) do
    for _, s in ipairs(M.SIGNALS) do w:sample({ "service", svc, "version", v, "signal", s }, self.signals[v][s]) end
  end
  w:family("rollout_evaluations_total", "counter", "Evaluations with data (sources sampled, triggers evaluated).")
  w:sample(S, self.evaluations)
  if self.last_evaluation_ts then
    w:family("rollout_last_evaluation_time_seconds", "gauge", "When the last evaluation with data happened, Unix seconds.")
    w:sample(S, self.last_evaluation_ts)
  end
  w:family("rollout_consecutive_source_errors", "gauge",
    "Failed evaluations in a row (the rollout is inconclusive past consecutive_error_limit).")
  w:sample(S, st and st.consecutive_errors or self.consecutive_errors)

  w:family("rollout_gate_value", "gauge", "Each gate's last measured canary value, per stage and signal.")
  for _, stage in ipairs(self.gate_order) do
    local g = self.gates[stage]
    for _, sig in ipairs(g.order) do w:sample({ "service", svc, "stage", stage, "signal", sig }, g.by[sig].value) end
  end
  w:family("rollout_gate_threshold", "gauge", "Each gate's threshold; dir is max (value must be <=) or min (value must be >=).")
  for _, stage in ipairs(self.gate_order) do
    local g = self.gates[stage]
    for _, sig in ipairs(g.order) do
      local c = g.by[sig]
      w:sample({ "service", svc, "stage", stage, "signal", sig, "dir", c.dir }, c.threshold)
    end
  end
  w:family("rollout_gate_passed", "gauge", "1 when the gate's last check held, 0 when it failed or had no data.")
  for _, stage in ipairs(self.gate_order) do
    local g = self.gates[stage]
    for _, sig in ipairs(g.order) do w:sample({ "service", svc, "stage", stage, "signal", sig }, g.by[sig].status == "pass" and 1 or 0) end
  end
  w:family("rollout_gate_samples", "gauge", "Canary requests counted over the stage's hold at its last gate evaluation.")
  for _, stage in ipairs(self.gate_order) do w:sample({ "service", svc, "stage", stage }, self.gate_meta[stage].samples) end
  w:family("rollout_gate_min_samples", "gauge", "The stage's min_samples.")
  for _, stage in ipairs(self.gate_order) do w:sample({ "service", svc, "stage", stage }, self.gate_meta[stage].min_samples) end

  w:family("rollout_trigger_state", "gauge", "Each rollback trigger's state, one-hot over inactive, ok, pending, firing, nodata.")
  local tstate = {}
  for _, name in ipairs(self.trigger_order) do
    local t = self.triggers[name]
    local s = st and st.triggers and st.triggers[name] and st.triggers[name].state or t.state
    tstate[name] = s
    for _, state in ipairs(M.TRIGGER_STATES) do w:sample({ "service", svc, "trigger", name, "state", state }, s == state and 1 or 0) end
  end
  w:family("rollout_trigger_value", "gauge", "The value behind each trigger's last evaluation (numeric triggers only).")
  for _, name in ipairs(self.trigger_order) do
    local v = self.triggers[name].value
    if st and st.triggers and st.triggers[name] and st.triggers[name].value ~= nil then v = st.triggers[name].value end
    if type(v) == "number" and tstate[name] ~= "nodata" then w:sample({ "service", svc, "trigger", name }, v) end
  end

  local done = {}
  for _, name in ipairs(ALWAYS) do
    done[name] = true
    w:family(name, HELP[name][1], HELP[name][2])
    local c = self.counters[name]
    if c then
      for _, k in ipairs(c.order) do local s = c.series[k]; w:sample(s.labels, s.value) end
    elseif name == "rollout_decisions_total" then
      w:sample({ "service", svc, "decision", "rollback" }, 0)
    elseif name == "rollout_router_errors_total" then
      w:sample({ "service", svc, "operation", "shift" }, 0)
    else
      w:sample(S, 0)
    end
  end
  for _, name in ipairs(self.counter_order) do
    if not done[name] then
      w:family(name, HELP[name][1], HELP[name][2])
      local c = self.counters[name]
      for _, k in ipairs(c.order) do local s = c.series[k]; w:sample(s.labels, s.value) end
    end
  end
  w.out[#w.out + 1] = ""
  return table.concat(w.out, "\n")
end

-- ---- the HTTP server -----------------------------------------------------------------------

local REASON = { [200] = "OK", [400] = "Bad Request", [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout" }

--- parse_addr("127.0.0.1:9464" | ":9464" | "[::1]:9464" | "9464") -> host, port | nil, err
function M.parse_addr(addr)
  if type(addr) == "number" then return "127.0.0.1", math.tointeger(addr) end
  if type(addr) ~= "string" then error("metrics_endpoint: address must be HOST:PORT, got " .. type(addr), 2) end
  local host, port = addr:match("^%[([^%]]+)%]:(%d+)$")
  if not host then host, port = addr:match("^([^:]*):(%d+)$") end
  if not host and addr:match("^%d+$") then host, port = "127.0.0.1", addr end
  port = tonumber(port)
  if not port or port > 65535 then return nil, "metrics address must be HOST:PORT (e.g. 127.0.0.1:9464), got '" .. addr .. "'" end
  if host == "" then host = "*" end
  return host, math.tointeger(port)
end

local function respond(conn, status, ctype, body, head_only, close)
  local h = string.format("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nCache-Control: no-store\r\n%s\r\n",
    status, REASON[status] or "OK", ctype, #body, close and "Connection: close\r\n" or "")
  return conn:send(head_only and h or (h .. body), 10)
end

local INDEX = [[<!doctype html><html><head><meta charset="utf-8"><title>rollout</title></head>
<body><h1>rollout</h1><p><a href="/metrics">/metrics</a></p></body></html>
]]

-- One connection: requests until the peer closes, asks to, or stays idle.
local function serve_conn(ep, conn)
  while true do
    local line = conn:receive("l", ep.idle_timeout)
    if not line then break end
    if line ~= "" then
      local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
      local headers, n = {}, 0
      while true do
        local h = conn:receive("l", 10)
        if not h then return conn:close() end
        if h == "" then break end
        n = n + 1
        if n > 100 then method = nil; break end
        local k, v = h:match("^([^:]+):%s*(.-)%s*$")
        if k then headers[k:lower()] = v end
      end
      if not method then respond(conn, 400, "text/plain", "bad request\n", false, true); break end
      local len = tonumber(headers["content-length"] or "0") or 0
      if len > 0 and not conn:receive(math.min(len, 1 << 20), 10) then break end
      local conn_hdr = (headers["connection"] or ""):lower()
      local close = conn_hdr == "close" or (version == "1.0" and conn_hdr ~= "keep-alive")
      local path = target:match("^[^?#]*")
      local head = method == "HEAD"
      local ok
      if method ~= "GET" and not head then
        ok = respond(conn, 405, "text/plain", "only GET and HEAD\n", false, close)
      elseif path == "/metrics" then
        ep.scrapes = ep.scrapes + 1
        ok = respond(conn, 200, M.CONTENT_TYPE, ep.collector:render(), head, close)
      elseif path == "/" then
        ok = respond(conn, 200, "text/html; charset=utf-8", INDEX, head, close)
      elseif path == "/healthz" or path == "/-/healthy" then
        ok = respond(conn, 200, "text/plain", "ok\n", head, close)
      else
        ok = respond(conn, 404, "text/plain", "not found; try /metrics\n", head, close)
      end
      if not ok or close then break end
    end
  end
  conn:close()
end

local EP = {}
EP.__index = EP

--- start(addr, engine?, {service=, idle_timeout=60}) -> endpoint | nil, err
--- endpoint: .host, .port, .url, .collector, .emit (the sink), :bind(engine), :close()
function M.start(addr, engine, opts)
  opts = opts or {}
  local host, port = M.parse_addr(addr)
  if not host then return nil, port end
  local srv, err = net.listen_tcp(host, port)
  if not srv then return nil, "metrics: cannot listen on " .. tostring(addr) .. ": " .. tostring(err) end
  local collector = opts.collector or M.new({ service = opts.service })
  local ep = setmetatable({ server = srv, host = host, port = srv:port(), collector = collector, conns = {},
    idle_timeout = opts.idle_timeout or 60, scrapes = 0 }, EP)
  local shown = (host == "*" or host == "0.0.0.0") and "127.0.0.1" or host
  if shown:find(":", 1, true) then shown = "[" .. shown .. "]" end
  ep.url = "http://" .. shown .. ":" .. ep.port .. "/metrics"
  ep.emit = function(ev, eng) collector:observe(ev, eng) end
  if engine then collector:bind(engine) end
  ep.task = rollout.spawn(function()
    while true do
      local conn, aerr = srv:accept()
      if not conn then
        if aerr == "closed" then return end
        rollout.sleep(0.05)
      else
        local t
        t = rollout.spawn(function()
          local ok, e = pcall(serve_conn, ep, conn)
          ep.conns[t] = nil
          if not ok then pcall(conn.close, conn); io.stderr:write("rollout: metrics: ", tostring(e), "\n") end
        end)
        ep.conns[t] = conn
      end
    end
  end)
  return ep
end

function EP:bind(engine) self.collector:bind(engine); return self end

--- linger(seconds): keep serving for that long (the outcome stays scrapeable for one more
--- scrape), or until SIGINT/SIGTERM. Returns the signal's name if one came.
function EP:linger(seconds)
  if self.closed or not seconds or seconds <= 0 then return nil end
  return rollout.wait_signal("INT", "TERM", seconds)
end

function EP:close()
  if self.closed then return end
  self.closed = true
  self.server:close()
  if self.task then self.task:cancel("closed") end
  for t, conn in pairs(self.conns) do t:cancel("closed"); pcall(conn.close, conn) end
  self.conns = {}
end

--- chain(sink, ...) -> emit(ev, engine) calling every non-nil sink in order: how one engine
--- feeds the printer, /metrics and notifications (behind the journal's sink). Returns what
--- the first sink returned (the engine reads a journal sink's true | false, err).
function M.chain(...)
  local list = {}
  for i = 1, select("#", ...) do
    local s = select(i, ...)
    if s then list[#list + 1] = s end
  end
  return function(ev, engine)
    local first = table.pack(list[1] and list[1](ev, engine))
    for i = 2, #list do list[i](ev, engine) end
    return table.unpack(first, 1, first.n)
  end
end

return M

-- rollout.notify: tell people and systems what a rollout decided, where they already look.
--
-- Three kinds of notifier, configured in the playbook's `notifications` list:
--   webhook         a JSON event (rollout, stage, decision, values, reason) per chosen event
--   slack           a Slack-compatible incoming-webhook message (text + attachment fields)
--   deployment_api  the runbook's deployment-tracking calls: POST url when the rollout starts
--                   (Step 1), POST rollback_url when it rolls back (rollback-canary.sh step 6)
-- Secrets never sit in the playbook: every url and token may come from `*_file` (first line
-- of a file) or `*_env` (an environment variable) instead, and errors never show them.
--
-- The engine's emit is synchronous and must never wait on a network, so the sink only
-- formats and queues; one task per notifier delivers in order, retrying transport
-- errors, 5xx, 408 and 429 with exponential backoff. A notification that cannot be
-- delivered becomes a `notification_failed` event (and a delivered one
-- `notification_sent`); it never blocks, slows or fails the rollout. close(timeout) gives
-- queued notifications a bounded time to go out before the process exits.
--
--   local n = notify.new(pb, { who = user })      -- always an object; no-op when unconfigured
--   emit = chain(printer, journal, n.emit)         -- the engine's env.emit
--   ...; n:close(10)                               -- after the outcome, before the journal closes
--   n:drop()                                       -- or: let go at once, no events (the rollout is not ours)
--
-- Error policy: validate()/check() return configuration errors; new() raises on a config
-- that did not pass validation (a programming error); delivery failures are events.
local rollout = require("rollout")
local json = require("rollout.json")
local redaction = require("rollout.redact")
local units = require("rollout.units")
local datetime = require("rollout.datetime")
local options = require("rollout.notify_options")
local output = require("rollout.output")
local http = require("rollout.http")

local M = {}

M.DEFAULT_EVENTS = options.DEFAULT_EVENTS -- events each type sends unless `events` says otherwise
M.check = options.check
M.validate = options.validate

-- ---- secrets -----------------------------------------------------------------------------

--- resolve(cfg, base) -> value, origin | nil, err   (base "url" reads url, url_env or url_file)
function M.resolve(cfg, base)
  if cfg[base] ~= nil then return cfg[base], base end
  local env = cfg[base .. "_env"]
  if env then
    local v = os.getenv(env)
    if not v or v == "" then return nil, base .. "_env: environment variable " .. env .. " is not set" end
    return v, base .. " from $" .. env
  end
  local file = cfg[base .. "_file"]
  if file then
    local h, err = io.open(file, "r")
    if not h then return nil, base .. "_file: " .. tostring(err) end
    local v = (h:read("l") or ""):match("^%s*(.-)%s*$")
    h:close()
    if v == "" then return nil, base .. "_file: " .. file .. " is empty" end
    return v, base .. " from " .. file
  end
  return nil, nil
end

-- ---- payloads -----------------------------------------------------------------------------

local iso = datetime.iso8601
M.iso8601 = iso

--- The runbook's id: <service>-canary-YYYYMMDD-HHMMSS (UTC start time), unless given.
M.deployment_id = datetime.deployment_id

-- One line a person reads, the same words as the terminal's plain output.
local function text_line(ev)
  return output.line(ev) or ev.event
end
M.text_line = text_line

-- What was decided, in one word.
local function decision_of(ev)
  local k = ev.event
  if k == "gate" then
    return ({ pass = "advance", fail = "rollback", extend = "extend", inconclusive = "inconclusive" })[ev.result] or ev.result
  end
  return ({ rollout_started = "start", stage_entered = "shift", trigger_fired = "rollback", rollback_started = "rollback",
    rolled_back = "rolled_back", paused = "pause", resumed = "resume", promoting = "promote",
    hook_failed = "hook_failed", weight_failed = "router_error", rollback_unconfirmed = "rollback_unconfirmed" })[k]
    or (k == "outcome" and ev.outcome) or nil
end
M.decision_of = decision_of

local function values_of(ev)
  local k = ev.event
  if k == "gate" then
    return { checks = ev.checks, samples = ev.samples, min_samples = ev.min_samples, window = ev.window,
      total_rps = ev.total_rps, min_rps = ev.min_rps, baseline = ev.baseline, canary = ev.canary }
  elseif k == "trigger_fired" or k == "trigger_pending" then
    return { trigger = ev.trigger, value = ev.value, condition = ev.condition, ["for"] = ev["for"], held = ev.held }
  elseif k == "evaluation" then
    return { baseline = ev.baseline, canary = ev.canary, weight = ev.weight }
  elseif k == "stage_entered" then
    return { index = ev.index, weight = ev.weight, hold = ev.hold }
  elseif k == "rollback_started" then
    return { value = ev.value, detail = ev.detail }
  end
  return nil
end

local function reason_of(ev)
  if ev.event == "gate" then return ev.why end
  if ev.event == "trigger_fired" then return "trigger:" .. tostring(ev.trigger) end
  return ev.reason or ev.error
end

-- The rollout's identity as the notifier saw it at rollout_started.
local function rollout_info(self)
  local r = self.rollout
  return { service = r.service, deployment_id = r.deployment_id, baseline = r.baseline, canary = r.canary,
    playbook = r.playbook, started_by = r.who, started_at = iso(r.ts0) }
end

local function now_ts(ev) return ev.ts or rollout.time() end

local PAYLOAD = {}

function PAYLOAD.webhook(self, _, ev)
  return {
    rollout = rollout_info(self), event = ev.event, stage = ev.stage, decision = decision_of(ev),
    reason = reason_of(ev), values = values_of(ev), text = text_line(ev), t = ev.t, at = iso(now_ts(ev)), data = ev,
  }
end

local COLOR = { advance = "good", promoted = "good", start = "#439FE0", rollback = "danger", rolled_back = "danger",
  failed = "danger", aborted = "danger", pause = "warning", paused = "warning", inconclusive = "warning", resume = "#439FE0" }

local function fmt_value(signal, v)
  return output.value(signal, v)
end

function PAYLOAD.slack(self, cfg, ev)
  local r = self.rollout
  local decision = decision_of(ev)
  local text = string.format("*%s* %s → %s: %s", r.service or "rollout", r.baseline or "?", r.canary or "?", text_line(ev))
  local fields = {}
  if ev.stage then fields[#fields + 1] = { title = "Stage", value = ev.stage, short = true } end
  if decision then fields[#fields + 1] = { title = "Decision", value = decision, short = true } end
  local reason = reason_of(ev)
  if reason then fields[#fields + 1] = { title = "Reason", value = tostring(reason), short = true } end
  for _, c in ipairs(ev.event == "gate" and ev.checks or {}) do
    if c.status ~= "not_measured" then
      fields[#fields + 1] = { title = c.signal, short = true, value = string.format("%s %s %s (%s)",
        fmt_value(c.signal, c.value), c.dir == "max" and "≤" or "≥", fmt_value(c.signal, c.threshold), c.status) }
    end
  end
  local msg = { text = text, attachments = { { fallback = text, color = COLOR[decision] or "#cccccc", fields = fields,
    footer = "deployment " .. tostring(r.deployment_id), ts = math.floor(now_ts(ev)) } } }
  msg.channel, msg.username, msg.icon_emoji = cfg.channel, cfg.username, cfg.icon_emoji
  return msg
end

local function human_reason(self, ev)
  local reason = ev.reason
  if reason == "manual" then return "Manual rollback" .. (self.abort_detail and (": " .. self.abort_detail) or "") end
  local detail = self.rollback_detail and (" (" .. self.rollback_detail .. ")") or ""
  return "Automatic rollback: " .. tostring(reason) .. detail
end

-- deployment_api returns (payload, url_base) or nil to send nothing for this event
function PAYLOAD.deployment_api(self, cfg, ev)
  local r = self.rollout
  if ev.event == "rollout_started" then
    return { deployment_id = r.deployment_id, service = r.service, type = cfg.deployment_type or "canary",
      from_version = r.baseline, to_version = r.canary, started_by = cfg.started_by or r.who or "unknown",
      started_at = iso(r.ts0) }, "url"
  elseif ev.event == "rolled_back" then
    local at = (r.ts0 and ev.at) and (r.ts0 + ev.at) or now_ts(ev)
    return { deployment_id = r.deployment_id, rolled_back_at = iso(at),
      rolled_back_by = ev.reason == "manual" and (self.abort_by or r.who or "unknown") or "rollout",
      reason = human_reason(self, ev), reason_code = ev.reason, automatic = ev.reason ~= "manual" }, "rollback_url"
  elseif ev.event == "outcome" then
    if not (cfg.finish_url or cfg.finish_url_env or cfg.finish_url_file) then return nil end
    return { deployment_id = r.deployment_id, outcome = ev.outcome, reason = ev.reason, finished_at = iso(now_ts(ev)),
      duration_seconds = ev.t }, "finish_url"
  end
  return nil
end

-- ---- delivery -----------------------------------------------------------------------------

local Notifier = {}
Notifier.__index = Notifier

local function redact(msg, secrets)
  msg = tostring(msg)
  for _, s in ipairs(secrets) do
    if s.value and #s.value > 0 then
      msg = msg:gsub(s.value:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"), function() return "<" .. s.label .. ">" end)
    end
  end
  return msg
end

function Notifier:url_for(which)
  local cfg = self.cfg
  local v, origin = M.resolve(cfg, which)
  if v then return v, origin end
  if origin then return nil, origin end
  if which == "rollback_url" then
    local base, err = M.resolve(cfg, "url")
    if not base then return nil, err end
    return base:gsub("/+$", "") .. "/rollback", "url"
  end
  return nil, which .. " is not configured"
end

function Notifier:wants(kind)
  if kind:match("^notification_") then return false end
  return self.events["*"] or self.events[kind] or false
end

-- One attempt: true, status | nil, err, retryable
function Notifier:post(url, body)
  local headers = { ["Content-Type"] = "application/json", ["User-Agent"] = "rollout/" .. rollout.version }
  for k, v in pairs(self.cfg.headers or {}) do headers[k] = v end
  local token, terr = M.resolve(self.cfg, "token")
  if terr and not token then return nil, terr, false end
  if token then headers["Authorization"] = "Bearer " .. token end
  local secrets = { { value = url, label = "url" }, { value = token, label = "token" } }
  local r, err = http.request({ url = url, method = self.cfg.method or "POST", headers = headers, body = body,
    timeout = self.timeout, follow = false })
  if not r then return nil, redact(err, secrets), true end
  if r.status >= 200 and r.status < 300 then return true, r.status end
  local retry = r.status >= 500 or r.status == 408 or r.status == 429
  local snippet = (r.body or ""):sub(1, 200):gsub("%s+", " ")
  return nil, redact(string.format("HTTP %d %s", r.status, snippet), secrets), retry
end

function Notifier:deliver(item)
  local url, uerr = self:url_for(item.url)
  if not url then return nil, uerr, 0 end
  local attempts, backoff = 0, self.backoff
  while true do
    attempts = attempts + 1
    local ok, res, retry = self:post(url, item.body)
    if ok then return true, res, attempts end
    if not retry or attempts > self.retries then return nil, res, attempts end
    rollout.sleep(backoff)
    backoff = math.min(backoff * 2, self.max_backoff)
  end
end

function Notifier:work()
  while true do
    local item = table.remove(self.queue, 1)
    self.current = item
    if not item then
      self.busy = false
      if self.idle_waiter then rollout.wake(self.idle_waiter) end
      self.sleeping = true
      rollout.suspend()
      self.sleeping = false
    else
      self.busy = true
      local t0 = rollout.now()
      local ok, res, attempts = self:deliver(item)
      local fields = { notifier = self.name, type = self.cfg.type, ["for"] = item.event, attempts = attempts,
        elapsed = rollout.now() - t0 }
      if ok then fields.status = res else fields.error = res end
      self.current = nil
      self.owner:report(ok and "notification_sent" or "notification_failed", fields)
    end
  end
end

function Notifier:push(item)
  if #self.queue >= self.queue_limit then
    local dropped = table.remove(self.queue, 1)
    self.owner:report("notification_failed", { notifier = self.name, type = self.cfg.type, ["for"] = dropped.event,
      attempts = 0, error = "queue full (" .. self.queue_limit .. "): dropped", deferred = true })
  end
  self.queue[#self.queue + 1] = item
  if not self.task then self.task = rollout.spawn(function() self:work() end) end
  if self.sleeping then rollout.wake(self.task) end
end

-- ---- the set of notifiers ------------------------------------------------------------------

local Set = {}
Set.__index = Set

--- new(pb | notifications_list, {who=, emit = fn(kind, fields)}) -> set
--- set.emit(ev, engine) is the sink; set:close(timeout); set:problems() -> {strings}
function M.new(pb, opts)
  opts = opts or {}
  local list = pb and (pb.notifications or (pb[1] and pb)) or {}
  if list.type ~= nil then list = { list } end
  local errs = M.validate(list)
  if #errs > 0 then error("notify.new: invalid notifications: " .. errs[1], 2) end
  local self = setmetatable({ notifiers = {}, rollout = { service = pb and pb.service, deployment_id = pb and pb.deployment_id,
    who = opts.who }, fallback_emit = opts.emit, pb = pb }, Set)
  for i, cfg in ipairs(list) do
    local events = {}
    for _, e in ipairs(cfg.events or M.DEFAULT_EVENTS[cfg.type]) do events[e] = true end
    if cfg.type == "deployment_api" then
      for _, e in ipairs(M.DEFAULT_EVENTS.deployment_api) do events[e] = true end
    end
    self.notifiers[i] = setmetatable({
      cfg = cfg, name = cfg.name or (cfg.type .. (#list > 1 and ("#" .. i) or "")), events = events, queue = {},
      timeout = units.duration(cfg.timeout or "5s"), retries = cfg.retries or 3,
      backoff = units.duration(cfg.backoff or "1s"), max_backoff = units.duration(cfg.max_backoff or "30s"),
      queue_limit = cfg.queue_limit or 1000, owner = self,
    }, Notifier)
  end
  self.emit = function(ev, engine) self:observe(ev, engine) end
  return self
end

--- problems() -> list of strings: secrets that cannot be read now (for `rollout check`/run).
function Set:problems()
  local out = {}
  for _, n in ipairs(self.notifiers) do
    for _, base in ipairs({ "url", "token", "rollback_url", "finish_url" }) do
      local v, err = M.resolve(n.cfg, base)
      if not v and err then out[#out + 1] = n.name .. ": " .. err end
    end
  end
  return out
end

-- An event of ours, into the engine's stream (journal, output, /metrics) when we know it.
function Set:report(kind, fields)
  if self.engine then
    local ok, err = pcall(self.engine.emit, self.engine, kind, fields)
    if ok then return end
    io.stderr:write("rollout: notify: ", tostring(err), "\n")
  elseif self.fallback_emit then
    pcall(self.fallback_emit, kind, fields)
  end
end

function Set:remember(ev)
  local r = self.rollout
  local k = ev.event
  if k == "rollout_started" or k == "rollout_resumed" then
    r.service = ev.service or r.service
    r.baseline, r.canary, r.playbook = ev.baseline or r.baseline, ev.canary or r.canary, ev.playbook or r.playbook
    r.who = ev.who or r.who
    -- a resumed rollout names the start it continues (`started`); the engine's t leaves out
    -- the time no engine ran, so ts - t is not the start after a resume
    r.ts0 = ev.started or (ev.ts and (ev.ts - (ev.t or 0))) or r.ts0 or rollout.time()
    r.deployment_id = M.deployment_id(r.service, r.ts0, ev.deployment_id or r.deployment_id)
  elseif k == "command" and ev.command == "abort" then
    self.abort_by, self.abort_detail = ev.who, ev.arg
  elseif k == "rollback_started" then
    self.rollback_detail = ev.detail or (ev.value ~= nil and ("value " .. tostring(ev.value)) or nil)
  end
end

--- The sink: formats and queues. Never waits, never raises.
function Set:observe(ev, engine)
  if engine and not self.engine then
    self.engine = engine
    local pb = engine.pb
    local r = self.rollout
    r.service = r.service or pb.service
    r.baseline, r.canary = pb.versions.baseline.version, pb.versions.canary.version
    r.deployment_id = r.deployment_id or pb.deployment_id
  end
  if #self.notifiers == 0 or self.closed then return end
  local ok, err = pcall(function()
    ev = redaction.value(ev) -- a payload leaves the process: no secret in it
    self:remember(ev)
    for _, n in ipairs(self.notifiers) do
      -- a hold extended one interval at a time would flood a chat channel
      local noise = ev.event == "gate" and ev.result == "extend" and n.cfg.type == "slack" and not n.events["*"]
      if n:wants(ev.event) and not noise then
        local payload, which = PAYLOAD[n.cfg.type](self, n.cfg, ev)
        if payload then
          local body = redaction.text(json.encode(payload, { sort = true, non_finite = "null", invalid_utf8 = "replace" }))
          n:push({ event = ev.event, url = which or "url", body = body })
        end
      end
    end
  end)
  if not ok and not self.warned then
    self.warned = true
    io.stderr:write("rollout: notify: ", tostring(err), "\n")
  end
end

--- pending() -> number of notifications queued or in flight
function Set:pending()
  local n = 0
  for _, x in ipairs(self.notifiers) do n = n + #x.queue + (x.busy and 1 or 0) end
  return n
end

--- close(timeout = 10): wait up to `timeout` for queued notifications, then give up on the
--- rest (each one a notification_failed event). Returns the number given up on.
function Set:close(timeout)
  if self.closed then return 0 end
  local deadline = rollout.now() + units.duration(timeout or 10)
  while self:pending() > 0 and rollout.now() < deadline do
    self.idle_waiter = rollout.current()
    rollout.suspend(math.min(0.1, math.max(0, deadline - rollout.now())))
    self.idle_waiter = nil
  end
  self.closed = true
  local lost = 0
  for _, n in ipairs(self.notifiers) do
    if n.task then n.task:cancel("closed") end
    local left = n.queue
    n.queue = {}
    if n.current then table.insert(left, 1, n.current) end
    for _, item in ipairs(left) do
      lost = lost + 1
      self:report("notification_failed", { notifier = n.name, type = n.cfg.type, ["for"] = item.event, attempts = 0,
        error = "not delivered before exit" })
    end
  end
  return lost
end

--- drop(): stop at once; queued and in-flight notifications are let go with no event (the
--- rollout is no longer this process's to journal: a fleet agent lost it). Returns how many.
function Set:drop()
  if self.closed then return 0 end
  self.closed = true
  local n_left = 0
  for _, n in ipairs(self.notifiers) do
    if n.task then n.task:cancel("dropped") end
    n_left = n_left + #n.queue + (n.current and 1 or 0)
    n.queue, n.current, n.busy = {}, nil, false
  end
  return n_left
end

return M

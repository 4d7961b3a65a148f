-- rollout.engine: the rollout state machine (docs/architecture.md), with docs/semantics.md's timing.
--
--   pending → preflight → deploy → stage[i] (shift, hold while triggers watch, gate)
--           → promote → promoted;   any active state → rolling_back → rolled_back;
--   paused (manual gate, inconclusive, operator) returns via resume.
--
-- One engine is one task. Every wait goes through wait_until(), which runs an evaluation
-- tick every `interval` (sources sampled, triggers evaluated) once traffic has moved, and
-- returns early when something interrupts: a trigger firing, a source-error limit, an
-- operator command. Hooks run as their own tasks while the ticks go on, so a trigger
-- fires while a hook waits, and the hook is cancelled. Every decision is an event that
-- carries the numbers behind it.
--
-- Error policy: the engine is given a validated playbook (rollout.playbook reports config
-- errors with their key paths before an engine exists) and never raises for what the
-- world does. Operational failures are events and decisions:
--   a source that fails: `source_error` (no data, never a pass); too many in a row are
--     inconclusive, handled as policy.inconclusive says;
--   a router that fails: `weight_failed` after its retries, then a rollback;
--   a hook that fails or overruns its budget: `hook_failed`, and the state decides
--     (before_stage and after_stage roll back; deploy, on_promote and finalize end the
--     rollout `failed`; the others are only recorded);
--   an unwritable journal: the rollout pauses (interactive: until it is writable again;
--     else it ends `paused`, traffic where it is).
-- Operator commands (E:command) return nil, err. Anything else that raises inside run()
-- is a bug: run_protected() journals it as `engine_error`, sends traffic to the baseline
-- (confirmed by read-back where the router answers) and ends the rollout `failed`.
local rollout = require("rollout")
local playbook = require("rollout.playbook")
local observe = require("rollout.observe")
local no_return = require("rollout.no_return")
local strategies = { blue_green = require("rollout.strategies.blue_green") } -- canary is this file
local safety = require("rollout.safety")

local M = {}
local E = {}
E.__index = E

M.EXIT = { promoted = 0, rolled_back = 1, paused = 3, aborted = 3, failed = 3 }
-- What a hook may spend unless the playbook's hook_budget says otherwise: VM instructions
-- while it runs, seconds of wall time, bytes its Lua heap may grow by.
M.HOOK_BUDGET = { instructions = 1e9, time = 900, memory = 256 * 1024 * 1024 }
-- A trigger's `check` function runs inside every evaluation: it gets a small budget, so a
-- runaway check is a trigger error (no data), never a frozen engine.
M.CHECK_BUDGET = { instructions = 1e7, time = 1, memory = 64 * 1024 * 1024 }
-- A trigger whose check raised at this many evaluations in a row is broken: no gate passes
-- while it is (docs/semantics.md "Triggers"), it is no data, not health
M.TRIGGER_ERROR_LIMIT = 3

-- fn(...) under a budget (rollout.budget: instructions, seconds; rollout.alloc: memory):
-- true, results | false, err.
local function budgeted(b, fn, ...)
  return pcall(require("rollout.budget").run, require("rollout.alloc").run,
    { instructions = b.instructions, seconds = b.time }, fn, b.memory, ...)
end

local function compact(s)
  if not s then return nil end
  return { requests = s.requests, rps = s.rps, error_rate = s.error_rate, errors = s.errors, p50 = s.p50, p95 = s.p95,
    p99 = s.p99, health = s.health, health_ok = s.health_ok, health_total = s.health_total, cpu = s.cpu,
    memory = s.memory, disk = s.disk, restarts = s.restarts }
end
M.compact = compact

--- new(pb, env): env = {router=, sources = {...}, emit = fn(event), simulate = bool,
--- run_hooks = bool, preflight = {name = "pass"|"fail"|"skip"} (simulation overrides),
--- interactive = bool (a pause waits for an operator), who = "user"}
function M.new(pb, env)
  local self = setmetatable({
    pb = pb, env = env, router = env.router, sources = env.sources or {},
    state = "pending", ticking = false, consecutive_errors = 0, events = {},
    trig = {}, weights = { baseline = 100, canary = 0 }, commands = {},
    observe = (env.observe or pb.observe) and true or nil, -- observe-only: rollout.observe
  }, E)
  for _, tr in ipairs(pb.triggers) do self.trig[tr.name] = { since = nil, state = "inactive" } end
  return self
end

-- ---- events ---------------------------------------------------------------------------

function E:elapsed() return rollout.now() - (self.t0 or rollout.now()) end

function E:emit(kind, fields)
  local ev = fields or {}
  ev.event = kind
  ev.t = self:elapsed()
  if not self.env.simulate then ev.ts = rollout.time() end -- simulations stay byte-identical
  if self.stage and ev.stage == nil then ev.stage = self.stage.name end
  if self.env.emit then
    -- a sink that journals returns true, or false, err when the event is not on disk
    local ok, err = self.env.emit(ev, self)
    if ok == false then self.journal_error = tostring(err or "journal write failed")
    elseif ok == true then self.journal_error = nil end
  end
  return ev
end

--- status() -> a table for operators: state, stage, weights, time left, triggers, signals.
function E:status()
  local st = {
    service = self.pb.service, state = self.state, weights = { baseline = self.weights.baseline, canary = self.weights.canary },
    baseline = self.pb.versions.baseline.version, canary = self.pb.versions.canary.version,
    elapsed = self:elapsed(), outcome = self.outcome, stages = #self.pb.stages,
  }
  if self.stage then
    st.stage, st.stage_index = self.stage.name, self.stage.index
    if self.stage_start then
      st.held = rollout.now() - self.stage_start
      st.hold = self.stage.hold
      st.hold_left = math.max(0, self.stage.hold - st.held)
    end
  end
  st.triggers = {}
  for _, tr in ipairs(self.pb.triggers) do
    local t = self.trig[tr.name]
    st.triggers[tr.name] = { state = t.state, since = t.since and (rollout.now() - t.since) or nil, value = t.value }
  end
  if self.last_signals then st.signals = { baseline = compact(self.last_signals.baseline), canary = compact(self.last_signals.canary) } end
  st.consecutive_errors = self.consecutive_errors
  if self.state == "paused" then st.reason = self.pause_reason end
  st.journal_error = self.journal_error
  st.observe = self.observe -- observe-only: an abort changes no weight (playbooks/rollback.lua)
  return st
end

-- ---- signals --------------------------------------------------------------------------

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


-- ---- interrupts and commands ------------------------------------------------------------

-- An interrupt is {action = "rollback"|"pause"|"resume"|"promote"|"promote_full"|"abort", reason=}.
-- A rollback always wins over anything queued before it.
function E:interrupt(intr)
  local cur = self.pending
  if cur and cur.action == "rollback" then return end
  self.pending = intr
  if self.task and self.task ~= rollout.current() then rollout.wake(self.task) end
end

function E:take_interrupt()
  local p = self.pending
  self.pending = nil
  return p
end

--- command(name, arg, who): an operator's command (the control socket and the REPL call it).
--- Returns true or nil, err.
function E:command(name, arg, who)
  local ok_states = { pause = true, resume = true, promote = true, promote_full = true, abort = true,
    retry = true, set_weight = true }
  if not ok_states[name] then return nil, "unknown command '" .. tostring(name) .. "'" end
  if self.outcome then return nil, "the rollout has ended (" .. self.outcome.outcome .. ")" end
  if name == "set_weight" then return self:set_weight(arg, who) end
  self:emit("command", { command = name, arg = arg, who = who or "operator" })
  if name == "abort" then
    self:interrupt({ action = "rollback", reason = "manual", detail = arg, who = who })
  else
    self:interrupt({ action = name, reason = name == "pause" and "manual" or nil, who = who })
  end
  return true
end

--- set weight N (the control socket): an operator's canary weight, applied by the engine's
--- task like any shift (requested, confirmed, journaled); it holds until the next stage's
--- shift or a rollback. Waits up to 30 s for the confirmation: true | nil, err.
function E:set_weight(arg, who)
  local w = tonumber(arg)
  if not w or w < 0 or w > 100 then return nil, "set weight: expected a canary weight 0..100, got " .. tostring(arg) end
  if self.observe then return nil, "set weight: this rollout is observe-only; it never changes weights" end
  if self.state ~= "stage" and self.state ~= "paused" then
    return nil, "set weight: the rollout is " .. tostring(self.state) .. "; a weight can be set during a stage or a pause"
  end
  self:emit("command", { command = "set_weight", arg = w, who = who or "operator" })
  local me = rollout.current()
  self.override = { weight = w, who = who or "operator", reply = me ~= self.task and me or nil }
  if me == self.task then return self:apply_override() end
  rollout.wake(self.task)
  local ok, err = rollout.suspend(30)
  if ok == nil and err == "timeout" then return nil, "set weight: queued, not applied within 30 s (a hook is running?)" end
  return ok, err
end

function E:apply_override()
  local o = self.override
  self.override = nil
  local ok, err, intr = self:shift(o.weight, { by = o.who })
  if intr then self:interrupt(intr) end
  if o.reply then rollout.wake(o.reply, ok, err) end
  return ok, err
end

--- stop(reason, who, opts): end the run (SIGTERM, SIGINT). A running hook is cancelled.
--- opts.rollback: roll back first (reason manual), so the run ends with the canary at 0 %
--- confirmed; otherwise it ends paused with traffic where the last confirmed weights put
--- it. opts.grace (seconds): a paused end waits that long for a rollback (a second Ctrl-C)
--- before it writes its outcome, so one run never writes two outcomes.
function E:stop(reason, who, opts)
  if self.outcome then return nil, "the rollout has ended (" .. self.outcome.outcome .. ")" end
  opts = opts or {}
  self.env.interactive = false
  self.stop_grace = opts.grace
  self:emit("command", { command = "stop", arg = reason, who = who or "signal",
    on_interrupt = opts.rollback and "rollback" or "pause" })
  if opts.rollback then
    self:interrupt({ action = "rollback", reason = "manual", detail = "interrupted: " .. tostring(reason), who = who })
  else
    self:interrupt({ action = "pause", reason = reason, who = who })
  end
  return true
end

--- Never act without a record: called before every router action. While the journal cannot
--- be written the rollout is paused (ticks go on, triggers keep watching); each later event
--- retries the journal, and `resume`/`retry` retry it on purpose. Returns nil to go ahead,
--- or an interrupt that came meanwhile for the caller to act on once the record is written.
function E:await_record()
  if not self.journal_error then return nil end
  local state, held = self.state, nil
  self.state = "paused"
  self.pause_reason = "journal unwritable: " .. self.journal_error
  self:emit("paused", { reason = self.pause_reason })
  while self.journal_error do
    if not self.env.interactive then
      self.state = state
      return { action = "stop_paused", reason = "journal unwritable" }
    end
    local intr = self:wait_until(rollout.now() + self.pb.interval)
    if intr and (intr.action == "resume" or intr.action == "retry") then
      self:emit("journal_retry", { by = intr.who or "operator" })
    elseif intr and intr.action == "pause" and not self.env.interactive then
      self.state = state
      return { action = "stop_paused", reason = intr.reason }
    elseif intr and intr.action ~= "resume" and intr.action ~= "pause" then
      if not (held and held.action == "rollback") then held = intr end -- acted on once recorded
    end
  end
  self.state = state
  self:emit("resumed", { by = "journal writable again" })
  return held
end

-- ---- waiting and ticking ------------------------------------------------------------------

--- Wait until `deadline` (scheduler seconds; math.huge for "until interrupted"), ticking.
function E:wait_until(deadline)
  while true do
    if self.override then self:apply_override() end
    local intr = self:take_interrupt()
    if intr then return intr end
    local now = rollout.now()
    if now >= deadline then return nil end
    local wake = deadline
    if self.ticking and self.next_tick < wake then wake = self.next_tick end
    if wake == math.huge then rollout.suspend() elseif wake > now then rollout.suspend(wake - now) end
    if self.ticking and rollout.now() >= self.next_tick - 1e-9 then self:tick() end
  end
end

function E:reset_triggers(why)
  for _, tr in ipairs(self.pb.triggers) do
    local st = self.trig[tr.name]
    if st.since then self:emit("trigger_reset", { trigger = tr.name, why = why }) end
    st.since = nil
  end
end

local function compare(v, op, x)
  if op == ">" then return v > x elseif op == ">=" then return v >= x
  elseif op == "<" then return v < x elseif op == "<=" then return v <= x
  elseif op == "==" then return v == x else return v ~= x end
end

local function alert_matches(alert, matchers)
  for k, want in pairs(matchers) do
    local have = alert.labels and alert.labels[k] or alert[k]
    if have ~= want then return false end
  end
  return true
end

function E:collect_alerts(now)
  local alerts, err = {}, nil
  for _, src in ipairs(self.sources) do
    if src.alerts then
      local list, e = src:alerts(now)
      if list then for _, a in ipairs(list) do alerts[#alerts + 1] = a end else err = e end
    end
  end
  return alerts, err
end

-- One trigger's condition at this evaluation: true, false, or nil (no data) with the value.
function E:trigger_value(tr, now, cache, alerts)
  if tr.kind == "alert" then
    if not alerts then return nil end
    for _, a in ipairs(alerts) do
      if alert_matches(a, tr.alert) then return true, a.name end
    end
    return false, nil
  end
  local win = tr.window
  if not cache[win] then cache[win] = self:signals(now, win) or false end
  local sig = cache[win]
  if not sig then return nil end
  if tr.kind == "restarts" then
    local n = sig.canary.restarts
    if n == nil then return nil end
    return n >= tr.restarts, n
  elseif tr.kind == "check" then
    local ok, res, value = budgeted(M.CHECK_BUDGET, tr.check, sig, observe.view(self))
    local st = self.trig[tr.name]
    if not ok then
      st.errors = (st.errors or 0) + 1
      self:emit("trigger_error", { trigger = tr.name, error = tostring(res), consecutive = st.errors,
        limit = M.TRIGGER_ERROR_LIMIT })
      return nil
    end
    st.errors = nil
    if res == nil then return nil end
    return res and true or false, value
  end
  local c = tr.condition
  local v = sig[c.version][c.signal]
  if v == nil then return nil end
  return compare(v, c.op, c.value), v
end

--- A trigger's condition as text, for every kind: "error_rate > 5%", "alert severity=critical",
--- "restarts >= 3 within 300s", "check".
function M.trigger_text(tr)
  if tr.condition then return tr.condition.text end
  if tr.kind == "alert" then
    local m = {}
    for k, v in pairs(tr.alert or {}) do m[#m + 1] = tostring(k) .. "=" .. tostring(v) end
    table.sort(m)
    return "alert " .. (#m > 0 and table.concat(m, ",") or "(any)")
  end
  if tr.kind == "restarts" then return string.format("restarts >= %s within %gs", tostring(tr.restarts), tr.within or 0) end
  return tr.description or "check"
end

function E:evaluate_triggers(now, cache, only_kind)
  local alerts, aerr = self:collect_alerts(now)
  if aerr then alerts = nil end -- a failed alert query is no data, never "no alerts"
  for _, tr in ipairs(self.pb.triggers) do
    if only_kind and tr.kind ~= only_kind then goto next_trigger end
    local st = self.trig[tr.name]
    local cond, value = self:trigger_value(tr, now, cache, alerts)
    if cond == nil then
      if st.since then self:emit("trigger_reset", { trigger = tr.name, why = "no data" }) end
      st.since, st.state = nil, "nodata"
    elseif cond then
      if not st.since then
        st.since = now
        self:emit("trigger_pending", { trigger = tr.name, value = value, condition = M.trigger_text(tr), ["for"] = tr.duration,
          signal = tr.condition and tr.condition.signal })
      end
      st.state, st.value = "pending", value
      if now - st.since >= tr.duration - 1e-9 then
        st.state = "firing"
        self:emit("trigger_fired", { trigger = tr.name, value = value, held = now - st.since, ["for"] = tr.duration,
          condition = M.trigger_text(tr), signal = tr.condition and tr.condition.signal })
        self:interrupt({ action = "rollback", reason = "trigger:" .. tr.name, value = value })
        return
      end
    else
      if st.since then self:emit("trigger_resolved", { trigger = tr.name, value = value }) end
      st.since, st.state, st.value = nil, "ok", value
    end
    ::next_trigger::
  end
end

function E:check_share(sig)
  local w = self.weights.canary
  local b, c = sig.baseline.rps, sig.canary.rps
  if not (b and c) or b + c <= 0 or w <= 0 or w >= 100 then return end
  -- right after a shift the window still holds traffic of the previous weight
  if not self.stage_start or rollout.now() - self.stage_start < self.pb.trigger_window then return end
  local want = w / 100
  -- too few requests to tell a share from noise: expect at least 100 canary requests
  if (b + c) * self.pb.trigger_window * want < 100 then return end
  local share = c / (b + c)
  if math.abs(share - want) / want > self.pb.policy.share_tolerance then
    self:emit("share_warning", { weight = w, share = share * 100 })
  end
end

--- One evaluation: sample every source, then triggers (docs/semantics.md "Triggers").
function E:tick()
  -- evaluate on the grid (the scheduled time), not the instant the loop got here: a tick
  -- a millisecond late must not make a 2 s `for` read 1.999 s, nor a 3 s window hold 4
  -- records. A tick that fell behind by a whole interval starts a new grid.
  local actual = rollout.now()
  local step = self.pb.interval
  local now = self.next_tick
  if actual - now >= step then now = actual end
  self.last_tick = now
  self.next_tick = now + step
  local err
  for _, src in ipairs(self.sources) do
    if src.tick then
      local ok, e = src:tick(now)
      if not ok then err = err or e or "source error" end
    end
  end
  local cache = {}
  local sig
  if not err then
    sig, err = self:signals(now, self.pb.trigger_window)
    cache[self.pb.trigger_window] = sig
  end
  if not sig then
    self.consecutive_errors = self.consecutive_errors + 1
    self:emit("source_error", { error = err, consecutive = self.consecutive_errors })
    self:reset_triggers("source error")
    -- alerts come from their own source: a metrics outage must not blind critical_alert
    self:evaluate_triggers(now, { [self.pb.trigger_window] = false }, "alert")
    if self.consecutive_errors > self.pb.policy.consecutive_error_limit then
      self:interrupt({ action = self.pb.policy.inconclusive, reason = "inconclusive:source_errors",
        detail = self.consecutive_errors .. " failed evaluations in a row" })
    end
    return
  end
  self.consecutive_errors = 0
  self.last_signals = sig
  self:emit("evaluation", { weight = self.weights.canary, window = self.pb.trigger_window, baseline = compact(sig.baseline), canary = compact(sig.canary) })
  if self.pb.policy.share_tolerance then self:check_share(sig) end
  self:evaluate_triggers(now, cache)
  if self.state == "stage" or self.state == "paused" then safety.readback(self) end
end

-- ---- hooks --------------------------------------------------------------------------------

function E:hook_ctx(extra)
  local ctx = {
    service = self.pb.service, versions = self.pb.versions, weights = self.weights,
    stage = self.stage and self.stage.name, simulate = self.env.simulate, engine = observe.view(self), -- read-only when observe-only
    signals = function() return self.last_signals end,
    log = function(msg) self:emit("log", { message = tostring(msg) }) end,
    -- ask every metric source once, as an evaluation does: {{name=, ok=, detail=}, ...}
    check_sources = function() return safety.check_sources(self.sources, rollout.now(), self.pb.trigger_window) end,
  }
  for k, v in pairs(extra or {}) do ctx[k] = v end
  return ctx
end

local function run_argv(argv, timeout)
  local proc = require("rollout.proc")
  local r, err = proc.run({ argv = argv, timeout = timeout })
  if not r then error(err, 0) end
  if r.code ~= 0 then
    error(string.format("%s exited with %s: %s", argv[1], tostring(r.code), (r.stderr or ""):sub(1, 300)), 0)
  end
  return true
end

--- Run a hook as a task while ticks go on. Returns true | false, err | nil, interrupt.
function E:run_hook(name, extra, opts)
  local fn = self.pb.hooks[name]
  if not fn then return true end
  if self.observe then
    self:emit("hook_skipped", { hook = name, reason = "observe" })
    return true
  end
  if self.env.simulate and not self.env.run_hooks then
    self:emit("hook_skipped", { hook = name, reason = "simulation" })
    return true
  end
  opts = opts or {}
  if not opts.uninterruptible then -- a hook acts too: not without a record
    local held = self:await_record()
    if held then return nil, held end
  end
  self:emit("hook_started", { hook = name })
  local t0 = rollout.now()
  local ctx = self:hook_ctx(extra)
  local hb = self.pb.hook_budget or {}
  local timeout = math.min(opts.timeout or math.huge, hb.time or self.pb.hook_timeout or M.HOOK_BUDGET.time)
  local limits = { seconds = timeout, instructions = hb.instructions or M.HOOK_BUDGET.instructions }
  local task = rollout.spawn(function()
    -- preemptible: a hook stuck in a loop yields to the loop every 10 ms, so triggers and
    -- the control socket go on and the timeout below can cancel it; a runaway (instructions,
    -- time, memory: rollout.budget, rollout.alloc) fails this hook only. Its error is returned,
    -- not raised: a task failing unwatched would print it raw on stderr (unredacted).
    local r = table.pack(pcall(function()
      if type(fn) == "table" then return run_argv(fn, timeout) end
      return require("rollout.budget").run(require("rollout.alloc").run, limits, fn, hb.memory or M.HOOK_BUDGET.memory, ctx)
    end))
    if not r[1] then return false, r[2] end
    return table.unpack(r, 2, r.n)
  end)
  local me = rollout.current()
  local watcher = rollout.spawn(function() pcall(task.wait, task); rollout.wake(me) end)
  self.hook_running = { name = name, task = task, watcher = watcher, t0 = t0 } -- fail_safe stops it
  local deadline = t0 + timeout
  while true do
    local st = task:state()
    if st == "done" or st == "failed" or st == "cancelled" then break end
    if not opts.uninterruptible and not opts.no_cancel then -- no_cancel: past the point of no return (rollout.no_return)
      local intr = self:take_interrupt()
      if intr and (intr.action == "rollback" or intr.action == "pause" or intr.action == "abort") then
        task:cancel("interrupted: " .. tostring(intr.reason))
        watcher:cancel()
        self:emit("hook_cancelled", { hook = name, why = intr.reason, elapsed = rollout.now() - t0 })
        return nil, intr
      elseif intr then
        self.deferred = intr -- resume/promote while a hook runs: act on it afterwards
      end
    end
    local now = rollout.now()
    if now >= deadline then
      task:cancel("timeout")
      watcher:cancel()
      self:emit("hook_failed", { hook = name, error = "timed out after " .. timeout .. " s" })
      return false, "hook " .. name .. " timed out"
    end
    local wake = deadline
    if self.ticking and self.next_tick < wake then wake = self.next_tick end
    rollout.suspend(math.max(0, wake - now))
    if self.ticking and rollout.now() >= self.next_tick - 1e-9 then self:tick() end
    if self.override then self:apply_override() end
  end
  watcher:cancel()
  local st, a, b = task:result()
  if st == "done" and a ~= false then
    self:emit("hook_finished", { hook = name, elapsed = rollout.now() - t0 })
    return true
  end
  local err = st == "done" and tostring(b or "returned false") or tostring(a)
  if err:find("budget exceeded", 1, true) then err = "hook " .. name .. ": " .. err end
  self:emit("hook_failed", { hook = name, error = err, elapsed = rollout.now() - t0 })
  return false, err
end

--- A hook that a pause may interrupt: the hook is cancelled, the rollout pauses, and on
--- resume the hook runs again from the start (hooks should be idempotent). Returns what
--- run_hook returns; a pause ends in an interrupt only if resume never comes.
function E:run_hook_pausable(name, extra)
  while true do
    local ok, intr = self:run_hook(name, extra)
    if ok ~= nil or intr.action ~= "pause" then return ok, intr end
    local state = self.state
    local after = self:pause(intr.reason)
    if after then return nil, after end
    self.state = state
  end
end

-- ---- traffic ------------------------------------------------------------------------------

function E:shift(weight, extra)
  if self.observe then return observe.shift(self, weight, extra) end
  -- a rollback that is already asked for (a signal, an abort) comes before any shift
  if self.pending and self.pending.action == "rollback" then
    return nil, "a rollback is pending", self:take_interrupt()
  end
  local w = { baseline = 100 - weight, canary = weight }
  self:emit("weight_requested", { baseline = w.baseline, canary = w.canary, by = extra and extra.by })
  local intr = self:await_record()
  if intr then return nil, "interrupted while the journal was unwritable", intr end
  local ok, err = self.router:set_weights(w, { attempts = 3 })
  if not ok then
    self:emit("weight_failed", { baseline = w.baseline, canary = w.canary, error = err })
    return nil, err
  end
  self.weights = w
  self:emit("weight_confirmed", { baseline = w.baseline, canary = w.canary })
  return true
end

--- After a restart: read the router's weights back; re-apply the last confirmed ones if
--- they differ (a proxy restarted with its config weights meanwhile).
function E:reverify(weight)
  if self.observe then observe.read(self, "resume"); return true end
  local want = { baseline = 100 - weight, canary = weight }
  local got, err = self.router:get_weights()
  self:emit("weights_read_back", { want = want, got = got, error = err })
  if got and got.baseline == want.baseline and got.canary == want.canary then
    self.weights = want
    return true
  end
  self:emit("weights_reapplied", { want = want, got = got })
  local intr = self:await_record()
  if intr then return nil, "interrupted while the journal was unwritable", intr end
  local ok, serr = self.router:set_weights(want, { attempts = 3 })
  if not ok then
    self:emit("weight_failed", { baseline = want.baseline, canary = want.canary, error = serr })
    return nil, serr
  end
  self.weights = want
  self:emit("weight_confirmed", { baseline = want.baseline, canary = want.canary })
  return true
end

-- ---- preflight and baseline ---------------------------------------------------------------

local function check_status(a, b)
  if a == true or a == "pass" then return "pass", b end
  if a == false or a == "fail" then return "fail", b end
  if a == "skip" or a == nil then return "skip", b end
  return "fail", "check returned " .. tostring(a)
end

function E:run_check(check)
  if self.env.simulate then
    local o = self.env.preflight and self.env.preflight[check.name]
    return o or "pass", o and "scenario" or "simulated"
  end
  if check.skip then return "skip", check.skip end
  if check.run then
    -- a pre-flight check is playbook code too: under the hook budget, bounded by its timeout
    local hb = self.pb.hook_budget or {}
    local ok, a, b = budgeted({ instructions = hb.instructions or M.HOOK_BUDGET.instructions,
      time = check.timeout or 60, memory = hb.memory or M.HOOK_BUDGET.memory }, check.run, self:hook_ctx({ check = check.name }))
    if not ok then return "fail", tostring(a) end
    return check_status(a, b)
  end
  if check.http then
    local http = require("rollout.http")
    local r, err = http.request({ method = "GET", url = check.http, timeout = check.timeout or 5 })
    if not r then return "fail", err end
    local want = check.expect_status
    if (want and r.status ~= want) or (not want and (r.status < 200 or r.status > 299)) then
      return "fail", check.http .. " answered " .. r.status
    end
    return "pass", check.http .. " answered " .. r.status
  end
  if check.command then
    local ok, err = pcall(run_argv, check.command, check.timeout or 60)
    if ok then return "pass", table.concat(check.command, " ") end
    return "fail", tostring(err)
  end
  return "skip", "nothing to run"
end

function E:preflight()
  self.state = "preflight"
  local failed, counts, skipped = nil, { pass = 0, fail = 0, skip = 0 }, {}
  for _, check in ipairs(self.pb.preflight) do
    local status, detail = self:run_check(check)
    -- policy.preflight_skips = "fail": the runbook's `set -e`, a check that could not run fails
    if status == "skip" and self.pb.policy.preflight_skips == "fail" then
      status, detail = "fail", "skipped (" .. tostring(detail) .. ") and policy.preflight_skips = \"fail\""
    end
    counts[status] = counts[status] + 1
    self:emit("preflight_check", { check = check.name, status = status, detail = detail })
    if status == "skip" then skipped[#skipped + 1] = check.name end
    if status == "fail" and not failed then failed = check.name end
  end
  self:emit("preflight_done", { passed = counts.pass, failed = counts.fail, skipped = counts.skip,
    skipped_checks = #skipped > 0 and skipped or nil })
  self.preflight_skipped = #skipped > 0 and skipped or nil
  return failed
end

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

-- ---- gates --------------------------------------------------------------------------------

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
            local pstatus, evidence = require("rollout.analysis").proportion_check(pb, t, sig.canary, limit, look)
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
    if (self.trig[tr.name].errors or 0) >= M.TRIGGER_ERROR_LIMIT then
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
    local verdict, jwhy = require("rollout.analysis").gate(self, stage)
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

-- ---- stages -------------------------------------------------------------------------------

-- Returns nil when the stage passed, or an interrupt to act on.
function E:run_stage(stage, resume)
  self.stage = stage
  self.state = "stage"
  local ok, intr
  if resume then
    -- after a crash: the stage's weight was confirmed before; make sure it still is, and
    -- continue the hold with the time that was left
    self:emit("stage_resumed", { index = stage.index, weight = stage.weight, held = resume.held, hold = stage.hold })
    local last = resume.last_confirmed
    local ok2, err2, intr2 = self:reverify(last and last.canary or stage.weight)
    if intr2 then return intr2 end
    if not ok2 then return { action = "rollback", reason = "error:router", detail = err2 } end
    if resume.paused then -- an operator's pause outlives a crash; triggers watch meanwhile
      self.ticking = true
      self.next_tick = rollout.now() + self.pb.interval
      local after = self:pause(resume.paused)
      if after then return after end
    end
    self.stage_start = rollout.now() - (resume.held or 0)
  else
    self:emit("stage_entered", { index = stage.index, weight = stage.weight, hold = stage.hold })
    ok, intr = self:run_hook_pausable("before_stage", { stage_index = stage.index })
    if ok == nil then return intr end
    if ok == false then return { action = "rollback", reason = "error:hook:before_stage", detail = intr } end
    local shifted, err, intr2 = self:shift(stage.weight)
    if intr2 then return intr2 end
    if not shifted then return { action = "rollback", reason = "error:router", detail = err } end
    self.stage_start = rollout.now()
  end
  self.paused_in_stage = 0
  -- evaluations on the stage's own grid: stage start + k * interval
  local step = self.pb.interval
  self.ticking = true
  self.next_tick = self.stage_start + (math.floor((rollout.now() - self.stage_start) / step + 1e-9) + 1) * step
  local deadline = self.stage_start + stage.hold
  while true do
    local got = self:wait_until(deadline)
    if got and got.action == "pause" then
      local paused_at = rollout.now()
      local after = self:pause(got.reason)
      if after then return after end
      local paused = rollout.now() - paused_at
      deadline = deadline + paused -- the hold resumes with the time left
      self.paused_in_stage = (self.paused_in_stage or 0) + paused
      got = nil
    elseif got and got.action == "resume" then
      got = nil -- not paused: nothing to resume
    end
    if got then
      if got.action == "promote" then self:emit("stage_skipped", { by = got.who or "operator" }); break end
      return got
    end
    if rollout.now() < deadline then goto continue end
    local result, why = self:evaluate_gate(stage)
    if result == "pass" then break end
    if result == "fail" then return { action = "rollback", reason = "gate:" .. why } end
    if result == "inconclusive" then
      return { action = self.pb.policy.inconclusive, reason = "inconclusive:" .. why }
    end
    deadline = math.min(rollout.now() + self.pb.interval, self.stage_start + (self.paused_in_stage or 0) + stage.max_hold)
    self:emit("hold_extended", { why = why, until_held = deadline - self.stage_start, max_hold = stage.max_hold })
    ::continue::
  end
  ok, intr = self:run_hook_pausable("after_stage", { stage_index = stage.index })
  if ok == nil then return intr end
  if ok == false then return { action = "rollback", reason = "error:hook:after_stage", detail = intr } end
  if stage.pause then
    return self:pause("manual_gate", true)
  end
  return nil
end

--- Pause: wait for an operator (resume/promote/abort) while triggers keep watching.
--- Returns nil to carry on, or an interrupt. Non-interactive runs end here ("paused").
function E:pause(reason, manual_gate)
  self.state = "paused"
  self:emit("paused", { reason = reason })
  self.pause_reason = reason
  if not self.env.interactive then return { action = "stop_paused", reason = reason } end
  self:run_hook("on_pause")
  while true do
    if not self.env.interactive then return { action = "stop_paused", reason = self.pause_reason } end
    local intr = self:wait_until(math.huge)
    if intr.action == "pause" and not self.env.interactive then
      return { action = "stop_paused", reason = intr.reason }
    elseif intr.action == "resume" or intr.action == "promote" then
      if manual_gate and intr.action == "resume" then
        self:emit("manual_gate_waiting", { detail = "a manual gate needs promote" })
      else
        self.state = "stage"
        self:emit("resumed", { by = intr.who or "operator" })
        self:run_hook("on_resume")
        return nil
      end
    elseif intr.action == "promote_full" or intr.action == "rollback" or intr.action == "retry"
      or intr.action == "stop_paused" then
      if intr.action == "retry" then self.state = "stage" end
      return intr
    end
  end
end

-- ---- outcomes -----------------------------------------------------------------------------

function E:finish(outcome, reason, at)
  -- a run that ends failed or aborted sends nobody to the canary by header
  -- (not when the router just failed to answer within max_rollback_time: that bound holds)
  if (outcome == "failed" or outcome == "aborted") and self.override_on and reason ~= "error:rollback_unconfirmed"
    and reason ~= "error:header_override" then
    safety.remove_override(self)
  end
  -- a promotion (canary or blue-green) ends the override after finalize; unconfirmed: failed
  if outcome == "promoted" and self.override_on and not safety.remove_override(self) then
    outcome, reason = "failed", "error:header_override"
  end
  self.state = outcome
  self.outcome = { outcome = outcome, reason = reason, at = at or self:elapsed(), stage = self.stage and self.stage.name,
    observe = self.observe, preflight_skipped = self.preflight_skipped }
  self:emit("outcome", { outcome = outcome, reason = reason, at = self.outcome.at, observe = self.observe,
    preflight_skipped = self.preflight_skipped })
  return self.outcome
end

function E:rollback(intr)
  if self.observe then return observe.rollback(self, intr) end
  self.state = "rolling_back"
  self.ticking = false
  self:emit("rollback_started", { reason = intr.reason, detail = intr.detail, value = intr.value })
  -- max_rollback_time bounds the whole rollback: router calls, retries, the override and the hook
  local deadline = rollout.now() + self.pb.max_rollback_time
  local attempt, backoff = 0, 0.5
  while true do
    attempt = attempt + 1
    local stop = self:await_record()
    if stop and stop.action == "stop_paused" then return self:finish("paused", "journal unwritable") end
    local ok, err = nil, "max_rollback_time spent"
    local left = deadline - rollout.now()
    if left > 0 then
      ok, err = self.router:set_weights({ baseline = 100, canary = 0 }, { attempts = 1, rollback = true, deadline = left })
    end
    self:emit("rollback_attempt", { attempt = attempt, ok = ok and true or false, error = err })
    if ok then break end
    left = deadline - rollout.now()
    if left <= 0 then
      -- the journal holds what the proxy last said, not what we wished it said
      local seen = safety.last_read(self)
      self:emit("rollback_unconfirmed", { attempts = attempt, error = err, max_rollback_time = self.pb.max_rollback_time,
        read_back = seen and seen.weights, read_back_ts = seen and seen.at })
      return self:finish("failed", "error:rollback_unconfirmed")
    end
    rollout.sleep(math.min(backoff, left))
    backoff = math.min(backoff * 2, 10)
  end
  self.weights = { baseline = 100, canary = 0 }
  self:emit("weight_confirmed", { baseline = 100, canary = 0 })
  local at = self:elapsed()
  local hok = safety.remove_override(self, deadline)
  local left = deadline - rollout.now()
  if left > 0 then
    self:run_hook("on_rollback", { reason = intr.reason }, { uninterruptible = true, timeout = left })
  elseif self.pb.hooks.on_rollback then
    self:emit("hook_failed", { hook = "on_rollback", error = "not run: max_rollback_time spent" })
  end
  if not hok then return self:finish("failed", "error:header_override") end
  self:emit("rolled_back", { reason = intr.reason, at = at })
  return self:finish("rolled_back", intr.reason, at)
end

--- Finalize removes the baseline: it never runs unless the router confirms, by reading the
--- weights back, that the canary has 100 %. true | false, why
function E:confirm_full()
  if self.weights.canary ~= 100 then
    return false, string.format("the last confirmed weights are baseline %s%% / canary %s%%, not 100 %% canary",
      tostring(self.weights.baseline), tostring(self.weights.canary))
  end
  local got, err = self.router:get_weights()
  if not got then return false, "read-back failed: " .. tostring(err) end
  if got.canary ~= 100 or got.baseline ~= 0 then
    return false, string.format("the router serves baseline %s%% / canary %s%%", tostring(got.baseline), tostring(got.canary))
  end
  return true
end

function E:promote()
  local full, why = true, nil
  if not self.observe then full, why = self:confirm_full() end -- observe-only: no finalize anyway
  if not full then
    -- paused, not promoted: an operator promotes (promote --full shifts to 100 % first) or aborts
    self:emit("promotion_refused", { why = why, weights = { baseline = self.weights.baseline, canary = self.weights.canary } })
    local intr = self:pause("promotion_unconfirmed: " .. why)
    if intr then return self:handle(intr) end
    return self:promote()
  end
  local strategy = strategies[self.pb.strategy]
  if strategy then return strategy.promote(self) end -- blue-green: its own promotion, after the same check
  self.state = "promoting"
  self:emit("promoting", {})
  local ok, intr = self:run_hook_pausable("on_promote")
  if ok == nil then return self:handle(intr) end
  if ok == false then return self:finish("failed", "error:hook:on_promote") end
  local held = no_return.require_full(self, "finalize") -- the router, right before the baseline goes
  if held then return held end
  ok, intr = no_return.final_hook(self, "finalize")
  if ok == nil then return intr end
  if ok == false then return self:finish("failed", "error:hook:finalize") end
  self.ticking = false
  return self:finish("promoted", nil) -- (finish removes the header override first)
end

-- Act on an interrupt that ended a stage. Returns an outcome, or nil to carry on.
function E:handle(intr)
  if intr.action == "rollback" then return self:rollback(intr) end
  if intr.action == "retry" then
    self:emit("stage_retry", { by = intr.who or "operator" })
    return nil, "retry"
  end
  if intr.action == "stop_paused" then
    local grace = self.stop_grace
    self.stop_grace = nil
    if grace then -- a second Ctrl-C within the grace rolls back: still one outcome (triggers watch meanwhile)
      local again = self:wait_until(rollout.now() + grace)
      if again and again.action == "rollback" then return self:rollback(again) end
    end
    return self:finish("paused", intr.reason)
  end
  if intr.action == "pause" then
    local again = self:pause(intr.reason)
    if again then return self:handle(again) end
    return nil
  end
  if intr.action == "promote_full" then
    self:emit("promote_full", { by = intr.who or "operator" })
    local ok, err, intr2 = self:shift(100)
    if intr2 then return self:handle(intr2) end
    if not ok then return self:rollback({ reason = "error:router", detail = err }) end
    return self:promote()
  end
  return nil
end

--- run_protected() -> outcome: run() with any error turned into outcome `failed` (the one
--- entry point for real runs). The error and its traceback are journaled (`engine_error`),
--- traffic is sent to the baseline and confirmed by read-back where the router still
--- answers (else the journal's last weight_confirmed is where traffic is), then the outcome.
function E:run_protected()
  local ok, res = xpcall(E.run, debug.traceback, self)
  if ok then return res end
  return self:fail_safe(res)
end

function E:fail_safe(trace)
  local msg = tostring(trace):match("^[^\n]*") or tostring(trace)
  self.ticking = false
  pcall(self.emit, self, "engine_error", { error = msg, traceback = tostring(trace), state = self.state })
  local h = self.hook_running -- an error while a hook ran: the hook is stopped, and the journal says so
  if h and h.task:state() ~= "done" and h.task:state() ~= "failed" and h.task:state() ~= "cancelled" then
    pcall(h.task.cancel, h.task, "engine_error")
    pcall(h.watcher.cancel, h.watcher)
    pcall(self.emit, self, "hook_cancelled", { hook = h.name, why = "engine_error", elapsed = rollout.now() - h.t0 })
  end
  if self.outcome then return self.outcome end -- the error came after the outcome: that stands
  self.state = "failed"
  if self.observe then -- observe-only: never a weight, not even now
    local fok, out = pcall(self.finish, self, "failed", "error:internal")
    if fok then return out end
    self.outcome = { outcome = "failed", reason = "error:internal", at = self:elapsed() }
    return self.outcome
  end
  local w = { baseline = 100, canary = 0 }
  pcall(self.emit, self, "weight_requested", { baseline = 100, canary = 0, by = "engine_error" })
  local pok, ok, err = pcall(self.router.set_weights, self.router, w,
    { deadline = self.pb.max_rollback_time, rollback = true })
  if pok and ok then
    self.weights = w
    pcall(self.emit, self, "weight_confirmed", { baseline = 100, canary = 0 })
  else
    pcall(self.emit, self, "weight_failed", { baseline = 100, canary = 0, error = tostring(pok and err or ok) })
  end
  local fok, out = pcall(self.finish, self, "failed", "error:internal")
  if fok then return out end
  self.outcome = { outcome = "failed", reason = "error:internal", at = self:elapsed() }
  return self.outcome
end

--- run() -> {outcome=, reason=, at=, stage=}
function E:run()
  self.task = rollout.current()
  self.t0 = rollout.now()
  if self.env.resume then return self:run_resumed(self.env.resume) end
  local pb = self.pb
  self:emit("rollout_started", { playbook = pb.file, service = pb.service, who = self.env.who,
    baseline = pb.versions.baseline.version, canary = pb.versions.canary.version, stages = #pb.stages,
    simulate = self.env.simulate or nil, commit_time = pb.commit_time, deployment_id = pb.deployment_id,
    observe = self.observe, strategy = pb.strategy })
  if self.observe then observe.read(self, "start") end
  local failed = self:preflight()
  if failed and self.observe then
    self:emit("log", { message = "observe-only: pre-flight check " .. failed .. " failed; a real run would abort here" })
  elseif failed then return self:finish("aborted", "preflight:" .. failed) end
  self.state = "deploy"
  local ok, err = self:run_hook_pausable("deploy")
  if ok == nil then return self:handle(err) end -- interrupted (a signal, an abort): as anywhere else
  if not ok then return self:finish("failed", "error:deploy", nil, err) end
  local serr = safety.await_sources(self) -- no shift before every source has answered once
  if serr then return self:finish("aborted", "error:sources") end
  self:capture_baseline()
  if pb.header_override and self.router.header_override and not self.observe then
    self.override_on = true -- removed on rollback, abort, failure and after finalize
    local hok, herr = self.router:header_override(pb.header_override)
    self:emit("header_override", { name = pb.header_override.name, value = pb.header_override.value, ok = hok and true or false, error = herr })
  end
  return self:run_stages(1)
end

--- The stages from `first` on (the first one continuing `resume`, if given), then promote.
--- A `retry` runs the current stage again from its start.
function E:run_stages(first, resume)
  local pb = self.pb
  local i = first
  while i <= #pb.stages do
    local intr = self:run_stage(pb.stages[i], resume)
    resume = nil
    if not intr and self.deferred then intr, self.deferred = self.deferred, nil end
    local again
    if intr then
      local outcome
      outcome, again = self:handle(intr)
      if outcome then return outcome end
    end
    if again ~= "retry" then i = i + 1 end
  end
  return self:promote()
end

--- Continue a rollout from a journal's state (rollout.journal.replay):
--- resume = {stage_index=, held=, elapsed=, baseline_snapshot=, phase = "stage"|"rolling_back"|"promoting", reason=}
function E:run_resumed(r)
  local pb = self.pb
  self.t0 = rollout.now() - (r.elapsed or 0)
  self.baseline_snapshot = r.baseline_snapshot
  if r.last_confirmed then -- what the journal says traffic is at, until a read-back says more
    self.weights = { baseline = r.last_confirmed.baseline, canary = r.last_confirmed.canary }
  end
  -- t runs on the engine's clock: seconds some engine was running this rollout. The time no
  -- engine ran (a crash until --resume) is not in t; it is `down` here (wall clock).
  local down = (not self.env.simulate and r.last_ts) and math.max(0, rollout.time() - r.last_ts) or nil
  self:emit("rollout_resumed", { phase = r.phase, stage_index = r.stage_index, held = r.held, who = self.env.who,
    down = down })
  if r.phase == "rolling_back" then
    self.stage = r.stage_index and pb.stages[r.stage_index] or nil
    return self:rollback({ reason = r.reason or "resumed rollback" })
  end
  if r.phase == "promoting" then
    self.stage = pb.stages[#pb.stages]
    local ok, err, intr = self:reverify(100) -- also completes a promote --full cut short
    if intr then return self:handle(intr) end
    if not ok then return self:rollback({ reason = "error:router", detail = err }) end
    return self:promote()
  end
  return self:run_stages(r.stage_index or 1, r.stage_confirmed and r or nil)
end

M.Engine = E
return M

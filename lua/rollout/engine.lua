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
--
-- The engine is one class, E, written in parts (mixin style): this file holds the state
-- machine (run, stages, pause, handle, rollback, promote, finish, commands, wait_until,
-- tick); each part in lua/rollout/engine/ returns M.methods, which this file installs on E,
-- and states its own error policy: signals (merged source signals, compact), triggers,
-- hooks (and budgeted playbook code), preflight, gate (gates, baseline capture), traffic
-- (shift, read-back, set weight, share). The parts never require rollout.engine.
local rollout = require("rollout")
local datetime = require("rollout.datetime")
local observe = require("rollout.observe")
local no_return = require("rollout.no_return")
local strategies = { blue_green = require("rollout.strategies.blue_green") } -- canary is this file
local safety = require("rollout.safety")
local signals = require("rollout.engine.signals")
local triggers = require("rollout.engine.triggers")
local hooks = require("rollout.engine.hooks")
local preflight = require("rollout.engine.preflight")
local gate = require("rollout.engine.gate")
local traffic = require("rollout.engine.traffic")
local exit = require("rollout.exit")

local compact = signals.compact

local M = {}
local E = {}
E.__index = E

-- Every outcome a rollout ends in (the summary's and the journal's `outcome`), the one list:
-- EXIT, rollout.verify's expect.outcome and rollout.journal's TERMINAL derive from it.
M.OUTCOMES = { "promoted", "rolled_back", "paused", "aborted", "failed" }
M.EXIT = {} -- the process exit code of each, from rollout.exit: 0 promoted, 1 rolled back, 3 otherwise
for _, o in ipairs(M.OUTCOMES) do M.EXIT[o] = exit.OUTCOME[o] end
M.HOOK_BUDGET = hooks.HOOK_BUDGET -- what a hook may spend (rollout.engine.hooks)
M.CHECK_BUDGET = triggers.CHECK_BUDGET -- what a trigger's check may spend per evaluation
M.TRIGGER_ERROR_LIMIT = triggers.TRIGGER_ERROR_LIMIT -- check errors in a row: no gate passes
M.compact = compact
M.trigger_text = triggers.trigger_text

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

--- deployment_id() -> the rollout's id (the playbook's deployment_id, else
--- "<service>-canary-<UTC start>"): the one its notifications name, kept across a resume.
function E:deployment_id()
  return datetime.deployment_id(self.pb.service, self.started_ts or rollout.time(), self.pb.deployment_id)
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
  local started = self:emit("rollout_started", { playbook = pb.file, service = pb.service, who = self.env.who,
    baseline = pb.versions.baseline.version, canary = pb.versions.canary.version, stages = #pb.stages,
    simulate = self.env.simulate or nil, commit_time = pb.commit_time, deployment_id = pb.deployment_id,
    observe = self.observe, strategy = pb.strategy })
  self.started_ts = started.ts or rollout.time() -- the wall clock the deployment id is made of
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
  self.started_ts = r.started_ts or (rollout.time() - (r.elapsed or 0)) -- the start it continues
  if r.last_confirmed then -- what the journal says traffic is at, until a read-back says more
    self.weights = { baseline = r.last_confirmed.baseline, canary = r.last_confirmed.canary }
  end
  -- t runs on the engine's clock: seconds some engine was running this rollout. The time no
  -- engine ran (a crash until --resume) is not in t; it is `down` here (wall clock).
  local down = (not self.env.simulate and r.last_ts) and math.max(0, rollout.time() - r.last_ts) or nil
  -- started/deployment_id: the rollout keeps the identity it started with (notifications
  -- after a resume or a takeover name the same deployment)
  self:emit("rollout_resumed", { phase = r.phase, stage_index = r.stage_index, held = r.held, who = self.env.who,
    down = down, started = r.started_ts, deployment_id = r.deployment_id })
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

for _, part in ipairs({ signals, triggers, hooks, preflight, gate, traffic }) do
  for name, fn in pairs(part.methods) do
    assert(E[name] == nil, "rollout.engine: E:" .. name .. " is defined twice")
    E[name] = fn
  end
end

M.Engine = E
return M

-- rollout.engine.hooks: running playbook code — hooks as their own tasks while the ticks go
-- on (cancelled by a rollback or pause, bounded by HOOK_BUDGET or the playbook's
-- hook_budget), argv commands, and budgeted() calls for trigger and pre-flight checks. Part of
-- the engine class (rollout.engine installs M.methods on it).
--
-- Error policy: a hook's failure never raises into the engine. E:run_hook returns true,
-- false, err (journaled `hook_failed`: it raised, returned false, timed out or overran its
-- budget) or nil, interrupt (journaled `hook_cancelled`); the state machine decides what a
-- failure means. budgeted() returns pcall's true, results | false, err. run_argv raises
-- (a failed command is the hook's error) and is only called under pcall.
local rollout = require("rollout")
local budget = require("rollout.budget")
local alloc = require("rollout.alloc")
local proc = require("rollout.proc")
local observe = require("rollout.observe")
local safety = require("rollout.safety")

local M = {}
local E = {}
M.methods = E

-- What a hook may spend unless the playbook's hook_budget says otherwise: VM instructions
-- while it runs, seconds of wall time, bytes its Lua heap may grow by.
M.HOOK_BUDGET = { instructions = 1e9, time = 900, memory = 256 * 1024 * 1024 }

-- fn(...) under a budget (rollout.budget: instructions, seconds; rollout.alloc: memory):
-- true, results | false, err.
function M.budgeted(b, fn, ...)
  return pcall(budget.run, alloc.run,
    { instructions = b.instructions, seconds = b.time }, fn, b.memory, ...)
end

--- run_argv(argv, timeout) -> true: a command that must exit 0; raises its error otherwise.
function M.run_argv(argv, timeout)
  local r, err = proc.run({ argv = argv, timeout = timeout })
  if not r then error(err, 0) end
  if r.code ~= 0 then
    error(string.format("%s exited with %s: %s", argv[1], tostring(r.code), (r.stderr or ""):sub(1, 300)), 0)
  end
  return true
end

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
      if type(fn) == "table" then return M.run_argv(fn, timeout) end
      return budget.run(alloc.run, limits, fn, hb.memory or M.HOOK_BUDGET.memory, ctx)
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

return M

-- rollout: the host API every script gets as the global `rollout`.
-- The scheduler primitives come from C (rollout.core, see src/loop.c); this file adds the
-- helpers built on them. Durations are seconds or strings ("250ms", "5m", "1h30m").
-- Error policy: bad arguments raise; a wait that runs out returns nil, "timeout".
local core = require("rollout.core")
local units = require("rollout.units")

local M = {}
for k, v in pairs(core) do M[k] = v end

-- Compiled in by main.c (-DROLLOUT_VERSION, from git describe or the VERSION file); a
-- harness that embeds the library without main.c (the fuzz targets) has none.
M.version = rawget(package, "rollout_version") or "0.0.0-unknown"
-- The running binary: specs and tools start child rollouts with it (plain or sanitized).
M.exe = require("rollout.fs").realpath("/proc/self/exe")
M.duration = units.duration
M.units = units

--- Sleep for a duration. Under the virtual clock no wall time passes.
function M.sleep(d)
  return core.sleep(units.duration(d))
end

--- Suspend the running task until rollout.wake(task, ...) or the timeout.
function M.suspend(timeout)
  if timeout == nil then return core.suspend() end
  return core.suspend(units.duration(timeout))
end

--- Run fn(...) every `interval`, at a fixed rate (start + k * interval, no drift), until it
--- returns false or the task is cancelled. Returns the task.
function M.every(interval, fn, ...)
  local step = units.duration(interval)
  if step <= 0 then error("every: interval must be > 0", 2) end
  local args = table.pack(...)
  return core.spawn(function()
    local next_at = core.now()
    while true do
      if fn(table.unpack(args, 1, args.n)) == false then return end
      next_at = next_at + step
      local now = core.now()
      if next_at < now then -- fell behind (a long callback): skip missed ticks, keep phase
        next_at = next_at + math.ceil((now - next_at) / step) * step
      end
      core.sleep(next_at - now)
    end
  end)
end

local function wait_timeout(timeout)
  if timeout == nil then return nil end
  return units.duration(timeout)
end

--- Wait for every task; returns a list of table.pack(results) in the same order. The first
--- failure raises (the other tasks keep running). nil, "timeout" when the time runs out.
function M.wait_all(tasks, timeout)
  local t = wait_timeout(timeout)
  local deadline = t and core.now() + t
  local out = {}
  for i, task in ipairs(tasks) do
    local left = deadline and math.max(0, deadline - core.now())
    local r = table.pack(task:wait(left))
    if r.n == 2 and r[1] == nil and r[2] == "timeout" and task:state() ~= "done" then
      return nil, "timeout"
    end
    out[i] = r
  end
  return out
end

--- Wait for the first task to finish; returns its index and table.pack(results), or
--- index, nil, err if it failed. nil, "timeout" when the time runs out.
function M.wait_any(tasks, timeout)
  for i, task in ipairs(tasks) do -- one already finished?
    local state = task:state()
    if state == "done" then return i, table.pack(select(2, task:result())) end
    if state == "failed" or state == "cancelled" then
      local _, err = task:result()
      return i, nil, err or "cancelled"
    end
  end
  local me = core.current()
  if not me then error("wait_any must be called from a task", 2) end
  local watchers = {}
  for i, task in ipairs(tasks) do
    watchers[i] = core.spawn(function()
      local r = table.pack(pcall(task.wait, task))
      core.wake(me, i, r)
    end)
  end
  local i, r
  if timeout == nil then i, r = core.suspend() else i, r = core.suspend(units.duration(timeout)) end
  for _, w in ipairs(watchers) do w:cancel() end
  if i == nil then return nil, "timeout" end
  if r[1] then return i, table.pack(table.unpack(r, 2, r.n)) end
  return i, nil, r[2]
end

--- Run fn(...) as a task and wait at most `timeout` for it; on timeout the task is
--- cancelled (its pending operation released) and nil, "timeout" is returned.
function M.with_timeout(timeout, fn, ...)
  local t = units.duration(timeout)
  local task = core.spawn(fn, ...)
  local r = table.pack(task:wait(t))
  if r.n == 2 and r[1] == nil and r[2] == "timeout" and task:state() ~= "done" then
    task:cancel("timeout")
    return nil, "timeout"
  end
  return table.unpack(r, 1, r.n)
end

return M

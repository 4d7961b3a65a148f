-- core_spec.lua: the scheduler (src/loop.c) and the host API around it (lua/rollout/init.lua,
-- lua/rollout/cli.lua). In-process tests use the real clock; the virtual clock, signals, exit
-- codes and deadlocks are tested on child `rollout` processes (the binary running this spec).
local rollout = require("rollout")
local fs = require("rollout.fs")
local net = require("rollout.net")
local proc = require("rollout.proc")

local ROLLOUT = assert(fs.realpath("/proc/self/exe"))

local function eventually(fn, timeout)
  local deadline = rollout.now() + (timeout or 5)
  while rollout.now() < deadline do
    if fn() then return true end
    rollout.sleep(0.01)
  end
  return fn()
end

local function lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

describe("the scheduler", function()
  it("fires timers in deadline order", function()
    local order, tasks = {}, {}
    for _, d in ipairs({ 0.05, 0.01, 0.04, 0, 0.02, 0.03 }) do
      tasks[#tasks + 1] = rollout.spawn(function()
        rollout.sleep(d)
        order[#order + 1] = d
      end)
    end
    assert(rollout.wait_all(tasks, 2))
    assert.same({ 0, 0.01, 0.02, 0.03, 0.04, 0.05 }, order)
  end)

  it("accepts durations as strings", function()
    local t0 = rollout.now()
    rollout.sleep("30ms")
    assert.ge(rollout.now() - t0, 0.03)
    assert.lt(rollout.now() - t0, 0.5)
    assert.has_error(function() rollout.sleep(-1) end, "negative")
    assert.has_error(function() rollout.sleep("soon") end)
  end)

  it("runs rollout.every at a fixed rate", function()
    local ticks = {}
    local t0 = rollout.now()
    local t = rollout.every(0.05, function()
      ticks[#ticks + 1] = rollout.now() - t0
      rollout.sleep(0.02) -- work inside the tick does not shift the next one
      if #ticks == 6 then return false end
    end)
    t:wait(2)
    assert.equals(6, #ticks)
    for k = 2, 6 do assert.ge(ticks[k], (k - 1) * 0.05 - 0.005, "tick " .. k .. " came early") end
    -- the 20 ms of work per tick does not accumulate: drifting would put tick 6 at >= 0.35 s
    assert.lt(ticks[6], 0.31, "tick 6")
    assert.has_error(function() rollout.every(0, function() end) end, "interval must be > 0")
  end)

  it("waits for all tasks, in order, with failures and timeouts", function()
    local r = assert(rollout.wait_all({
      rollout.spawn(function() rollout.sleep(0.02); return 1 end),
      rollout.spawn(function() return 2, "x" end),
    }))
    assert.same({ { 1, n = 1 }, { 2, "x", n = 2 } }, r)
    assert.has_error(function()
      rollout.wait_all({ rollout.spawn(function() error("failed in all", 0) end) })
    end, "failed in all")
    local slow = rollout.spawn(function() rollout.sleep(1) end)
    assert.same({ nil, "timeout" }, { rollout.wait_all({ slow }, 0.02) })
    slow:cancel()
  end)

  it("waits for any task", function()
    local a = rollout.spawn(function() rollout.sleep(0.2); return "a" end)
    local b = rollout.spawn(function() rollout.sleep(0.02); return "b", 2 end)
    local i, r = rollout.wait_any({ a, b })
    assert.equals(2, i)
    assert.same({ "b", 2, n = 2 }, r)
    local c = rollout.spawn(function() rollout.sleep(0.01); error("bad c", 0) end)
    local i2, r2, err = rollout.wait_any({ a, c })
    assert.equals(2, i2)
    assert.is_nil(r2)
    assert.equals("bad c", err)
    assert.same({ nil, "timeout" }, { rollout.wait_any({ a }, 0.01) })
    assert.equals("a", a:wait(1))
    local i3, r3 = rollout.wait_any({ a, b }) -- already finished
    assert.equals(1, i3)
    assert.same({ "a", n = 1 }, r3)
  end)

  it("runs with a timeout and cancels what runs over", function()
    assert.same({ "done", 3 }, { rollout.with_timeout(1, function(x) rollout.sleep(0.01); return "done", x end, 3) })
    local reached = false
    assert.same({ nil, "timeout" }, { rollout.with_timeout("20ms", function() rollout.sleep(0.1); reached = true end) })
    rollout.sleep(0.15)
    assert.is_false(reached, "the timed-out task kept running")
    assert.has_error(function() rollout.with_timeout(1, function() error("inner", 0) end) end, "inner")
  end)

  it("cancels a sleeping task, closing its to-be-closed variables", function()
    local after, closed = false, false
    local t = rollout.spawn(function()
      local guard <close> = setmetatable({}, { __close = function() closed = true end })
      rollout.sleep(10)
      after = true
      return guard
    end)
    rollout.sleep(0.01)
    assert.equals("waiting", t:state())
    assert.is_true(t:cancel("stopped by spec"))
    assert.equals("cancelled", t:state())
    assert.is_false(t:cancel(), "a second cancel")
    assert.is_true(closed)
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.equals("stopped by spec", err)
    rollout.sleep(0.02)
    assert.is_false(after)
    assert.has_error(function() rollout.current():cancel() end, "cannot cancel itself")
  end)

  it("cancels a task blocked in a net receive and releases its watcher", function()
    local srv = assert(net.listen_tcp("127.0.0.1", 0))
    finally(function() srv:close() end)
    local peer
    local acceptor = rollout.spawn(function() peer = assert(srv:accept(5)) end)
    local c = assert(net.connect_tcp("127.0.0.1", srv:port(), 5))
    acceptor:wait(5)
    local reader = rollout.spawn(function() return c:receive("l") end)
    rollout.sleep(0.02)
    assert.equals("waiting", reader:state())
    assert.is_true(reader:cancel())
    assert(peer:send("hello\n"))
    rollout.sleep(0.02) -- a watcher left behind would fire now, for a dead task
    assert.equals("cancelled", reader:state())
    assert.equals("hello", c:receive("l", 2), "another task reads the conn")
    c:close()
    peer:close()
  end)

  it("re-raises a failed task's error in wait, keeping its value", function()
    local t = rollout.spawn(function() error({ code = 42 }) end)
    local ok, e = pcall(t.wait, t)
    assert.is_false(ok)
    assert.same({ code = 42 }, e)
    local t2 = rollout.spawn(function() error("plain failure") end)
    local ok2, e2 = pcall(t2.wait, t2)
    assert.is_false(ok2)
    assert.matches("core_spec%.lua:%d+: plain failure", e2)
    local state, value, trace = t2:result()
    assert.equals("failed", state)
    assert.equals(e2, value)
    assert.matches("stack traceback", trace)
    assert.has_error(function() t2:wait() end, "plain failure") -- and again
  end)

  it("suspends and wakes tasks with values", function()
    local t = rollout.spawn(function() return rollout.suspend() end)
    rollout.sleep(0)
    assert.equals("waiting", t:state())
    assert.is_true(rollout.wake(t, "v", 2))
    assert.is_false(rollout.wake(t, "again"), "woken twice")
    assert.same({ "v", 2 }, { t:wait() })
    assert.is_false(rollout.wake(t))
    local sleeper = rollout.spawn(function() rollout.sleep(0.05); return "slept" end)
    rollout.sleep(0)
    assert.is_false(rollout.wake(sleeper), "a sleeping task is not suspended")
    assert.equals("slept", sleeper:wait())
    local t2 = rollout.spawn(function() return rollout.suspend("20ms") end)
    assert.same({ nil, "timeout" }, { t2:wait(1) })
  end)

  it("times out task:wait without disturbing the task", function()
    local t = rollout.spawn(function() rollout.sleep(0.05); return "late" end)
    assert.same({ nil, "timeout" }, { t:wait(0.01) })
    assert.equals("late", t:wait(1))
    assert.has_error(function() rollout.current():wait() end, "cannot wait for itself")
  end)
end)

describe("the rollout executable", function()
  local dir
  setup(function() dir = assert(fs.mkdtemp("core-spec")) end)
  teardown(function() fs.rmtree(dir) end)

  local function script(name, src)
    local path = dir .. "/" .. name
    assert(fs.write_atomic(path, src))
    return path
  end

  local function run(args, timeout)
    local argv = { ROLLOUT }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return assert(proc.run{ argv = argv, timeout = timeout or 20 })
  end

  it("simulates an hour of sleeps in well under a second on the virtual clock", function()
    local p = script("hour.lua", [[
      local start, wall = rollout.now(), rollout.time()
      local order, tasks = {}, {}
      for i, d in ipairs({ "30m", "10m", "20m", "10m" }) do
        tasks[i] = rollout.spawn(function() rollout.sleep(d); order[#order + 1] = i end)
      end
      for _ = 1, 60 do rollout.sleep("1m") end
      assert(rollout.wait_all(tasks))
      print(string.format("%.3f %.3f %s", rollout.now() - start, rollout.time() - wall, table.concat(order, ",")))
    ]])
    local r = run({ "--clock=virtual", p })
    assert.equals(0, r.code, r.stderr)
    local now, wall, order = r.stdout:match("^(%S+) (%S+) (%S+)\n$")
    assert.near(3600, tonumber(now), 0.01, "virtual now()")
    assert.near(3600, tonumber(wall), 0.01, "virtual time()")
    assert.equals("2,4,3,1", order, "equal deadlines fire in the order they were set")
    assert.lt(r.time, 1.0, "wall seconds for a virtual hour")
  end)

  it("keeps rollout.every in phase on the virtual clock", function()
    local p = script("every.lua", [[
      local t0, ticks = rollout.now(), {}
      local t = rollout.every("10s", function()
        ticks[#ticks + 1] = string.format("%g", rollout.now() - t0)
        if #ticks == 2 then rollout.sleep(25) -- overruns two ticks: they are skipped
        elseif #ticks < 6 then rollout.sleep(3)
        else return false end
      end)
      t:wait()
      print(table.concat(ticks, " "))
    ]])
    local r = run({ "--clock=virtual", p })
    assert.equals(0, r.code, r.stderr)
    assert.equals("0 10 40 50 60 70\n", r.stdout)
  end)

  it("lets the virtual clock run past a server waiting in accept", function()
    local p = script("idle.lua", [[
      local srv = assert(net.listen_tcp("127.0.0.1", 0))
      local acceptor = rollout.spawn(function() return srv:accept() end)
      local t0 = rollout.now()
      rollout.sleep("1h")
      print(acceptor:state(), rollout.now() - t0)
    ]])
    local r = run({ "--clock=virtual", p }, 10)
    assert.equals(0, r.code, r.stderr)
    assert.matches("^waiting\t3600", r.stdout)
    assert.lt(r.time, 2.0)
  end)

  it("delivers SIGTERM to a script waiting for it", function()
    local p = script("term.lua", 'print(rollout.wait_signal("TERM"))\n')
    local out = dir .. "/term.out"
    local h = assert(proc.spawn{ argv = { ROLLOUT, p }, stdout = out })
    -- TERM is caught once the script waits: the SigCgt mask (bit 14 is signal 15) says so
    assert.truthy(eventually(function()
      local status = fs.read("/proc/" .. h:pid() .. "/status") or ""
      local mask = tonumber(status:match("SigCgt:%s*(%x+)") or "0", 16)
      return mask & (1 << 14) ~= 0
    end), "the script never caught SIGTERM")
    assert.is_true(h:kill("TERM"))
    assert.same({ 0, nil }, { h:wait(5) })
    assert.equals("TERM\n", fs.read(out))
  end)

  it("exits 2 on a syntax error before running anything", function()
    local p = script("syntax.lua", 'print("top of the file")\nlocal x = = 1\n')
    local r = run({ p })
    assert.equals(2, r.code)
    assert.equals("", r.stdout)
    assert.matches("syntax%.lua:2:", r.stderr)
  end)

  it("exits 3 on a runtime error with file:line and a traceback", function()
    local p = script("boom.lua", 'print("before")\nlocal function f() error("boom") end\nf()\n')
    local r = run({ p })
    assert.equals(3, r.code)
    assert.equals("before\n", r.stdout)
    assert.matches("boom%.lua:2: boom", r.stderr)
    assert.matches("stack traceback", r.stderr)
  end)

  it("exits with the code a script returns", function()
    assert.equals(7, run({ script("seven.lua", "return 7\n") }).code)
  end)

  it("exits 2 with one line and a usage hint on an unknown command or flag", function()
    local cases = {
      { { "frobnicate" }, "unknown command 'frobnicate'" },
      { { "--frobnicate" }, "unknown option '--frobnicate'" },
      { { "--clock=sundial", "version" }, "'sundial'" },
    }
    for _, case in ipairs(cases) do
      local args, says = case[1], case[2]
      local r = run(args)
      assert.equals(2, r.code, table.concat(args, " "))
      local l = lines(r.stderr)
      assert.equals(2, #l, r.stderr)
      assert.matches("^rollout: ", l[1])
      assert.truthy(l[1]:find(says, 1, true), l[1])
      assert.matches("rollout %-%-help", l[2])
      assert.equals("", r.stdout)
    end
  end)

  it("prints the version", function()
    local r = run({ "version" })
    assert.equals(0, r.code)
    assert.equals("rollout " .. rollout.version .. "\n", r.stdout)
    assert.matches("^%d+%.%d+%.%d+", rollout.version)
    assert.equals(r.stdout, run({ "--version" }).stdout)
  end)

  it("reports a deadlock and exits 3 instead of hanging", function()
    local p = script("deadlock.lua", 'rollout.suspend()\nprint("after")\n')
    local r = run({ p }, 10)
    assert.equals(3, r.code)
    assert.equals("", r.stdout)
    assert.matches("deadlock", r.stderr)
    assert.lt(r.time, 2.0)
    -- also when the main task waits for another task that waits for nothing
    local p2 = script("deadlock2.lua", 'local t = rollout.spawn(function() rollout.suspend() end)\nt:wait()\n')
    local r2 = run({ p2 }, 10)
    assert.equals(3, r2.code)
    assert.matches("deadlock", r2.stderr)
  end)

  it("under the virtual clock, a signal still reaches a script whose timers keep time jumping", function()
    local p = script("vsig.lua", 'local n = 0\nrollout.every("1s", function() n = n + 1 end)\n' ..
      'print(rollout.wait_signal("TERM"))\nprint(n > 0)\n')
    local h = assert(proc.spawn({ argv = { rollout.exe, "--clock=virtual", p }, stdout = dir .. "/vsig.out" }))
    rollout.sleep(0.5)
    h:kill("TERM")
    local code = h:wait(5)
    assert.equals(0, code)
    assert.equals("TERM\ntrue\n", require("rollout.fs").read(dir .. "/vsig.out"))
  end)

  it("a waiter that gave up does not silence the failure of the task it waited for", function()
    local p = script("gaveup.lua", 'local a = rollout.spawn(function() rollout.sleep(0.2); error("late boom") end)\n' ..
      'print(rollout.wait_any({a}, 0.01))\nrollout.sleep(0.4)\n')
    local r = run({ p }, 10)
    assert.equals(0, r.code)
    assert.matches("late boom", r.stderr)
  end)
end)
-- proc_spec.lua: rollout.proc against real programs (coreutils, sh) and the rollout binary.
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")

local ROLLOUT = assert(fs.realpath("/proc/self/exe"))

-- Poll until fn() is true or `timeout` seconds pass; returns whether it became true.
local function eventually(fn, timeout)
  local deadline = rollout.now() + (timeout or 2)
  while rollout.now() < deadline do
    if fn() then return true end
    rollout.sleep(0.01)
  end
  return fn()
end

-- A zombie counts as gone: an orphaned grandchild waits for init to reap it.
local function alive(pid)
  local stat = fs.read("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() Z")
end

describe("proc.run", function()
  it("returns the exit code, stdout and stderr", function()
    local r = assert(proc.run{ argv = { "sh", "-c", "echo out; echo err >&2; exit 3" } })
    assert.equals(3, r.code)
    assert.is_nil(r.signal)
    assert.equals("out\n", r.stdout)
    assert.equals("err\n", r.stderr)
    assert.is_number(r.time)
    assert.is_number(r.pid)
  end)

  it("passes argv without a shell", function()
    local r = assert(proc.run{ argv = { "printf", "%s|", "a b", "$HOME", "*", 42 } })
    assert.equals("a b|$HOME|*|42|", r.stdout)
  end)

  it("reports a signal that ended the program", function()
    local r = assert(proc.run{ argv = { "sh", "-c", "kill -KILL $$" } })
    assert.is_nil(r.code)
    assert.equals("KILL", r.signal)
  end)

  it("feeds 1 MiB of stdin through cat", function()
    local data = {}
    for i = 1, 1024 do
      data[i] = string.format("%04d", i) .. string.rep(string.char(65 + i % 26), 1019) .. "\n"
    end
    data = table.concat(data)
    assert.equals(1024 * 1024, #data)
    local r = assert(proc.run{ argv = { "cat" }, stdin = data })
    assert.equals(0, r.code)
    assert.equals(#data, #r.stdout)
    assert.is_true(data == r.stdout, "stdout differs from stdin")
  end)

  it("gives /dev/null as stdin unless asked, and EOF for an empty stdin", function()
    assert.equals("0\n", assert(proc.run{ argv = { "sh", "-c", "wc -c" } }).stdout:gsub("^%s+", ""))
    assert.equals("0\n", assert(proc.run{ argv = { "sh", "-c", "wc -c" }, stdin = "" }).stdout:gsub("^%s+", ""))
  end)

  it("does not die when the child ignores its stdin", function()
    local r = assert(proc.run{ argv = { "true" }, stdin = string.rep("x", 4 << 20) })
    assert.equals(0, r.code)
  end)

  it("kills a child that runs past its timeout", function()
    local t0 = rollout.now()
    local r, err, partial = proc.run{ argv = { "sh", "-c", "echo started; exec sleep 10" }, timeout = 0.3 }
    local dt = rollout.now() - t0
    assert.is_nil(r)
    assert.equals("timed out after 0.3 s", err)
    assert.is_table(partial)
    assert.equals("started\n", partial.stdout)
    assert.equals("TERM", partial.signal)
    assert.lt(dt, 1.0, "returned after")
    assert.ge(dt, 0.29, "returned after")
    assert.is_false(alive(partial.pid), "the child is gone")
  end)

  it("escalates to SIGKILL when SIGTERM is ignored", function()
    local t0 = rollout.now()
    local r, err, partial = proc.run{ argv = { "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done" },
                                      timeout = "200ms", grace = 0.3 }
    assert.is_nil(r)
    assert.matches("^timed out after 0.2 s", err)
    assert.equals("KILL", partial.signal)
    assert.near(0.5, rollout.now() - t0, 0.4)
  end)

  it("signals the whole process group on a timeout", function()
    local dir = assert(fs.mkdtemp("proc-spec"))
    finally(function() fs.rmtree(dir) end)
    -- the grandchild keeps running under a shell that waits for it
    local _, err = proc.run{ argv = { "sh", "-c", "sleep 30 & echo $! > " .. dir .. "/pid; wait" }, timeout = 0.3 }
    assert.matches("timed out", err)
    local pid = tonumber(fs.read(dir .. "/pid"))
    assert.truthy(eventually(function() return not alive(pid) end), "grandchild " .. pid .. " still runs")
  end)

  it("does not wait forever for a grandchild that keeps the pipes open", function()
    local dir = assert(fs.mkdtemp("proc-spec"))
    finally(function() fs.rmtree(dir) end)
    local t0 = rollout.now()
    local r = assert(proc.run{ argv = { "sh", "-c", "setsid sleep 5 & echo $! > " .. dir .. "/pid; echo bye" } })
    assert.equals(0, r.code)
    assert.equals("bye\n", r.stdout)
    assert.lt(rollout.now() - t0, 2.5)
    fs.kill(tonumber(fs.read(dir .. "/pid")), 15)
  end)

  it("returns nil and a reason for a missing program", function()
    local r, err = proc.run{ argv = { "no-such-program-rollout" } }
    assert.is_nil(r)
    assert.equals("cannot run 'no-such-program-rollout': No such file or directory", err)
    r, err = proc.run{ argv = { "/etc/passwd" } }
    assert.is_nil(r)
    assert.equals("cannot run '/etc/passwd': Permission denied", err)
    r, err = proc.run{ argv = { "true" }, cwd = "/no/such/dir" }
    assert.is_nil(r)
    assert.equals("cannot run 'true': cwd /no/such/dir: No such file or directory", err)
  end)

  it("caps the output", function()
    local r, err, partial = proc.run{ argv = { "head", "-c", "3000000", "/dev/zero" }, max_output = 1000000 }
    assert.is_nil(r)
    assert.equals("stdout of 'head' exceeded 1000000 bytes", err)
    assert.equals(1000000, #partial.stdout)
    assert.has_error(function() proc.run{ argv = { "true" }, max_output = "lots" } end, "max_output")
  end)

  it("sets env and cwd", function()
    local home = os.getenv("HOME")
    local r = assert(proc.run{ argv = { "sh", "-c", "echo $ROLLOUT_X-${HOME:-unset}; pwd" },
                               env = { ROLLOUT_X = "x1", HOME = false }, cwd = "/tmp" })
    assert.equals("x1-unset\n/tmp\n", r.stdout)
    -- our own environment is untouched: the child's variables and removals stay the child's
    assert.equals(home, os.getenv("HOME"))
    assert.is_nil(os.getenv("ROLLOUT_X"))
  end)

  it("closes our descriptors in the child", function()
    local f = assert(io.open("/dev/null")) -- Lua's io does not set close-on-exec
    finally(function() f:close() end)
    local r = assert(proc.run{ argv = { "sh", "-c", "ls /proc/$$/fd" } })
    local fds = {}
    for fd in r.stdout:gmatch("%d+") do fds[#fds + 1] = tonumber(fd) end
    table.sort(fds)
    assert.same({ 0, 1, 2 }, { fds[1], fds[2], fds[3] })
    assert.lt(#fds, 5, "fds in the child: " .. table.concat(fds, " "))
  end)

  it("runs 20 programs concurrently", function()
    local t0 = rollout.now()
    local tasks = {}
    for i = 1, 20 do
      tasks[i] = rollout.spawn(function() return proc.run{ argv = { "sh", "-c", "sleep 0.5; echo " .. i } } end)
    end
    local results = assert(rollout.wait_all(tasks, 10))
    for i = 1, 20 do
      assert.equals(i .. "\n", results[i][1].stdout)
      assert.equals(0, results[i][1].code)
    end
    assert.lt(rollout.now() - t0, 2.5, "20 x 0.5 s concurrently took")
  end)

  it("kills the child when the task is cancelled", function()
    local dir = assert(fs.mkdtemp("proc-spec"))
    finally(function() fs.rmtree(dir) end)
    local t = rollout.spawn(function()
      return proc.run{ argv = { "sh", "-c", "echo $$ > " .. dir .. "/pid; exec sleep 30" } }
    end)
    assert.truthy(eventually(function() return tonumber(fs.read(dir .. "/pid") or "") end))
    local pid = tonumber(fs.read(dir .. "/pid"))
    assert.is_true(alive(pid))
    assert.is_true(t:cancel())
    assert.truthy(eventually(function() return not alive(pid) end), "child still runs after cancel")
  end)

  it("raises on bad arguments and unknown options", function()
    assert.has_error(function() proc.run{ argv = { "true" }, tiemout = 1 } end, "proc.run: unknown option 'tiemout'")
    assert.has_error(function() proc.run{ argv = {} } end, "argv is empty")
    assert.has_error(function() proc.run{ argv = "true" } end, "argv must be a list")
    assert.has_error(function() proc.run{ argv = { "true" }, timeout = "soon" } end, "timeout")
    assert.has_error(function() proc.run{ argv = { "true" }, env = { ["A=B"] = "x" } } end, "env names")
  end)

  it("raises outside a task", function()
    local co = coroutine.wrap(function() return pcall(proc.run, { argv = { "true" } }) end)
    local ok, err = co()
    assert.is_false(ok)
    assert.matches("must be called from a task", err)
  end)
end)

describe("proc.spawn", function()
  local dir
  before_each(function() dir = assert(fs.mkdtemp("proc-spec")) end)
  after_each(function() fs.rmtree(dir) end)

  it("starts a long-lived process, waits with a timeout, kills it", function()
    local h = assert(proc.spawn{ argv = { "sleep", "30" }, stdout = "null" })
    assert.is_true(h:running())
    assert.is_true(h:pid() > 0)
    assert.matches("^child %d+ %(running%)$", tostring(h))
    local code, why = h:wait(0.1)
    assert.is_nil(code)
    assert.equals("timeout", why)
    assert.is_true(h:kill())
    code, why = h:wait(5)
    assert.is_nil(code)
    assert.equals("TERM", why)
    assert.is_false(h:running())
    assert.is_false(alive(h:pid()))
    local ok, err = h:kill()
    assert.is_nil(ok)
    assert.matches("has exited", err)
    assert.is_nil((h:wait())) -- waiting again answers at once
  end)

  it("reports the exit code and sends output to files", function()
    local log = dir .. "/log"
    local h = assert(proc.spawn{ argv = { "sh", "-c", "echo out; echo err >&2; read x; echo \"stdin:$x\"; exit 7" },
                                 stdout = log, stderr = log })
    assert.same({ 7, nil }, { h:wait(5) })
    assert.equals("out\nerr\nstdin:\n", fs.read(log))
  end)

  it("lets several tasks wait for one process", function()
    local h = assert(proc.spawn{ argv = { "sleep", "0.2" } })
    local a = rollout.spawn(function() return h:wait() end)
    local b = rollout.spawn(function() return h:wait(5) end)
    local c = rollout.spawn(function() return h:wait(0.05) end)
    assert.equals(0, a:wait())
    assert.equals(0, b:wait())
    assert.same({ nil, "timeout" }, { c:wait() })
  end)

  it("sends named and numbered signals", function()
    local h = assert(proc.spawn{ argv = { "sleep", "30" } })
    assert.is_true(h:kill("SIGKILL"))
    assert.same({ nil, "KILL" }, { h:wait(5) })
    local h2 = assert(proc.spawn{ argv = { "sleep", "30" } })
    assert.is_true(h2:kill(2))
    assert.same({ nil, "INT" }, { h2:wait(5) })
    assert.has_error(function() h2:kill("NOPE") end, "no such signal")
  end)

  it("returns nil, err for a missing program or an unwritable log", function()
    local h, err = proc.spawn{ argv = { "no-such-program-rollout" } }
    assert.is_nil(h)
    assert.matches("cannot run 'no%-such%-program%-rollout'", err)
    h, err = proc.spawn{ argv = { "true" }, stdout = "/no/such/dir/log" }
    assert.is_nil(h)
    assert.equals("/no/such/dir/log: No such file or directory", err)
    assert.has_error(function() proc.spawn{ argv = { "true" }, stdin = "x" } end, "unknown option 'stdin'")
  end)

  it("does not leave servers behind when the runner is killed (PR_SET_PDEATHSIG)", function()
    local script = dir .. "/runner.lua"
    assert(fs.write_atomic(script, string.format([[
      local h = assert(proc.spawn{ argv = { "sleep", "300" } })
      local f = assert(io.open(%q, "w")); f:write(h:pid()); f:close()
      rollout.sleep(300)
    ]], dir .. "/pid")))
    local runner = assert(proc.spawn{ argv = { ROLLOUT, script } })
    assert.truthy(eventually(function() return tonumber(fs.read(dir .. "/pid") or "") end, 5))
    local pid = tonumber(fs.read(dir .. "/pid"))
    assert.is_true(alive(pid))
    runner:kill("KILL")
    assert.same({ nil, "KILL" }, { runner:wait(5) })
    assert.truthy(eventually(function() return not alive(pid) end), "server " .. pid .. " outlived its runner")
  end)

  it("stops running children when the host exits normally", function()
    local script = dir .. "/exits.lua"
    assert(fs.write_atomic(script, string.format([[
      local h = assert(proc.spawn{ argv = { "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done" } })
      local f = assert(io.open(%q, "w")); f:write(h:pid()); f:close()
      return 0
    ]], dir .. "/pid")))
    local r = assert(proc.run{ argv = { ROLLOUT, script }, timeout = 10 })
    assert.equals(0, r.code, r.stderr)
    local pid = tonumber(fs.read(dir .. "/pid"))
    assert.is_false(alive(pid))
  end)
end)

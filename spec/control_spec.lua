-- The control socket of real runs (fast-haproxy.lua against a real HAProxy): permissions
-- (another user is refused), the line mode a person uses, the machine mode `rollout ctl`
-- uses, the REPL inside the engine (errors, multi-line statements, a runaway expression
-- that is stopped while others are served), and the commands: pause, signals, resume,
-- promote, promote --full, abort, retry, set weight. One session drives `rollout attach`
-- through tmux, as a person would.
local fs = require("rollout.fs")
local net = require("rollout.net")
local proc = require("rollout.proc")
local control = require("rollout.control")
local live = require("spec.support.live_rollout")

-- ---- a line-mode client -----------------------------------------------------------------

local function line_client(path)
  local conn = assert(net.connect_unix(path, 5))
  local c = { conn = conn }
  -- One reply: the text before the next prompt, and whether that prompt is ">> ".
  function c.reply()
    local acc = ""
    while true do
      local chunk, err = conn:receive_until("> ", 15)
      assert(chunk, err)
      if chunk == "" or chunk:sub(-1) == "\n" then return (acc .. chunk):gsub("\n$", ""), false end
      if chunk == ">" or chunk:sub(-2) == "\n>" then return (acc .. chunk:sub(1, -2)):gsub("\n$", ""), true end
      acc = acc .. chunk .. "> "
    end
  end
  function c.say(line)
    assert(conn:send(line .. "\n"))
    return c.reply()
  end
  return c
end

local function ctl(env, ...)
  local argv = { rollout.exe, "ctl", env.socket, ... }
  return assert(proc.run{ argv = argv, timeout = 60 })
end

local function wait_state(env, state, timeout)
  local deadline = rollout.now() + (timeout or 10)
  while rollout.now() < deadline do
    local r = live.ctl(env, "status")
    if r.value and r.value.state == state then return r.value end
    rollout.sleep(0.05)
  end
  error("the rollout never became " .. state, 2)
end

local function at_stage(name)
  return function(evs)
    return live.find(evs, "stage_entered", function(e) return e.stage == name end)
      and live.find(evs, "weight_confirmed", function(e) return e.stage == name end)
  end
end

describe("control socket of a long rollout", function()
  local env, run
  setup(function()
    env = live.env()
    env.playbook = live.variant(env, "long", 'pb.stages[1].hold = "10m"')
    run = live.start(env)
    live.wait_for(env, at_stage("ten"), 30, "stage ten")
    live.wait_socket(env)
  end)
  teardown(function() if env then env.stop() end end)

  it("is a 0600 socket in a 0700 directory", function()
    local st = assert(fs.stat(env.socket))
    assert.equals("socket", st.type)
    assert.equals(384, st.mode, "0600")
    assert.equals(448, fs.stat(env.run_dir).mode, "0700")
  end)

  it("refuses another user (nobody): the permissions, and the peer check behind them", function()
    local py = [[
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
s.settimeout(5)
print("GOT " + s.recv(4096).decode())
]]
    local function as_nobody()
      local r = assert(proc.run{ argv = { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        "/usr/bin/python3", "-c", py, env.socket }, timeout = 30 })
      return r.stdout .. r.stderr
    end
    assert.matches("^EACCES", as_nobody())
    -- even with the file system wide open, the server checks who is calling
    assert(fs.chmod(env.dir, 493)); assert(fs.chmod(env.run_dir, 493)); assert(fs.chmod(env.socket, 511))
    local out = as_nobody()
    assert(fs.chmod(env.socket, 384)); assert(fs.chmod(env.run_dir, 448)); assert(fs.chmod(env.dir, 448))
    assert.matches("GOT refused: nobody does not own this rollout", out)
    -- and the rollout did not notice
    assert.equals("stage", live.ctl(env, "status").value.state)
  end)

  it("answers machine-mode frames with JSON", function()
    local conn = assert(net.connect_unix(env.socket, 5))
    assert(conn:send(control.frame("status")))
    local hdr = assert(conn:receive(4, 10))
    local n = string.unpack(">I4", hdr)
    local body = assert(conn:receive(n, 10))
    local res = assert(require("rollout.json").decode(body))
    assert.is_true(res.ok)
    assert.equals("stage", res.value.state)
    assert.equals("ten", res.value.stage)
    assert.same({ baseline = 90, canary = 10 }, res.value.weights)
    assert.matches("weights: baseline 90%% / canary 10%%", res.text)
    conn:close()
  end)

  it("evaluates Lua inside the engine; an error is printed and the REPL and the rollout go on", function()
    local c = assert(control.connect(env.socket))
    local r = c:request("engine.pb.service .. '/' .. engine.state")
    assert.equals("fast/stage", r.value)
    r = c:request("error('boom')")
    assert.is_false(r.ok)
    assert.matches("control:1: boom", r.error)
    r = c:request("local t = {1, 2, x = {y = true}}; return t")
    assert.is_true(r.ok)
    assert.matches("x = {\n%s+y = true", r.text, "tables print pretty")
    r = c:request("nil + 1")
    assert.is_false(r.ok)
    assert.matches("attempt to perform arithmetic", r.error)
    r = c:request("1 + 1")
    assert.equals(2, r.value)
    assert.equals("2", r.text)
    c:close()
    assert.equals("stage", live.ctl(env, "status").value.state)
  end)

  it("continues an incomplete statement on the next line (both modes)", function()
    local c = assert(control.connect(env.socket))
    assert.is_true(c:request("acc = 0").ok)
    local r = c:request("for i = 1, 3 do")
    assert.is_true(r.incomplete)
    r = c:request("  acc = acc + i")
    assert.is_true(r.incomplete)
    r = c:request("end")
    assert.is_true(r.ok)
    assert.is_nil(r.incomplete)
    assert.equals(6, c:request("acc").value)
    c:close()
    local l = line_client(env.socket)
    local greeting = l.reply()
    assert.matches("rollout control: fast v1 %-> v2, stage", greeting)
    local text, cont = l.say("function f(x)")
    assert.equals("", text)
    assert.is_true(cont, "a >> prompt")
    text, cont = l.say("  return x * 2 end")
    assert.equals("", text)
    assert.is_false(cont)
    assert.equals("42", (l.say("f(21)")))
    assert(l.conn:send("quit\n"))
    assert.equals("bye\n", l.conn:receive("a", 5), "quit ends the connection")
    l.conn:close()
  end)

  it("stops a runaway expression by its budget while another client still gets status", function()
    local evals_before = live.count(live.events(env), "evaluation")
    local spinner = assert(control.connect(env.socket))
    local t0 = rollout.now()
    local task = rollout.spawn(function() return spinner:request("while true do end", 60) end)
    rollout.sleep(0.05)
    local other = assert(control.connect(env.socket))
    local answers, worst = 0, 0
    while task:state() ~= "done" do
      local s0 = rollout.now()
      local r = assert(other:request("status", 10))
      worst = math.max(worst, rollout.now() - s0)
      assert.equals("stage", r.value.state)
      answers = answers + 1
      rollout.sleep(0.02)
    end
    local r = task:wait()
    local spun = rollout.now() - t0
    assert.is_false(r.ok)
    assert.matches("budget exceeded: more than 100000000 instructions", r.error)
    assert.truthy(answers >= 5, "status answered " .. answers .. " times during " .. spun .. " s")
    -- a loop the runaway blocked would answer once, after the whole spin; under load a status
    -- may wait for the scheduler, so the bound is a third of the spin (at least 0.5 s)
    assert.truthy(worst < math.max(0.5, spun / 3), "slowest status during the runaway: " .. worst .. " s of " .. spun)
    assert.truthy(live.count(live.events(env), "evaluation") > evals_before, "the engine kept evaluating meanwhile")
    -- the spinning session is fine afterwards
    assert.equals(3, spinner:request("1 + 2").value)
    spinner:close()
    other:close()
  end)

  it("set weight N: journaled, applied, confirmed; nonsense refused", function()
    local r = ctl(env, "set", "weight", "30")
    assert.equals(0, r.code, r.stderr)
    assert.matches("weights confirmed: baseline 70%% / canary 30%%", r.stdout)
    assert.same({ baseline = 70, canary = 30 }, (live.router(env):get_weights()))
    local evs = live.events(env)
    local req = live.last(evs, "weight_requested")
    assert.equals(30, req.canary)
    assert.matches("via control socket", req.by)
    assert.equals(30, live.last(evs, "weight_confirmed").canary)
    local bad = ctl(env, "set", "weight", "200")
    assert.equals(1, bad.code)
    assert.matches("0..100", bad.stderr)
    assert(ctl(env, "set", "weight", "10").code == 0)
  end)

  it("ctl: text or --json, and meaningful exit codes", function()
    local r = ctl(env, "--json", "status")
    assert.equals(0, r.code)
    local st = require("rollout.json").decode(r.stdout)
    assert.equals("ten", st.stage)
    assert.equals(1, ctl(env, "no_such_global()").code, "a failed command")
    assert.equals(1, ctl(env, "promote", "--sideways").code, "a refused command")
    local gone = assert(proc.run{ argv = { rollout.exe, "ctl", env.dir .. "/nope.sock", "status" } })
    assert.equals(2, gone.code, "no socket: no such rollout (rollout.exit NOT_FOUND)")
    local usage = assert(proc.run{ argv = { rollout.exe, "ctl" } })
    assert.equals(2, usage.code)
  end)

  it("signals: the current values per version", function()
    local r = ctl(env, "signals")
    assert.equals(0, r.code, r.stderr)
    assert.matches("baseline%s+%d+", r.stdout)
    assert.matches("canary%s+%d+", r.stdout)
    local j = require("rollout.json").decode(ctl(env, "--json", "signals").stdout)
    assert.is_number(j.canary.requests)
    assert.is_number(j.baseline.error_rate)
  end)

  it("abort from ctl rolls back within one evaluation interval", function()
    local r = ctl(env, "abort", "seen", "by", "support")
    assert.equals(0, r.code, r.stderr)
    assert.equals(1, run:wait(30))
    local evs = live.events(env)
    local cmd = live.find(evs, "command", function(e) return e.command == "abort" end)
    assert.equals("seen by support", cmd.arg)
    local zero = live.last(evs, "weight_confirmed")
    assert.equals(0, zero.canary)
    assert.truthy(zero.ts - cmd.ts <= 0.25, "rolled back " .. (zero.ts - cmd.ts) .. " s after the command")
    local out = live.outcome(evs)
    assert.equals("rolled_back", out.outcome)
    assert.equals("manual", out.reason)
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
    assert.is_nil(fs.stat(env.socket), "the socket goes with the run")
  end)
end)

describe("a scripted session", function()
  local env
  setup(function()
    env = live.env()
    env.playbook = live.variant(env, "slower", 'pb.stages[1].hold = "4s"; pb.stages[2].hold = "4s"')
  end)
  teardown(function() if env then env.stop() end end)

  it("over the socket: pause, inspect signals, resume, promote", function()
    local run = live.start(env)
    live.wait_for(env, at_stage("ten"), 30, "stage ten")
    live.wait_socket(env)
    local c = line_client(env.socket)
    assert.matches("rollout control: fast", (c.reply()))
    assert.equals("pause requested", (c.say("pause")))
    wait_state(env, "paused")
    local sig = c.say("signals")
    assert.matches("version%s+requests", sig)
    assert.matches("\nbaseline%s+%d+", sig)
    assert.matches("\ncanary%s+%d+", sig)
    assert.equals("paused", (c.say("engine.state")))
    assert.matches("paused %(manual%)", (c.say("status")))
    assert.equals("resume requested", (c.say("resume")))
    wait_state(env, "stage")
    assert.equals("promote requested", (c.say("promote")))
    live.wait_for(env, at_stage("half"), 10, "stage half after promote")
    assert(c.conn:send("quit\n"))
    assert.equals("bye\n", c.conn:receive("a", 5))
    assert.equals(0, run:wait(60), run:stderr())
    local evs = live.events(env)
    for _, name in ipairs({ "pause", "resume", "promote" }) do
      local e = live.find(evs, "command", function(x) return x.command == name end)
      assert.matches("root %(pid %d+%) via control socket", e.who)
    end
    assert.truthy(live.find(evs, "stage_skipped", function(e) return e.stage == "ten" end))
    assert.same({ 10, 50, 100 }, live.confirmed(evs))
  end)

  it("promote --full skips the remaining stages", function()
    require("rollout.fs").rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local run = live.start(env)
    live.wait_for(env, at_stage("ten"), 30, "stage ten")
    live.wait_socket(env)
    local r = ctl(env, "promote", "--full")
    assert.equals(0, r.code, r.stderr)
    assert.matches("promote %-%-full requested", r.stdout)
    assert.equals(0, run:wait(30))
    local evs = live.events(env)
    assert.same({ 10, 100 }, live.confirmed(evs))
    assert.is_nil(live.find(evs, "stage_entered", function(e) return e.stage == "half" end))
    assert.equals("promoted", live.outcome(evs).outcome)
  end)

  it("retry runs the current stage again from its start", function()
    require("rollout.fs").rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local run = live.start(env)
    live.wait_for(env, at_stage("ten"), 30, "stage ten")
    live.wait_socket(env)
    assert.equals(0, ctl(env, "pause").code)
    wait_state(env, "paused")
    assert.equals(0, ctl(env, "retry").code)
    live.wait_for(env, function(evs) return live.count(evs, "stage_entered", function(e) return e.stage == "ten" end) == 2 end,
      10, "ten entered again")
    assert.equals(0, ctl(env, "promote", "--full").code)
    assert.equals(0, run:wait(30))
    local evs = live.events(env)
    assert.truthy(live.find(evs, "stage_retry"))
    assert.equals("promoted", live.outcome(evs).outcome)
  end)
end)

describe("a runaway hook", function()
  local env
  setup(function()
    env = live.env()
    env.playbook = live.variant(env, "spin",
      'pb.hooks = { before_stage = function(ctx) if ctx.stage_index == 2 then while true do end end end }')
  end)
  teardown(function() if env then env.stop() end end)

  it("does not hold the loop: status answers, triggers evaluate, abort cancels it and rolls back", function()
    local run = live.start(env)
    live.wait_for(env, function(evs)
      return live.find(evs, "hook_started", function(e) return e.hook == "before_stage" and e.stage == "half" end)
    end, 30, "the spinning hook")
    live.wait_socket(env)
    local before = live.count(live.events(env), "evaluation")
    for _ = 1, 5 do
      local t0 = rollout.now()
      local st = live.ctl(env, "status", 5).value
      assert.equals("half", st.stage)
      assert.equals(10, st.weights.canary, "half's shift waits for its hook")
      assert.truthy(rollout.now() - t0 < 0.5, "status took " .. (rollout.now() - t0) .. " s")
      rollout.sleep(0.1)
    end
    assert.truthy(live.count(live.events(env), "evaluation") > before, "the engine evaluated while the hook spun")
    assert.equals(0, ctl(env, "abort", "hook", "stuck").code)
    assert.equals(1, run:wait(30))
    local evs = live.events(env)
    assert.equals("before_stage", live.find(evs, "hook_cancelled").hook)
    assert.equals("rolled_back", live.outcome(evs).outcome)
    assert.same({ 10, 0 }, live.confirmed(evs))
  end)
end)

describe("rollout attach through tmux", function()
  local env, tmux_name
  local function tmux(...)
    return proc.run{ argv = { "tmux", "-L", tmux_name, ... }, timeout = 10 }
  end
  local function screen()
    local r = tmux("capture-pane", "-p", "-t", "s")
    return r and r.stdout or ""
  end
  local function wait_screen(pattern, timeout)
    local deadline = rollout.now() + (timeout or 10)
    while rollout.now() < deadline do
      if screen():find(pattern) then return true end
      rollout.sleep(0.05)
    end
    error("the screen never showed " .. pattern .. ":\n" .. screen(), 2)
  end
  setup(function()
    env = live.env()
    env.playbook = live.variant(env, "long", 'pb.stages[1].hold = "10m"')
    tmux_name = "rollout-spec-" .. fs.getpid()
  end)
  teardown(function()
    if tmux_name then tmux("kill-server") end
    if env then env.stop() end
  end)

  it("pause, inspect, a multi-line statement, resume, abort", function()
    if not fs.stat("/usr/bin/tmux") then return pending("tmux is not installed") end
    local run = live.start(env)
    live.wait_for(env, at_stage("ten"), 30, "stage ten")
    live.wait_socket(env)
    local cmd = string.format("HOME=%s %s attach %s", env.dir, rollout.exe, env.socket)
    local r = tmux("new-session", "-d", "-s", "s", "-x", "150", "-y", "50", cmd)
    assert.equals(0, r.code, r.stderr)
    wait_screen("rollout>")
    tmux("send-keys", "-t", "s", "pause", "Enter")
    wait_screen("pause requested")
    wait_state(env, "paused")
    tmux("send-keys", "-t", "s", "signals", "Enter")
    wait_screen("canary%s+%d+")
    tmux("send-keys", "-t", "s", "for i = 1, 2 do", "Enter")
    wait_screen(">>")
    tmux("send-keys", "-t", "s", "print('line ' .. i) end", "Enter")
    wait_screen("line 2")
    tmux("send-keys", "-t", "s", "resume", "Enter")
    wait_screen("resume requested")
    wait_state(env, "stage")
    tmux("send-keys", "-t", "s", "abort from tmux", "Enter")
    assert.equals(1, run:wait(30))
    local evs = live.events(env)
    assert.equals("from tmux", live.find(evs, "command", function(e) return e.command == "abort" end).arg)
    assert.equals("rolled_back", live.outcome(evs).outcome)
    -- leaving attach (Ctrl-D) saves what was typed to ~/.rollout_history (HOME is env.dir)
    tmux("send-keys", "-t", "s", "C-d")
    local hist
    for _ = 1, 100 do
      hist = fs.read(env.dir .. "/.rollout_history") -- libedit's format: spaces as \040
      hist = hist and hist:gsub("\\(%d%d%d)", function(o) return string.char(tonumber(o, 8)) end)
      if hist and hist:find("abort from tmux", 1, true) then break end
      rollout.sleep(0.1)
    end
    assert.is_string(hist, "attach wrote no ~/.rollout_history")
    for _, typed in ipairs({ "pause", "signals", "resume", "abort from tmux" }) do
      assert.truthy(hist:find(typed, 1, true), "history lacks " .. typed .. ":\n" .. hist)
    end
  end)
end)

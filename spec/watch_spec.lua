-- rollout watch: the live view of a running rollout from another terminal, on the real stack
-- (demo/stack.lua: HAProxy, sample services, loadgen; `rollout run playbooks/demo.lua`
-- whose canary starts failing in stage 2). In tmux, as a person sees it: the view redraws in
-- place (stages, hold and time left, triggers, the last gate, events), ends with the rollout
-- and exits with its code; NO_COLOR; without a terminal, one line per change.
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

local function find_socket(s, n)
  local dir = s.dir .. "/run-" .. (n or 1)
  local deadline = rollout.now() + 30
  while rollout.now() < deadline do
    for _, name in ipairs(fs.list(dir) or {}) do
      if name:match("%.sock$") then return dir .. "/" .. name end
    end
    rollout.sleep(0.05)
  end
  error("no control socket in " .. dir)
end

-- `rollout run` in a task; returns a handle whose :wait() gives the run's result
local function start_run(s, opts)
  local res
  local t = rollout.spawn(function() res = s:run(opts) end)
  return { wait = function() t:wait(); return res end }
end

local function dump(res)
  return string.format("exit %s, outcome %s (%s)\n%s", tostring(res and res.code), tostring(res and res.outcome),
    tostring(res and res.reason), ((res and res.output) or ""):sub(-2000))
end

describe("rollout watch in tmux", function()
  local s, tmux_name
  local function tmux(...)
    return assert(proc.run({ argv = { "tmux", "-L", tmux_name, ... }, timeout = 10 }))
  end
  local function screen(target, escapes)
    local r = tmux("capture-pane", "-p", "-t", target, escapes and "-e" or "-J")
    return r.stdout or ""
  end
  local function history(target)
    return tmux("capture-pane", "-p", "-t", target, "-S", "-", "-E", "-").stdout or ""
  end
  local function count(text, plain)
    local n, i = 0, 1
    while true do
      local a, b = text:find(plain, i, true)
      if not a then return n end
      n, i = n + 1, b + 1
    end
  end
  after_each(function()
    if tmux_name then pcall(tmux, "kill-server") end
    if s then s:stop() end
    s, tmux_name = nil, nil
  end)

  it("shows stages, hold, triggers, the gate and events live, redrawn in place, and exits with the rollout's code", function()
    s = assert(demo_stack.start({ rps = 200 }))
    tmux_name = "rollout-watch-" .. fs.getpid()
    s:on_weight(25, function() assert(s.canary:fault({ error_rate = 0.2 })) end)
    local run = start_run(s, { timeout = 90, json = true })
    local sock = find_socket(s)
    local code_a, code_b = s.dir .. "/watch-a.code", s.dir .. "/watch-b.code"
    local function cmd(env, code_file)
      return string.format("%s TERM=xterm-256color %s watch %s; echo $? > %s; sleep 60", env, rollout.exe, sock, code_file)
    end
    tmux("new-session", "-d", "-s", "a", "-x", "120", "-y", "50", cmd("", code_a))
    tmux("new-session", "-d", "-s", "b", "-x", "120", "-y", "50", cmd("NO_COLOR=1", code_b))
    -- while it runs: sample the screen every 100 ms
    local seen = { holding = false, pending = false, gate = false, stage2 = false }
    local colour_seen, nocolour_clean = false, true
    local deadline = rollout.now() + 90
    while rollout.now() < deadline and not fs.stat(code_a) do
      local scr = screen("a")
      if scr:find("Ramp%-Up%s+25%%%s+10%.0s%s+holding: %d+%.%ds held, %d+%.%ds left") then seen.holding = true; seen.stage2 = true end
      if scr:find("Initial%s+5%%%s+5%.0s%s+holding: [%d%.]+s held, [%d%.]+s left") then seen.holding = true end
      if scr:find("error_rate%s+pending [%d%.]+s of 2%.0s") then seen.pending = true end
      if scr:find("LAST GATE  Initial at [%d%.]+s: pass") and scr:find("error_rate%s+[%d%.]+%%%s+<=%s+1%.00%%%s+pass") then seen.gate = true end
      local esc_a = screen("a", true)
      if esc_a:find("\27%[3[123]m") then colour_seen = true end
      local esc_b = screen("b", true)
      if esc_b:find("\27%[3[123]m") then nocolour_clean = false end
      rollout.sleep(0.1)
    end
    local res = run:wait()
    assert.equals(1, res.code, dump(res))
    assert.truthy(fs.stat(code_a), "rollout watch did not end with the rollout:\n" .. screen("a"))
    local final = screen("a")
    assert.is_true(seen.holding, "never saw a stage holding with its time left:\n" .. final)
    assert.is_true(seen.stage2, "never saw stage 2 holding:\n" .. final)
    assert.is_true(seen.pending, "never saw the error_rate trigger pending with its time held of `for`:\n" .. final)
    assert.is_true(seen.gate, "never saw the last gate's values against thresholds:\n" .. final)
    -- the last frame: the stages, the trigger fired, the events, the outcome
    assert.matches("rollout dwcp%-v3%s+v2%.9%.0 %-> v3%.0%.0", final)
    assert.matches("1%s+Initial%s+5%%%s+5%.0s%s+passed", final)
    assert.matches("2%s+Ramp%-Up%s+25%%%s+10%.0s%s+rolled back %(trigger:error_rate%)", final)
    assert.matches("3%s+%S+%s+50%%%s+%S+%s+pending", final)
    assert.matches("error_rate%s+FIRED at [%d%.]+s", final)
    assert.matches("latency_p99%s+inactive", final)
    assert.matches("RECENT EVENTS", final)
    assert.matches("ROLLBACK: trigger:error_rate", final)
    assert.matches("outcome: rolled_back %(trigger:error_rate%) at [%d%.]+s", final)
    -- its exit code is the rollout's, in both terminals
    assert.equals("1", (fs.read(code_a) or ""):match("%d+"))
    local d2 = rollout.now() + 10
    while not fs.stat(code_b) and rollout.now() < d2 do rollout.sleep(0.1) end
    assert.equals("1", (fs.read(code_b) or ""):match("%d+"))
    -- redrawn in place: one header in the whole history, not one per update
    assert.equals(1, count(history("a"), "RECENT EVENTS"), history("a"))
    -- colour on a terminal; none with NO_COLOR
    assert.is_true(colour_seen, "no colour on the terminal")
    assert.is_true(nocolour_clean, "colour despite NO_COLOR")
    assert.matches("outcome: rolled_back", screen("b"))
  end, { timeout = 150 })
end)

describe("rollout watch without a terminal", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  it("prints one line per change and exits with the rollout's code", function()
    s = assert(demo_stack.start({ rps = 200 }))
    s:on_weight(25, function() assert(s.canary:fault({ error_rate = 0.2 })) end)
    local run = start_run(s, { timeout = 90, json = true })
    local sock = find_socket(s)
    local r = assert(proc.run({ argv = { rollout.exe, "watch", sock }, timeout = 90 }))
    local res = run:wait()
    assert.equals(1, res.code, dump(res))
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.falsy(r.stdout:find("\27", 1, true), "no escapes without a terminal")
    assert.matches("^watching dwcp%-v3 v2%.9%.0 %-> v3%.0%.0: ", r.stdout)
    assert.matches("\n%[%s*[%d%.]+s%] stage Ramp%-Up %(2%): weight 25%%, hold 10%.0s\n", r.stdout)
    assert.matches("\n%[%s*[%d%.]+s%] trigger error_rate pending", r.stdout)
    assert.matches("\n%[%s*[%d%.]+s%] trigger error_rate FIRED after 2%.0s", r.stdout)
    assert.matches("\noutcome: rolled_back %(trigger:error_rate%) at [%d%.]+s\n$", r.stdout)
    -- each change once: the stage line is not repeated by the polling
    local _, n = r.stdout:gsub("stage Ramp%-Up %(2%)", "")
    assert.equals(1, n)
    -- the journal says the same: every decision line the watcher printed is an event of the run
    local fired
    for _, ev in ipairs(res.events) do if ev.event == "trigger_fired" then fired = ev end end
    assert.truthy(fired)
    assert.matches(string.format("%%[%%s*%s%%] trigger error_rate FIRED", require("rollout.output").clock(fired.t):gsub("%.", "%%.")), r.stdout)
  end, { timeout = 150 })

  it("exits 2 for no socket at the path (no such rollout), 3 for one nobody listens on, 2 for usage", function()
    local r = assert(proc.run({ argv = { rollout.exe, "watch", "/nonexistent/dir/x.sock" }, timeout = 20 }))
    assert.equals(2, r.code)
    assert.matches("rollout watch: /nonexistent/dir/x%.sock: ", r.stderr)
    local d = assert(fs.mkdtemp("watch-stale"))
    local f = assert(io.open(d .. "/x.sock", "w")); f:write("not a socket"); f:close()
    r = assert(proc.run({ argv = { rollout.exe, "watch", d .. "/x.sock" }, timeout = 20 }))
    fs.rmtree(d)
    assert.equals(3, r.code, r.stderr)
    r = assert(proc.run({ argv = { rollout.exe, "watch" }, timeout = 20 }))
    assert.equals(2, r.code)
    assert.matches("usage: rollout watch", r.stderr)
  end)
end)

describe("rollout watch --etcd (fleet mode)", function()
  local H = require("spec.fixtures.fleet.harness")
  local E, backends, hx, dir, agent, tmux_name
  local function tmux(...)
    return assert(proc.run({ argv = { "tmux", "-L", tmux_name, ... }, timeout = 10 }))
  end
  after_each(function()
    if tmux_name then pcall(tmux, "kill-server") end
    if agent then pcall(agent.stop) end
    if hx then hx.stop() end
    if backends then backends.stop() end
    if E then E.stop() end
    if dir then fs.rmtree(dir) end
    E, backends, hx, dir, agent, tmux_name = nil, nil, nil, nil, nil, nil
  end)

  it("follows a rollout an agent drives, in tmux and in a pipe, and exits with its code", function()
    E = assert(H.etcd())
    backends = H.backends()
    hx = H.haproxy(1, backends)
    dir = assert(fs.mkdtemp("watch-fleet"))
    local prefix = "/w/"
    agent = H.agent({ name = "a1", etcd = E.url, prefix = prefix, ttl = 2, dir = dir })
    H.submit(E.url, prefix, "web", "spec/fixtures/fleet/playbooks/canary.lua", { "--set", "router.socket=" .. hx.socket,
      "--set", "router.backend=be1", "--scenario", "spec/fixtures/fleet/scenarios/fails-late.lua", "--set", "stages[3].hold=3s" })
    tmux_name = "rollout-watch-fleet-" .. fs.getpid()
    local code_file = dir .. "/watch.code"
    tmux("new-session", "-d", "-s", "f", "-x", "120", "-y", "40", string.format("TERM=xterm %s watch --etcd %s --prefix %s web; echo $? > %s; sleep 60",
      rollout.exe, E.url, prefix, code_file))
    local r = assert(proc.run({ argv = { rollout.exe, "watch", "--etcd", E.url, "--prefix", prefix, "web" }, timeout = 60 }))
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("^watching svc v1 %-> v2: ", r.stdout)
    assert.matches("\n%[%s*[%d%.]+s%] stage s1 %(1%): weight 10%%", r.stdout)
    assert.matches("\n%[%s*[%d%.]+s%] trigger error_rate FIRED", r.stdout)
    assert.matches("\noutcome: rolled_back %(trigger:error_rate%) at [%d%.]+s\n$", r.stdout)
    local _, n = r.stdout:gsub("stage s1 %(1%)", "")
    assert.equals(1, n, "each change once")
    local deadline = rollout.now() + 15
    while not fs.stat(code_file) and rollout.now() < deadline do rollout.sleep(0.1) end
    assert.equals("1", (fs.read(code_file) or ""):match("%d+"))
    local scr = tmux("capture-pane", "-p", "-t", "f").stdout
    -- the stages come from the submitted bundle, the states from the replicated journal
    assert.matches("1%s+s1%s+10%%%s+1%.5s%s+passed", scr)
    assert.matches("3%s+s3%s+60%%%s+3%.0s%s+rolled back %(trigger:error_rate%)", scr)
    assert.matches("4%s+s4%s+100%%%s+1%.5s%s+pending", scr)
    assert.matches("error_rate%s+FIRED at [%d%.]+s%s+error_rate > 5%%", scr)
    assert.matches("outcome: rolled_back %(trigger:error_rate%)", scr)
    local bad = assert(proc.run({ argv = { rollout.exe, "watch", "--etcd", E.url, "--prefix", prefix, "nope" }, timeout = 20 }))
    assert.equals(2, bad.code, "no such rollout (rollout.exit NOT_FOUND), as ctl --etcd")
    assert.matches("no rollout 'nope'", bad.stderr)
  end, { timeout = 120 })
end)

-- Faults: slow scrape targets, a Prometheus answering 503, 422 or garbage, the wall clock
-- set back (and forward) during a hold, and connection faults (iptables DROP and REJECT in a
-- network namespace this spec creates). In each the engine keeps its promises: timeouts are
-- honoured, a failed source gives source_error events and never values, enough of them in a
-- row make the stage inconclusive, and holds are measured on the monotonic clock.
--
-- The journal on a full or read-only disk is spec/journal_spec.lua's ("the engine never acts
-- without a record": a real run whose tmpfs fills up pauses and goes on when it can write;
-- a journal directory that cannot be written refuses before anything is done).
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local json = require("rollout.json")
local sources = require("rollout.sources")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local output = require("rollout.output")
local servers = require("spec.support.servers")
local live = require("spec.support.live_rollout")

local FAULT_SERVER = fs.realpath("spec/support/fault_server.py")
local VERSIONS = { baseline = { version = "v1" }, canary = { version = "v2" } }

local function fault_server()
  return assert(servers.start{ name = "fault_server.py", argv = { "/usr/bin/python3", FAULT_SERVER, "{port}" },
    ready_url = "http://127.0.0.1:{port}/health" })
end

local function source_ctx() return { versions = VERSIONS, service = "faults", emit = function() end } end

-- A source that answers its first round from `good` and fails from then on as `bad` does:
-- the engine shifts no traffic before every source has answered once (rollout.safety), so
-- a fault during a stage starts after that first answer.
local function ready_then(good, bad)
  local w = { name = bad.name, provides = bad.provides, cur = good }
  function w.tick(self, now) return self.cur:tick(now) end
  function w.signals(self, now, win)
    local a, b = self.cur:signals(now, win)
    self.cur = bad
    return a, b
  end
  return w
end

-- An engine on the real clock with `src` as its only source and the simulated router; the
-- events it emitted, also through the --json printer (which must survive any error text).
local function run_engine(src, extra)
  local raw = { name = "faults", versions = VERSIONS, interval = "100ms", trigger_window = "1s", gate_window = "1s",
    policy = { consecutive_error_limit = 3 }, stages = { { weight = 10, hold = "3s" }, { weight = 100, hold = "1s" } } }
  for k, v in pairs(extra or {}) do raw[k] = v end
  local pb = assert(playbook.validate(raw, { file = "faults" }))
  local events, text = {}, {}
  local printer = output.printer({ json = true, out = { write = function(_, ...) for _, s in ipairs({ ... }) do text[#text + 1] = s end end,
    flush = function() end } })
  local router = require("rollout.sim.router").new({ now = rollout.now })
  local e = engine.new(pb, { router = router, sources = { src }, who = "spec",
    emit = function(ev, eng) events[#events + 1] = ev; printer(ev, eng) end })
  local outcome = e:run()
  return outcome, events, table.concat(text)
end

local function of(events, kind)
  local out = {}
  for _, ev in ipairs(events) do if ev.event == kind then out[#out + 1] = ev end end
  return out
end

describe("faults: slow scrape targets", function()
  local s
  setup(function() s = fault_server() end)
  teardown(function() s:stop() end)

  it("a scrape slower than its timeout is an error after the timeout, not a value", function()
    local src = sources.new({ type = "scrape", timeout = "0.3s",
      targets = { baseline = s.url .. "/slow/3000/metrics", canary = s.url .. "/metrics" } }, source_ctx())
    local t0 = rollout.now()
    local ok, err = src:tick(rollout.now())
    local took = rollout.now() - t0
    assert.is_nil(ok)
    assert.matches("scrape baseline: timed out after 0.3 s", err)
    assert.ge(took, 0.29)
    assert.lt(took, 1.5, "the timeout was honoured")
  end)

  it("the engine marks each slow evaluation as a source error and goes inconclusive after the limit", function()
    local src = ready_then(
      sources.new({ type = "scrape", timeout = "0.2s", targets = { baseline = s.url .. "/metrics", canary = s.url .. "/metrics" } },
        source_ctx()),
      sources.new({ type = "scrape", timeout = "0.2s",
        targets = { baseline = s.url .. "/slow/2000/metrics", canary = s.url .. "/slow/2000/metrics" } }, source_ctx()))
    local t0 = rollout.now()
    local outcome, events = run_engine(src)
    assert.equals("paused", outcome.outcome)
    assert.equals("inconclusive:source_errors", outcome.reason)
    local errs = of(events, "source_error")
    assert.equals(4, #errs, "consecutive_error_limit 3, then the fourth makes it inconclusive")
    for i, ev in ipairs(errs) do
      assert.equals(i, ev.consecutive)
      assert.matches("timed out after 0.2 s", ev.error)
    end
    assert.equals(0, #of(events, "evaluation"), "no values from a source that failed")
    assert.lt(rollout.now() - t0, 10, "each slow scrape cost its timeout, not the target's 2 s")
  end, { timeout = 60 })
end)

describe("faults: Prometheus answering 503, 422 and garbage", function()
  local s
  setup(function() s = fault_server() end)
  teardown(function() s:stop() end)

  local EXPECT = {
    ["503"] = "HTTP 503 from",
    ["422"] = "bad_data: 1:5: parse error: unexpected <EOF> %(HTTP 422%)",
    garbage = "not a Prometheus API response",
    truncated = "not a Prometheus API response",
  }

  it("each is nil, err naming what went wrong", function()
    for mode, want in pairs(EXPECT) do
      local src = sources.new({ type = "prometheus", url = s.url .. "/prom/" .. mode, timeout = "1s" }, source_ctx())
      local v, err = src:query("up")
      assert.is_nil(v, mode)
      assert.matches(want, err, mode)
      local sig, serr = src:signals(rollout.now(), 60)
      assert.is_nil(sig, mode)
      assert.matches(want, serr, mode)
    end
    local ok = sources.new({ type = "prometheus", url = s.url .. "/prom/ok", timeout = "1s" }, source_ctx())
    assert.equals(1, ok:query("up").series[1].value, "the fake answers a real vector when asked to")
  end)

  it("the engine turns them into source_error events and an inconclusive stage; --json survives the garbage", function()
    for _, mode in ipairs({ "503", "422", "garbage" }) do
      local src = ready_then(sources.new({ type = "prometheus", url = s.url .. "/prom/ok", timeout = "1s" }, source_ctx()),
        sources.new({ type = "prometheus", url = s.url .. "/prom/" .. mode, timeout = "1s" }, source_ctx()))
      local outcome, events, text = run_engine(src)
      assert.equals("paused", outcome.outcome, mode)
      assert.equals("inconclusive:source_errors", outcome.reason, mode)
      local errs = of(events, "source_error")
      assert.equals(4, #errs, mode)
      assert.matches(EXPECT[mode], errs[1].error, mode)
      assert.equals(0, #of(events, "evaluation"), mode)
      local lines = 0
      for line in text:gmatch("[^\n]+") do
        assert.is_table(json.decode(line), mode .. ": every --json line is JSON")
        lines = lines + 1
      end
      assert.equals(#events, lines, mode .. ": every event was printed")
    end
  end, { timeout = 90 })
end)

describe("faults: the wall clock jumps during a hold", function()
  local LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

  it("holds are measured on the monotonic clock (libfaketime: CLOCK_REALTIME 2 h back during one hold, 6 h forward during the next)", function()
    if not fs.stat(LIBFAKETIME) then
      print("  (skipped: " .. LIBFAKETIME .. " is missing; make deps installs faketime)")
      return
    end
    -- libfaketime and AddressSanitizer both wrap clock_gettime at startup and hang together:
    -- under `make asan` this runs the plain build beside it (the engine's logic is the same)
    local exe = rollout.exe
    if exe:match("%-asan$") then
      exe = exe:gsub("%-asan$", "")
      if not fs.stat(exe) then print("  (skipped: libfaketime cannot run with ASan and " .. exe .. " is not built)"); return end
    end
    local env = live.env()
    -- every hook logs the process's wall clock (os.time, which libfaketime moves)
    local pbfile = live.variant(env, "wall", [[
      pb.hooks = {
        before_stage = function(ctx) ctx.log("wall before " .. ctx.stage .. " " .. os.time()) end,
        after_stage = function(ctx) ctx.log("wall after " .. ctx.stage .. " " .. os.time()) end,
      }]])
    local offset = env.dir .. "/faketime"
    assert(fs.write_atomic(offset, "-7200\n")) -- the run starts with its wall clock 2 h behind
    local argv = { exe, "run", pbfile, "--json", "--journal", env.journal_dir, "--run-dir", env.run_dir }
    for _, a in ipairs(env.sets) do argv[#argv + 1] = a end
    local t0, wall0 = rollout.now(), os.time()
    local child = assert(proc.spawn({ argv = argv, cwd = env.dir, stdout = env.dir .. "/run.out", stderr = env.dir .. "/run.err",
      env = { LD_PRELOAD = LIBFAKETIME, FAKETIME_TIMESTAMP_FILE = offset, FAKETIME_NO_CACHE = "1",
        FAKETIME_DONT_FAKE_MONOTONIC = "1" } }))
    local ok, err = pcall(function()
      live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == 10 end) end, 30, "stage ten")
      rollout.sleep(0.3)
      assert(fs.write_atomic(offset, "-14400\n")) -- two more hours back, in the middle of stage ten's hold
      live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == 50 end) end, 30, "stage half")
      rollout.sleep(0.3)
      assert(fs.write_atomic(offset, "+7200\n")) -- six hours forward in the middle of stage half's
    end)
    local code = child:wait(60)
    local took = rollout.now() - t0
    local events = live.events(env)
    local stderr = fs.read(env.dir .. "/run.err") or ""
    env.stop()
    assert(ok, err)
    assert.equals(0, code, "promoted: " .. stderr)
    local gates, wall = {}, {}
    for _, ev in ipairs(events) do
      if ev.event == "gate" then gates[ev.stage] = ev end
      local when, stage, t = tostring(ev.message):match("^wall (%a+) (%a+) (%d+)$")
      if when then wall[when .. " " .. stage] = tonumber(t) end
    end
    -- the fake clock reached the process: it started 2 h behind, went back during ten, forward during half
    assert.near(wall0 - 7200, wall["before ten"], 120, "libfaketime was in effect from the start")
    assert.lt(wall["after ten"], wall["before ten"] - 3600, "the wall clock went back during stage ten's hold")
    assert.gt(wall["after half"], wall["before half"] + 3600, "the wall clock went forward during stage half's hold")
    -- fast-haproxy.lua: ten 1.5 s, half 1.5 s, full 1 s
    assert.near(1.5, gates.ten.held, 0.6, "stage ten held its 1.5 s although the wall clock went 2 h back")
    assert.near(1.5, gates.half.held, 0.6, "stage half held its 1.5 s although the wall clock went 6 h forward")
    assert.lt(took, 30, "no hold waited for the wall clock")
    local last_t = -1
    for _, ev in ipairs(events) do
      if ev.t then assert.ge(ev.t, last_t - 1e-6, "event time t is monotonic"); last_t = ev.t end
    end
  end, { timeout = 120 })
end)

describe("faults: connection faults in a network namespace", function()
  local ns = "rollout-faults-" .. fs.getpid()
  local host_if, ns_if = "rfh" .. fs.getpid() % 100000, "rfn" .. fs.getpid() % 100000
  local net = "10.231." .. (fs.getpid() % 200 + 20)
  local host_ip, ns_ip = net .. ".1", net .. ".2"
  local server, server_url, server_port, made

  local function sh(argv, allow_fail)
    local r = assert(proc.run({ argv = argv, timeout = 20 }))
    if r.code ~= 0 and not allow_fail then error(table.concat(argv, " ") .. ": " .. r.stderr, 2) end
    return r
  end
  local function in_ns(argv, allow_fail)
    local a = { "ip", "netns", "exec", ns }
    for _, x in ipairs(argv) do a[#a + 1] = x end
    return sh(a, allow_fail)
  end

  local function cleanup()
    if server then server:kill("KILL"); server:wait(5); server = nil end
    if made == true then
      sh({ "ip", "netns", "del", ns }, true) -- takes the veth pair with it
      sh({ "ip", "link", "del", host_if }, true)
    end
  end

  local function build()
    sh({ "ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if })
    sh({ "ip", "link", "set", ns_if, "netns", ns })
    sh({ "ip", "addr", "add", host_ip .. "/30", "dev", host_if })
    sh({ "ip", "link", "set", host_if, "up" })
    in_ns({ "ip", "addr", "add", ns_ip .. "/30", "dev", ns_if })
    in_ns({ "ip", "link", "set", ns_if, "up" })
    in_ns({ "ip", "link", "set", "lo", "up" })
    local port = servers.free_port()
    server = assert(proc.spawn({ argv = { "ip", "netns", "exec", ns, "/usr/bin/python3", FAULT_SERVER, tostring(port), ns_ip },
      stdout = "null", stderr = "null" }))
    server_url, server_port = "http://" .. ns_ip .. ":" .. port, port
    local http = require("rollout.http")
    local deadline = rollout.now() + 15
    while rollout.now() < deadline do
      local res = http.get(server_url .. "/health", { timeout = 0.5 })
      if res and res.status == 200 then return end
      rollout.sleep(0.05)
    end
    error("the fault server in " .. ns .. " did not come up")
  end

  setup(function()
    local r = sh({ "ip", "netns", "add", ns }, true)
    if r.code ~= 0 then made = "cannot create a network namespace: " .. r.stderr:gsub("%s+$", ""); return end
    made = true
    local ok, err = pcall(build)
    if not ok then cleanup(); error(err, 0) end -- the runner skips teardown after a failed setup
  end)

  teardown(cleanup)

  local function skip_reason()
    if made ~= true then return made or "no network namespace" end
    local r = in_ns({ "iptables", "-L", "INPUT", "-n" }, true)
    if r.code ~= 0 then return "iptables does not work in the namespace: " .. r.stderr:gsub("%s+$", "") end
  end

  local function scrape(timeout)
    local src = sources.new({ type = "scrape", timeout = timeout,
      targets = { baseline = server_url .. "/metrics", canary = server_url .. "/metrics" } }, source_ctx())
    local t0 = rollout.now()
    local ok, err = src:tick(rollout.now())
    return ok, err, rollout.now() - t0
  end

  it("DROP: a scrape times out after its timeout; REJECT: it fails at once; both are errors, not values", function()
    local why = skip_reason()
    if why then print("  (skipped: " .. why .. ")"); return end
    local ok, err = scrape("1s")
    assert.is_true(ok, "reachable before the fault: " .. tostring(err))
    local rule = { "INPUT", "-p", "tcp", "--dport", tostring(server_port), "-j", "DROP" }
    in_ns({ "iptables", "-A", table.unpack(rule) })
    local took
    ok, err, took = scrape("0.5s")
    in_ns({ "iptables", "-D", table.unpack(rule) })
    assert.is_nil(ok)
    assert.matches("timed out after 0.5 s", err)
    assert.ge(took, 0.45)
    assert.lt(took, 2, "DROP: the timeout was honoured")
    local reject = { "INPUT", "-p", "tcp", "--dport", tostring(server_port), "-j", "REJECT", "--reject-with", "tcp-reset" }
    in_ns({ "iptables", "-A", table.unpack(reject) })
    ok, err, took = scrape("5s")
    in_ns({ "iptables", "-D", table.unpack(reject) })
    assert.is_nil(ok)
    assert.matches("scrape baseline: ", err)
    assert.lt(took, 1, "REJECT: refused at once, not after the 5 s timeout")
    ok, err = scrape("1s")
    assert.is_true(ok, "reachable again once the rule is gone: " .. tostring(err))
  end, { timeout = 60 })

  it("the engine, with its target behind DROP mid-stage, reports source errors and goes inconclusive", function()
    local why = skip_reason()
    if why then print("  (skipped: " .. why .. ")"); return end
    local src = sources.new({ type = "scrape", timeout = "0.3s", latency = false, cpu = false, memory = false, start_time = false,
      targets = { baseline = server_url .. "/metrics", canary = server_url .. "/metrics" } }, source_ctx())
    local rule = { "INPUT", "-p", "tcp", "--dport", tostring(server_port), "-j", "DROP" }
    local dropper = rollout.spawn(function()
      rollout.sleep(1.5)
      in_ns({ "iptables", "-A", table.unpack(rule) })
    end)
    local t0 = rollout.now()
    local outcome, events = run_engine(src, { stages = { { weight = 10, hold = "20s" }, { weight = 100, hold = "1s" } } })
    dropper:wait(5)
    in_ns({ "iptables", "-D", table.unpack(rule) }, true)
    assert.equals("paused", outcome.outcome)
    assert.equals("inconclusive:source_errors", outcome.reason)
    local errs = of(events, "source_error")
    assert.equals(4, #errs)
    for _, ev in ipairs(errs) do assert.matches("timed out after 0.3 s", ev.error) end
    assert.lt(rollout.now() - t0, 15, "four timed-out evaluations cost about their timeouts, well before the 20 s hold")
  end, { timeout = 60 })
end)

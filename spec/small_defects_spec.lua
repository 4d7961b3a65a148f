-- Smaller defects of issue 16, each against what a user runs (rollout run of fast-haproxy.lua
-- against a real HAProxy where a run is involved):
--   intervals and windows have sane minimums (interval=1ns is an error, exit 2);
--   a start refused with exit 2 (control socket in use) leaves no journal behind to block
--   the next run;
--   t is the engine's clock: rollout_resumed says how long no engine ran (`down`);
--   a duplicated journal line is refused on resume;
--   a bad value from --config is reported at the YAML file, line and key;
--   /metrics lingers after the outcome (--metrics-linger);
--   the log lines: signal-formatted trigger values, sub-ms latencies, "? -> ?" after
--   --resume, a comma before "samples", a condition text for alert triggers.
-- (A playbook error inside a metamethod exits 2: spec/sandbox_spec.lua.)
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local net = require("rollout.net")
local proc = require("rollout.proc")
local journal = require("rollout.journal")
local live = require("spec.support.live_rollout")

local function cli(argv, timeout)
  local full = { rollout.exe }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local t0 = rollout.now()
  local r = assert(proc.run({ argv = full, timeout = timeout or 30 }))
  r.elapsed = rollout.now() - t0
  return r
end

describe("intervals and windows", function()
  it("interval=1ns is an error (exit 2) for check, simulate and run, at once", function()
    local pb = "spec/fixtures/playbooks/minimal.lua"
    for _, argv in ipairs({
      { "check", "--offline", pb, "--set", "interval=1ns" },
      { "simulate", pb, "--scenario", "spec/fixtures/fleet/scenarios/healthy.lua", "--set", "interval=1ns" },
      { "run", pb, "--set", "interval=1ns", "--no-control", "--journal", "/nonexistent/never-made" },
    }) do
      local r = cli(argv)
      assert.equals(2, r.code, argv[1] .. ": " .. r.stderr)
      assert.matches("minimal%.lua:%d+: interval: must be at least 100ms, got 1ns", r.stderr)
      assert.lt(r.elapsed, 10)
    end
    local r = cli({ "check", "--offline", pb, "--set", "interval=2s", "--set", "trigger_window=500ms",
      "--set", "gate_window=1s", "--set", "triggers.errors.window=1s" })
    assert.equals(2, r.code)
    assert.matches("trigger_window: must be at least the interval %(2s%), got 500ms", r.stderr)
    assert.matches("gate_window: must be at least the interval %(2s%), got 1s", r.stderr)
    assert.matches("triggers%.errors%.window: must be at least the interval %(2s%), got 1s", r.stderr)
    assert.equals(0, cli({ "check", "--offline", pb, "--set", "interval=100ms", "--set", "trigger_window=100ms" }).code)
  end)
end)

describe("--config YAML errors", function()
  it("name the YAML file, line and key, also when the playbook's check finds them", function()
    local dir = assert(fs.mkdtemp("config-lines"))
    local text = assert(fs.read("playbooks/canary-config.yaml"))
    text = text:gsub("trafficPercent: 25", "trafficPercent: 150", 1):gsub("minRequestsPerSecond: 100", "minRequestsPerSecond: -5", 1)
    assert(fs.write_atomic(dir .. "/bad.yaml", text))
    local line_of = {}
    local n = 0
    for l in (text .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      if l:find("trafficPercent: 150", 1, true) then line_of.weight = n end
      if l:find("minRequestsPerSecond: -5", 1, true) then line_of.rps = n end
    end
    local r = cli({ "check", "--offline", "playbooks/canary.lua", "--config", dir .. "/bad.yaml" })
    fs.rmtree(dir)
    assert.equals(2, r.code, r.stderr)
    assert.matches("bad%.yaml:" .. line_of.weight .. ": spec%.stages%[2%]%.trafficPercent: must be between 0 and 100, got 150", r.stderr)
    assert.matches("bad%.yaml:" .. line_of.rps .. ": spec%.goldenSignals%.traffic%.minRequestsPerSecond: must be at least 0, got %-5", r.stderr)
    assert.is_nil(r.stderr:find("canary%.lua:%d+: stages"), "not at the .lua line")
  end)
end)

describe("a run against HAProxy", function()
  local env
  after_each(function() if env then env.stop() end; env = nil end)

  it("refused at the start (socket in use) leaves no journal to block the next run", function()
    env = live.env()
    env.playbook = live.variant(env, "long", 'pb.stages[1].hold = "10m"')
    local first = live.start(env)
    live.wait_socket(env)
    local other_journal = env.dir .. "/journal-2"
    local r = cli({ "run", env.playbook, "--journal", other_journal, "--run-dir", env.run_dir,
      "--set", "router.socket=" .. env.hx.socket })
    assert.equals(2, r.code, r.stderr)
    assert.matches("control socket", r.stderr)
    assert.same({}, journal.list(other_journal), "the refused start left a journal behind")
    first:kill("KILL"); first:wait(10)
    -- the next run in that journal directory starts; an empty journal from an older version is passed over
    assert(fs.write_atomic(other_journal .. "/20000101T000000.000-1.jsonl", ""))
    r = cli({ "run", live.PLAYBOOK, "--journal", other_journal, "--run-dir", env.dir .. "/run-3", "--json",
      "--set", "router.socket=" .. env.hx.socket, "--set", "versions.baseline.url=http://" .. env.b.v1,
      "--set", "versions.canary.url=http://" .. env.b.v2 }, 60)
    assert.is_nil(r.stderr:find("unfinished rollout", 1, true), r.stderr)
    assert.equals(0, r.code, r.stderr)
  end, { timeout = 120 })

  it("t is the engine's clock; rollout_resumed says how long no engine ran", function()
    env = live.env()
    env.playbook = live.variant(env, "slow", 'pb.stages[1].hold = "3s"')
    local run = live.start(env)
    live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.stage == "ten" end) end, 30)
    rollout.sleep(0.5)
    run:kill("KILL"); run:wait(10)
    local before = live.events(env)
    local last = before[#before]
    rollout.sleep(2)
    local again = live.start(env, { "--resume" })
    assert.equals(0, again:wait(60), again:stderr())
    local resumed = live.find(live.events(env), "rollout_resumed")
    assert.truthy(resumed.down, "rollout_resumed carries down")
    assert.gt(resumed.down, 1.9, "the two seconds no engine ran")
    assert.lt(resumed.down, 10)
    -- t goes on from where the dead engine left it; ts shows the gap
    assert.lt(resumed.t - last.t, 1.0, "t does not count the downtime")
    assert.gt(resumed.ts - last.ts, 1.9)
  end, { timeout = 120 })

  it("refuses to resume a journal with a duplicated line", function()
    env = live.env()
    env.playbook = live.variant(env, "slow", 'pb.stages[1].hold = "10m"')
    local run = live.start(env)
    live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.stage == "ten" end) end, 30)
    run:kill("KILL"); run:wait(10)
    local path = journal.list(env.journal_dir)[1]
    local lines = {}
    for l in assert(fs.read(path)):gmatch("[^\n]+") do lines[#lines + 1] = l end
    table.insert(lines, 4, lines[4]) -- line 4 twice
    assert(fs.write_atomic(path, table.concat(lines, "\n") .. "\n"))
    local again = live.start(env, { "--resume" })
    assert.equals(2, again:wait(30))
    assert.matches("%.jsonl:5: corrupt journal: seq 4 after seq 4", again:stderr())
    assert.same({ baseline = 90, canary = 10 }, (live.router(env):get_weights()), "nothing acted on it")
  end, { timeout = 90 })

  it("keeps /metrics up for --metrics-linger after the outcome", function()
    env = live.env({ canary_args = { "--error-rate", "0.5" } })
    local port
    do local s = assert(net.listen_tcp("127.0.0.1", 0)); port = s:port(); s:close() end
    local run = live.start(env, { "--no-control", "--metrics-listen", "127.0.0.1:" .. port, "--metrics-linger", "2s" })
    local outcome_at = live.wait_for(env, function(evs) return live.find(evs, "outcome") and rollout.now() end, 60, "the outcome")
    local scraped
    while run.child:running() do
      local r = http.get("http://127.0.0.1:" .. port .. "/metrics", { timeout = 1 })
      if r and r.status == 200 and r.body:find('rollout_outcome_info{service="fast",outcome="rolled_back"', 1, true) then
        scraped = rollout.now()
      end
      rollout.sleep(0.1)
    end
    local ended = rollout.now()
    assert.equals(1, run:wait(5))
    assert.truthy(scraped, "the outcome was scraped after it happened")
    assert.gt(scraped - outcome_at, 1.0, "still scraped a second after the outcome")
    assert.gt(ended - outcome_at, 1.5)
    assert.lt(ended - outcome_at, 8)
    assert.matches("/metrics stays up 2s", run:stderr())
    assert.equals(15, require("rollout.metrics_endpoint").LINGER, "the default: one scrape interval")
    local bad = cli({ "run", live.PLAYBOOK, "--metrics-linger", "soon", "--no-control", "--journal", env.dir .. "/j2" })
    assert.equals(2, bad.code)
    assert.matches("%-%-metrics%-linger", bad.stderr)
  end, { timeout = 90 })
end)

describe("log lines", function()
  local output = require("rollout.output")
  local engine = require("rollout.engine")

  it("format trigger values by their signal and leave out a value there is none of", function()
    assert.equals("trigger errors pending: error_rate > 5% (value 17.81%, for 2.0s)", output.line({ event = "trigger_pending",
      trigger = "errors", value = 0.17808219178082, signal = "error_rate", condition = "error_rate > 5%", ["for"] = 2 }))
    assert.equals("trigger slow FIRED after 5.0s: latency_p99 > 1s (value 1234ms)", output.line({ event = "trigger_fired",
      trigger = "slow", value = 1.2341, signal = "p99", condition = "latency_p99 > 1s", held = 5 }))
    assert.equals("trigger custom pending: check (for 0.0s)", output.line({ event = "trigger_pending", trigger = "custom",
      condition = "check", ["for"] = 0 }))
    assert.is_nil(output.line({ event = "trigger_pending", trigger = "x", ["for"] = 0 }):find("nil", 1, true))
  end)

  it("give alert and restart triggers a condition text", function()
    assert.equals("alert service=dwcp-v3,severity=critical",
      engine.trigger_text({ kind = "alert", alert = { severity = "critical", service = "dwcp-v3" } }))
    assert.equals("restarts >= 3 within 300s", engine.trigger_text({ kind = "restarts", restarts = 3, within = 300 }))
    assert.equals("trigger critical_alert pending: alert severity=critical (value DWCPDown, for 0.0s)",
      output.line({ event = "trigger_pending", trigger = "critical_alert", value = "DWCPDown", ["for"] = 0,
        condition = engine.trigger_text({ kind = "alert", alert = { severity = "critical" } }) }))
  end)

  it("show sub-millisecond latencies, and a comma before samples", function()
    assert.equals("0.12ms", output.value("p99", 0.00012))
    assert.equals("4.9ms", output.value("p99", 0.004895))
    assert.equals("61ms", output.value("p99", 0.061))
    assert.equals("0ms", output.value("p50", 0))
    assert.equals("gate ten: pass  error_rate 0.00% <= 5.00%, p99 0.34ms <= 500ms, samples 55/17, rps 9.8/0",
      output.line({ event = "gate", stage = "ten", result = "pass", samples = 55, min_samples = 17, total_rps = 9.75,
        checks = { { signal = "error_rate", dir = "max", value = 0, threshold = 0.05, status = "pass" },
          { signal = "p99", dir = "max", value = 0.000344, threshold = 0.5, status = "pass" } } }))
  end)

  it("name the versions in the live view's header after --resume", function()
    local progress = require("rollout.progress")
    local parts = {}
    local out = { write = function(self, ...) for _, s in ipairs({ ... }) do parts[#parts + 1] = s end return self end,
      flush = function() end }
    local view = progress.new({ out = out, line = output.line, value = output.value, clock = output.clock,
      color = false, unicode = false, refresh = false, width = 80 })
    local eng = { pb = { service = "fast", versions = { baseline = { version = "v1" }, canary = { version = "v2" } },
      stages = { { name = "ten", weight = 10, hold = 1.5, thresholds = {} } }, triggers = {}, thresholds = {} } }
    view.emit({ event = "rollout_resumed", t = 3, phase = "stage", stage_index = 1, held = 1 }, eng)
    view.emit({ event = "stage_resumed", t = 3, stage = "ten", index = 1, weight = 10, hold = 1.5, held = 1 }, eng)
    local text = table.concat(parts)
    assert.matches("fast  v1 %-> v2", text)
    assert.is_nil(text:find("? -> ?", 1, true))
  end)
end)

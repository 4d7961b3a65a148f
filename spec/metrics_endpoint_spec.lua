-- /metrics: the collector against recorded event streams, the HTTP server (keep-alive,
-- HEAD, 404, 405), promtool's lint, and a real Prometheus (fresh data dir,
-- loopback, scrape_interval 1s) scraping a live rollout, its series read back through
-- /api/v1/query and /api/v1/query_range.
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local net = require("rollout.net")
local proc = require("rollout.proc")
local me = require("rollout.metrics_endpoint")
local servers = require("spec.support.servers")
local obs = require("spec.support.observability")

local PB = "playbooks/canary.lua"

local function feed(path)
  local c = me.new()
  for line in assert(io.open(path)):lines() do
    local ev = json.decode(line)
    if ev and ev.event then c:observe(ev) end
  end
  return c
end

-- every sample line as name{labels} -> value
local function samples(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local series, value = line:match("^(%S+) (%S+)$")
      assert(series, "not a sample line: " .. line)
      out[series] = tonumber(value) or value
    end
  end
  return out
end

local function promtool(text)
  local r = assert(proc.run({ argv = { "promtool", "check", "metrics" }, stdin = text, timeout = 20 }))
  return r.code == 0, r.stdout .. r.stderr
end

describe("metrics collector", function()
  local dir
  setup(function()
    dir = assert(fs.mkdtemp("metrics-spec"))
    obs.capture(PB, obs.SCENARIOS .. "/error-spike.lua", dir .. "/spike.jsonl")
    obs.capture(PB, obs.SCENARIOS .. "/source-outage.lua", dir .. "/outage.jsonl")
    obs.capture(PB, "spec/fixtures/scenarios/spike-in-rampup.lua", dir .. "/faults.jsonl")
  end)
  teardown(function() fs.rmtree(dir) end)

  it("exposes a rolled-back rollout: phase, weights, gates against thresholds, triggers, decisions", function()
    local text = feed(dir .. "/spike.jsonl"):render()
    local ok, lint = promtool(text)
    assert.is_true(ok, lint)
    local s = samples(text)
    assert.equals(1, s['rollout_info{service="dwcp-v3",playbook="playbooks/canary.lua",baseline="v2.9.0",canary="v3.0.0",'
      .. 'deployment_id=""}'])
    assert.equals(1, s['rollout_phase{service="dwcp-v3",phase="rolled_back"}'])
    assert.equals(0, s['rollout_phase{service="dwcp-v3",phase="progressing"}'])
    assert.equals(2, s['rollout_status{service="dwcp-v3"}'])
    assert.equals(1, s['rollout_outcome_info{service="dwcp-v3",outcome="rolled_back",reason="trigger:error_rate"}'])
    assert.equals(2, s['rollout_stage_index{service="dwcp-v3",stage="Ramp-Up"}'])
    assert.equals(0, s['rollout_canary_weight{service="dwcp-v3"}'])
    assert.equals(100, s['rollout_baseline_weight{service="dwcp-v3"}'])
    assert.equals(0.01, s['rollout_gate_threshold{service="dwcp-v3",stage="Initial",signal="error_rate",dir="max"}'])
    assert.equals(0.99, s['rollout_gate_threshold{service="dwcp-v3",stage="Initial",signal="health",dir="min"}'])
    assert.equals(1, s['rollout_gate_passed{service="dwcp-v3",stage="Initial",signal="p99"}'])
    assert.lt(s['rollout_gate_value{service="dwcp-v3",stage="Initial",signal="error_rate"}'], 0.01)
    assert.equals(1, s['rollout_trigger_state{service="dwcp-v3",trigger="error_rate",state="firing"}'])
    assert.gt(s['rollout_trigger_value{service="dwcp-v3",trigger="error_rate"}'], 0.05)
    assert.gt(s['rollout_signal{service="dwcp-v3",version="canary",signal="error_rate"}'], 0.05)
    assert.lt(s['rollout_signal{service="dwcp-v3",version="baseline",signal="error_rate"}'], 0.01)
    assert.equals(1, s['rollout_decisions_total{service="dwcp-v3",decision="advance"}'])
    assert.equals(1, s['rollout_decisions_total{service="dwcp-v3",decision="rollback"}'])
    assert.equals(1, s['rollout_rollbacks_total{service="dwcp-v3",reason="trigger:error_rate"}'])
    assert.equals(1, s['rollout_trigger_fired_total{service="dwcp-v3",trigger="error_rate"}'])
    assert.equals(0, s['rollout_source_errors_total{service="dwcp-v3"}'])
    assert.equals(0, s['rollout_router_errors_total{service="dwcp-v3",operation="shift"}'])
  end)

  it("counts source errors and router errors, and leaves no-data signals out rather than 0", function()
    local s = samples(feed(dir .. "/outage.jsonl"):render())
    assert.equals(1, s['rollout_phase{service="dwcp-v3",phase="paused"}'])
    assert.equals(3, s['rollout_status{service="dwcp-v3"}'])
    assert.equals(5, s['rollout_source_errors_total{service="dwcp-v3"}'])
    assert.equals(5, s['rollout_consecutive_source_errors{service="dwcp-v3"}'])
    assert.equals(1, s['rollout_decisions_total{service="dwcp-v3",decision="pause"}'])
    assert.is_nil(s['rollout_trigger_value{service="dwcp-v3",trigger="error_rate"}'])
    local f = samples(feed(dir .. "/faults.jsonl"):render())
    assert.gt(f['rollout_router_errors_total{service="dwcp-v3",operation="rollback"}'], 0)

    local c = me.new({ service = "x" })
    c:observe({ event = "evaluation", t = 1, baseline = { requests = 10, error_rate = 0 }, canary = { requests = 0 } })
    local e = samples(c:render())
    assert.equals(0, e['rollout_signal{service="x",version="canary",signal="requests"}'])
    assert.is_nil(e['rollout_signal{service="x",version="canary",signal="error_rate"}'])
    assert.equals(0, e['rollout_signal{service="x",version="baseline",signal="error_rate"}'])
  end)

  it("documents every metric it can expose", function()
    local doc = assert(fs.read("docs/observability.md"))
    for _, name in ipairs(me.NAMES) do
      assert.truthy(doc:find("| `" .. name .. "` |", 1, true), name .. " is not documented in docs/observability.md")
    end
  end)

  it("escapes label values", function()
    local c = me.new({ service = 'a"b\\c\nd' })
    c:observe({ event = "rollback_started", t = 1, reason = "manual" })
    local text = c:render()
    assert.truthy(text:find('service="a\\"b\\\\c\\nd"', 1, true))
    local ok, lint = promtool(text)
    assert.is_true(ok, lint)
  end)
end)

describe("metrics endpoint", function()
  it("serves /metrics over HTTP/1.1 with keep-alive, HEAD, 404 and 405", function()
    local ep = assert(me.start("127.0.0.1:0"))
    finally(function() ep:close() end)
    ep.emit({ event = "rollout_started", t = 0, ts = 1700000000, service = "svc", baseline = "v1", canary = "v2", stages = 2 })
    local r = assert(http.get(ep.url))
    assert.equals(200, r.status)
    assert.equals("text/plain; version=0.0.4; charset=utf-8", r.headers["content-type"])
    assert.matches('rollout_phase{service="svc",phase="preflight"} 1\n', r.body)
    assert.matches('rollout_start_time_seconds{service="svc"} 1700000000\n', r.body)
    local c = assert(net.connect_tcp("127.0.0.1", ep.port, 2))
    finally(function() c:close() end)
    local function exchange(req)
      assert(c:send(req))
      local status = c:receive("l", 2)
      local len
      while true do
        local h = c:receive("l", 2)
        if h == "" then break end
        len = len or tonumber(h:match("^Content%-Length: (%d+)$"))
      end
      return status, len
    end
    local st, len = exchange("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equals("HTTP/1.1 200 OK", st)
    assert.equals(#r.body, len)
    st, len = exchange("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equals("HTTP/1.1 200 OK", st)
    assert.equals(#r.body, #c:receive(len, 2))
    st, len = exchange("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equals("HTTP/1.1 404 Not Found", st)
    c:receive(len, 2)
    st, len = exchange("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert.equals("HTTP/1.1 405 Method Not Allowed", st)
    c:receive(len, 2)
    assert.equals(3, ep.scrapes) -- GET, HEAD, GET
  end)

  it("parses listen addresses and refuses a port in use", function()
    assert.same({ "127.0.0.1", 9464 }, { me.parse_addr("127.0.0.1:9464") })
    assert.same({ "*", 9464 }, { me.parse_addr(":9464") })
    assert.same({ "::1", 9464 }, { me.parse_addr("[::1]:9464") })
    assert.is_nil((me.parse_addr("localhost")))
    local ep = assert(me.start("127.0.0.1:0"))
    finally(function() ep:close() end)
    local again, err = me.start("127.0.0.1:" .. ep.port)
    assert.is_nil(again)
    assert.matches("cannot listen on 127%.0%.0%.1:%d+", err)
  end)
end)

describe("metrics scraped by a real Prometheus", function()
  local PROM_CFG = [[
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: rollout
    static_configs:
      - targets: ['127.0.0.1:%d']
]]

  local function query(prom, q)
    local r = assert(http.get(prom.url .. "/api/v1/query?query=" .. http.urlencode(q), { timeout = 5 }))
    local doc = assert(json.decode(r.body))
    assert(doc.status == "success", r.body)
    return doc.data.result
  end

  local function value(prom, q)
    local res = query(prom, q)
    return res[1] and tonumber(res[1].value[2]), res
  end

  it("reads rollout state, gates, triggers and decisions back through the query API", function()
    local ep = assert(me.start("127.0.0.1:0"))
    finally(function() ep:close() end)
    local prom = assert(servers.start {
      name = "prometheus",
      argv = function(port, d)
        assert(fs.write_atomic(d .. "/prometheus.yml", string.format(PROM_CFG, ep.port), 420))
        return { "prometheus", "--config.file=" .. d .. "/prometheus.yml", "--storage.tsdb.path=" .. d .. "/data",
          "--web.listen-address=127.0.0.1:" .. port, "--log.level=warn" }
      end,
      ready_url = "http://127.0.0.1:{port}/-/ready",
      timeout = 30,
    })
    finally(function() prom:stop() end)
    -- wait for the first successful scrape (about 6 s after ready)
    local deadline = rollout.now() + 30
    while rollout.now() < deadline and ep.scrapes == 0 do rollout.sleep(0.2) end
    assert.truthy(ep.scrapes > 0, "prometheus never scraped:\n" .. prom:log())

    local pb = obs.playbook({ stages = {
      { name = "Initial", weight = 10, hold = "2s" }, { name = "Half", weight = 50, hold = "2s" },
      { name = "Full", weight = 100, hold = "2s" } } })
    local t_start = rollout.time()
    local outcome, _, events = obs.run(pb, obs.scenario(), { emit = ep.emit, on_engine = function(e) ep:bind(e) end })
    if outcome.outcome ~= "promoted" then
      local lines = {}
      for _, ev in ipairs(events) do lines[#lines + 1] = json.encode(ev, { sort = true }) end
      error("expected promoted, got " .. tostring(outcome.outcome) .. " " .. tostring(outcome.reason) .. "\n" .. table.concat(lines, "\n"))
    end
    local t_end = rollout.time()

    -- until a scrape after the outcome has landed
    deadline = rollout.now() + 15
    local phase
    while rollout.now() < deadline do
      phase = value(prom, 'rollout_phase{service="obs-demo",phase="promoted"}')
      if phase == 1 then break end
      rollout.sleep(0.3)
    end
    assert.equals(1, phase, "promoted phase never scraped")
    assert.equals(1, value(prom, 'rollout_info{service="obs-demo",baseline="v1.0.0",canary="v1.1.0"}'))
    assert.equals(1, value(prom, 'rollout_status{service="obs-demo"}'))
    assert.equals(100, value(prom, 'rollout_canary_weight{service="obs-demo"}'))
    assert.equals(3, value(prom, 'rollout_decisions_total{service="obs-demo",decision="advance"}'))
    assert.equals(1, value(prom, 'rollout_decisions_total{service="obs-demo",decision="promote"}'))
    assert.equals(0.05, value(prom, 'rollout_gate_threshold{service="obs-demo",stage="Half",signal="error_rate"}'))
    assert.equals(0.5, value(prom, 'rollout_gate_threshold{service="obs-demo",stage="Full",signal="p99",dir="max"}'))
    assert.equals(3, value(prom, 'count(rollout_gate_passed{service="obs-demo",signal="error_rate"} == 1)'))
    assert.equals(1, value(prom, 'rollout_trigger_state{service="obs-demo",trigger="error_rate",state="ok"}'))
    local er = value(prom, 'rollout_signal{service="obs-demo",version="canary",signal="error_rate"}')
    assert.is_number(er)
    assert.lt(er, 0.05)
    assert.gt(value(prom, 'rollout_signal{service="obs-demo",version="canary",signal="rps"}'), 0)
    assert.equals(0, value(prom, 'rollout_source_errors_total{service="obs-demo"}'))

    -- the live run: Prometheus saw the weight step through the stages
    local url = string.format("%s/api/v1/query_range?query=%s&start=%.3f&end=%.3f&step=1", prom.url,
      http.urlencode('rollout_canary_weight{service="obs-demo"}'), t_start - 1, t_end + 2)
    local doc = assert(json.decode(assert(http.get(url)).body))
    local seen = {}
    for _, v in ipairs(doc.data.result[1] and doc.data.result[1].values or {}) do seen[tonumber(v[2])] = true end
    local distinct = 0
    for _ in pairs(seen) do distinct = distinct + 1 end
    assert.truthy(distinct >= 2, "weights seen by prometheus: " .. json.encode(doc.data.result))

    -- the Grafana dashboard is built on these names: every query parses, every rollout_*
    -- name it uses is one we export, and the panels have data
    local dash = assert(json.decode(assert(fs.read("contrib/grafana-dashboard.json"))))
    local exported = {}
    for _, name in ipairs(me.NAMES) do exported[name] = true end
    for name in assert(http.get(ep.url)).body:gmatch("# TYPE (%S+)") do
      assert.truthy(exported[name], name .. " is exposed but not in metrics_endpoint.NAMES")
    end
    local exprs = {}
    for _, p in ipairs(dash.panels) do
      for _, t in ipairs(p.targets or {}) do exprs[#exprs + 1] = { p.title, t.expr } end
    end
    for _, a in ipairs(dash.annotations.list) do exprs[#exprs + 1] = { a.name, a.expr } end
    assert.gt(#exprs, 20)
    local with_data = 0
    for _, pe in ipairs(exprs) do
      local q = pe[2]:gsub("%$service", "obs-demo"):gsub("%$__rate_interval", "1m")
      for name in q:gmatch("(rollout_[%w_]+)") do
        assert.truthy(exported[name], pe[1] .. ": " .. name .. " is not exported")
      end
      local res = query(prom, q)
      if #res > 0 then with_data = with_data + 1 end
    end
    assert.gt(with_data, #exprs - 6, "most dashboard queries return series")
  end, { timeout = 90 })
end)

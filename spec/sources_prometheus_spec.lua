-- rollout-test: serial (compares Prometheus histogram quantiles with what the client measured)
-- The prometheus source against a real Prometheus (fresh data dir, loopback, 1 s scrapes)
-- scraping two sample-service instances labelled version=v1 / v2; NGINX stands in for a
-- Prometheus that answers 503, an error envelope, or garbage.
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local sources = require("rollout.sources")
local prometheus = require("rollout.sources.prometheus")
local support = require("spec.support.sources_support")
local servers = support.servers

local PROM_CFG = [[
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sample
    static_configs:
      - targets: ['127.0.0.1:%d']
        labels: {version: v1, service: sample}
      - targets: ['127.0.0.1:%d']
        labels: {version: v2, service: sample}
]]

local function start_prometheus(v1, v2)
  return assert(servers.start {
    name = "prometheus",
    argv = function(port, dir)
      assert(fs.write_atomic(dir .. "/prometheus.yml", string.format(PROM_CFG, v1.port, v2.port), 420))
      return { "prometheus", "--config.file=" .. dir .. "/prometheus.yml", "--storage.tsdb.path=" .. dir .. "/data",
        "--web.listen-address=127.0.0.1:" .. port, "--log.level=warn" }
    end,
    ready_url = "http://127.0.0.1:{port}/-/ready",
    timeout = 30,
  })
end

-- Until every target has been scraped successfully at least `n` times after `since` (epoch).
local function wait_scraped(prom, since, timeout)
  local deadline = rollout.now() + (timeout or 30)
  while rollout.now() < deadline do
    local r = http.get(prom.url .. "/api/v1/targets", { timeout = 2 })
    local doc = r and json.decode(r.body)
    local ok, n = true, 0
    for _, t in ipairs(doc and doc.data and doc.data.activeTargets or {}) do
      n = n + 1
      local last = t.lastScrape and t.lastScrape:match("T(%d+:%d+:[%d%.]+)")
      ok = ok and t.health == "up" and last ~= nil
    end
    if ok and n == 2 and rollout.time() - since > 0 then
      -- targets are up; give one more scrape for data after `since`
      rollout.sleep(math.max(0, since + 2.5 - rollout.time()))
      return true
    end
    rollout.sleep(0.25)
  end
  error("prometheus targets not up:\n" .. prom:log())
end

-- Open-loop load: `rps` requests per second for `seconds`, each its own task.
local function steady_load(url, rps, seconds)
  local out = { requests = 0, errors = 0, latencies = {} }
  local tasks = {}
  local t0 = rollout.now()
  for i = 0, math.floor(rps * seconds) - 1 do
    local at = t0 + i / rps
    if at > rollout.now() then rollout.sleep(at - rollout.now()) end
    tasks[#tasks + 1] = rollout.spawn(function()
      local r = http.get(url, { timeout = 10 })
      out.requests = out.requests + 1
      if not r or r.status >= 500 then out.errors = out.errors + 1 end
      if r then out.latencies[#out.latencies + 1] = r.time end
    end)
  end
  for _, t in ipairs(tasks) do t:wait() end
  return out
end

describe("prometheus source config", function()
  it("requires url, names unknown keys and bad templates", function()
    local errs = prometheus.validate({ type = "prometheus", bogus = 1, queries = { p99 = "x{{nope}}", latency = "y" } })
    table.sort(errs)
    assert.same({ "bogus: unknown key",
      "queries.latency: unknown signal (requests, rps, error_rate, p50, p95, p99, health, cpu, memory, disk, restarts)",
      "url: required URL of Prometheus (http://host:9090)" }, errs)
    errs = prometheus.validate({ type = "prometheus", url = "http://x:9090", queries = { p99 = "x{{nope}}" } })
    assert.same({ "queries.p99: unknown template variable {{nope}}" }, errs)
  end)

  it("mirrors the runbook's queries, templated per version and window", function()
    local src = sources.new({ type = "prometheus", url = "http://127.0.0.1:1" }, support.ctx())
    local vars = src:vars("canary", 300)
    local common = require("rollout.sources.common")
    assert.equals('sum(rate(http_requests_total{version="v2"}[5m]))', common.expand(src.queries.rps, vars))
    assert.equals('(sum(rate(http_requests_total{version="v2",code=~"5.."}[5m])) or vector(0)) / '
      .. 'sum(rate(http_requests_total{version="v2"}[5m]))', common.expand(src.queries.error_rate, vars))
    assert.equals('histogram_quantile(0.99, sum by (le) '
      .. '(rate(http_request_duration_seconds_bucket{version="v2"}[5m])))',
      common.expand(src.queries.p99, vars))
    local custom = sources.new({ type = "prometheus", url = "http://127.0.0.1:1", selector = 'deployment="{{role}}"',
      errors = 'status=~"5.."', queries = { health = false } }, support.ctx())
    assert.equals('sum(rate(http_requests_total{deployment="canary",status=~"5.."}[45s]))',
      common.expand('sum(rate(http_requests_total{{{selector}},{{errors}}}[{{window}}]))', custom:vars("canary", 45)))
    assert.is_nil(custom.queries.health)
    assert.is_nil(custom.provides.health)
    assert.is_nil(custom.queries.memory, "memory needs memory_limit")
  end)
end)

describe("prometheus source against a real Prometheus", function()
  local started
  before_each(function() started = {} end)
  after_each(function() support.stop(started) end)

  it("answers signals per version, no data for an empty result, and errors once Prometheus stops", function()
    local v1 = support.start { version = "v1",
      args = { "--latency-p50", "20ms", "--latency-p99", "60ms", "--seed", "4" } }
    local v2 = support.start { version = "v2", args = { "--error-rate", "0.2", "--latency-p50", "50ms", "--latency-p99",
      "150ms", "--seed", "5" } }
    started[1], started[2] = v1, v2
    local prom = start_prometheus(v1, v2)
    started[3] = prom
    -- warm up, so the code="500" series exists before the measured window: rate() cannot
    -- see the increments that happened before a series' first sample
    local warm = support.load(v2.url .. "/", 40)
    support.load(v1.url .. "/", 40)
    wait_scraped(prom, rollout.time())
    local t_load = rollout.time()
    local l1 = rollout.spawn(steady_load, v1.url .. "/", 100, 4)
    local l2 = rollout.spawn(steady_load, v2.url .. "/", 100, 4)
    local s1, s2 = l1:wait(), l2:wait()
    wait_scraped(prom, rollout.time())
    -- a window that starts one scrape before the load and ends after it
    local win = math.ceil(rollout.time() - t_load) + 1

    local ctx = support.ctx(v1, v2)
    local src = sources.new({ type = "prometheus", url = prom.url, memory_limit = "1Gi" }, ctx)
    assert(src:tick(rollout.now()))
    local now = rollout.now()
    local sig = assert(src:signals(now, win))
    -- the raw counters are exact; increase() and rate() extrapolate to the range's ends (up
    -- to a scrape interval at each end of an ~8 s window: up to ~25 % here)
    local ok, total = src:value('sum(http_requests_total{version="v2"})')
    assert.is_true(ok)
    assert.equals(warm.requests + s2.requests, total)
    assert.near(s2.requests, sig.canary.requests, 0.35 * s2.requests)
    assert.near(s1.requests, sig.baseline.requests, 0.35 * s1.requests)
    assert.near(sig.canary.requests / win, sig.canary.rps, 0.02 * sig.canary.rps,
      "rps = increase / window (two evaluation instants)")
    -- a ratio of two rates over the same samples: the extrapolation cancels
    assert.near(s2.errors / s2.requests, sig.canary.error_rate, 0.01)
    assert.equals(0, sig.baseline.error_rate, "no errors is 0 (or vector(0)), not no data")
    local exact50, exact99 = support.quantile(s2.latencies, 0.5), support.quantile(s2.latencies, 0.99)
    assert.near(exact50, sig.canary.p50, 0.2 * exact50, "histogram_quantile p50 vs the client's exact median")
    assert.near(exact99, sig.canary.p99, 0.3 * exact99, "histogram_quantile p99 vs the client's exact p99")
    assert.truthy(sig.baseline.p99 < sig.canary.p99)
    assert.equals(1, sig.canary.health)
    assert.equals(0, sig.canary.restarts)
    assert.is_number(sig.canary.cpu)
    assert.truthy(sig.canary.memory > 0 and sig.canary.memory < 0.1)

    -- an empty result is no data, not 0 and not an error
    local ghost = sources.new({ type = "prometheus", url = prom.url },
      { versions = { baseline = { version = "v1" }, canary = { version = "v9" } } })
    local g = assert(ghost:signals(rollout.now(), 30))
    for _, k in ipairs({ "requests", "rps", "error_rate", "p50", "p99", "health", "cpu", "restarts" }) do
      assert.is_nil(g.canary[k], k .. " of a version nobody scrapes")
    end
    assert.is_number(g.baseline.rps)

    -- result types and the error envelope
    local r = assert(src:query("scalar(vector(2))"))
    assert.equals("scalar", r.type)
    assert.equals(2, r.value)
    r = assert(src:query('"hello"'))
    assert.equals("string", r.type)
    assert.equals("hello", r.value)
    r = assert(src:query("up"))
    assert.equals("vector", r.type)
    assert.equals(2, #r.series)
    r = assert(src:query("up[5s]"))
    assert.equals("matrix", r.type)
    assert.truthy(#r.series[1].values >= 2)
    local okv, v = src:value("0/0")
    assert.is_true(okv)
    assert.is_nil(v, "NaN is no data")
    okv, v = src:value("vector(1) / 0")
    assert.is_true(okv)
    assert.equals(math.huge, v, "+Inf is a value")
    local none, err = src:value("up")
    assert.is_nil(none)
    assert.matches("returned 2 series; aggregate it", err)
    none, err = src:value("up[5s]")
    assert.is_nil(none)
    assert.matches("range vector", err)
    none, err = src:value("sum(")
    assert.is_nil(none)
    assert.matches("prometheus: bad_data: .* %(HTTP 400%) for query sum%(", err)

    -- a range query, for replay
    local t = rollout.time()
    local series = assert(src:query_range('sum(http_requests_total{version="{{version}}"})', t - 8, t, "1s",
      src:vars("canary", 30)))
    assert.equals(1, #series)
    local vals = series[1].values
    assert.truthy(#vals >= 6, "one point per step: " .. #vals)
    assert.equals(warm.requests + s2.requests, vals[#vals][2])
    for i = 2, #vals do assert.truthy(vals[i][2] >= vals[i - 1][2], "a counter never goes down") end

    -- Prometheus stops: source errors, never values
    prom:stop()
    local before = rollout.now() + 1
    local s, e = src:signals(before, 30)
    assert.is_nil(s)
    assert.matches("prometheus: connection refused", e)
    local tk, te = src:tick(before)
    assert.is_nil(tk)
    assert.matches("connection refused", te)
  end, { timeout = 90 })

  it("turns 503, an error envelope and garbage into errors", function()
    local ng = assert(servers.nginx {
      server = [[
        location /down/ { return 503 "Service Unavailable\n"; }
        location /exec/ { default_type application/json;
          return 422 '{"status":"error","errorType":"execution","error":"query timed out"}'; }
        location /garbage/ { return 200 "<html>not prometheus</html>"; }
        location /odd/ { default_type application/json;
          return 200 '{"status":"success","data":{"resultType":"blob","result":[]}}'; }
      ]],
    })
    started[1] = ng
    local function try(prefix)
      local src = sources.new({ type = "prometheus", url = ng.url .. prefix }, support.ctx())
      local s, err = src:signals(rollout.now(), 60)
      assert.is_nil(s)
      return err
    end
    assert.matches("HTTP 503 from", try("/down"))
    assert.matches("prometheus: execution: query timed out %(HTTP 422%)", try("/exec"))
    assert.matches("not a Prometheus API response %(<html>", try("/garbage"))
    assert.matches("unknown resultType blob", try("/odd"))
  end)
end)

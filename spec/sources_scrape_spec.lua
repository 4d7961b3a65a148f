-- rollout-test: serial (compares server-side latency quantiles with what the client measured)
-- The scrape source: config checking, counters to increments, and real targets --
-- sample-service's own /metrics (counters, histogram, process metrics, a restart) and
-- HAProxy's exporter in front of two of them. Every count is checked against what the test
-- itself sent and saw.
local rollout = require("rollout")
local sources = require("rollout.sources")
local scrape = require("rollout.sources.scrape")
local support = require("spec.support.sources_support")

local function has(errs, text)
  for _, e in ipairs(errs) do if e:find(text, 1, true) then return true end end
  return false
end

local function ctx_for(b, c) return support.ctx(b, c) end

describe("scrape source config", function()
  it("accepts a minimal config and dispatches on type", function()
    assert.same({}, sources.validate({ type = "scrape" }))
    assert.same({}, sources.validate({ type = "scrape", preset = "haproxy", url = "http://127.0.0.1:1/metrics",
      backend = "be" }))
  end)

  it("names unknown keys, bad values and missing companions", function()
    local errs = scrape.validate({ type = "scrape", bogus = 1, url = "ftp://x", errors = 'code=5', cpu_limit = 0,
      targets = { canary = "nope", staging = "http://x/" }, memory_limit = "lots" })
    assert.truthy(has(errs, "bogus: unknown key"))
    assert.truthy(has(errs, "url: expected an http:// or https:// URL"))
    assert.truthy(has(errs, "errors: expected a quoted value for label code"))
    assert.truthy(has(errs, "cpu_limit: must be a finite number > 0"))
    assert.truthy(has(errs, "targets.staging: unknown version"))
    assert.truthy(has(errs, "memory_limit:"))
    assert.truthy(has(errs, "version_label: required with url"))
  end)

  it("rejects unknown types and raises from new() listing every problem", function()
    assert.same({ 'type: unknown source type "graphite" (scrape, prometheus, probe, alertmanager, kubernetes)' },
      sources.validate({ type = "graphite" }))
    local err = assert.has_error(function() sources.new({ type = "scrape", bogus = true }, {}) end)
    assert.matches("bogus: unknown key", err)
    err = assert.has_error(function()
      sources.new({ type = "scrape" }, { versions = { baseline = {}, canary = {} } })
    end)
    assert.matches("versions.baseline.metrics: required", err)
    assert.matches("versions.canary.metrics: required", err)
  end)
end)

describe("label matchers and windows", function()
  local common = require("rollout.sources.common")

  it("parses PromQL matchers; a status class matches its codes", function()
    assert.same({ code = { re = "5.." }, method = "GET" }, common.parse_matchers('{code=~"5..", method="GET"}'))
    assert.same({ code = { nre = "2.." }, path = { ne = "/x" } }, common.parse_matchers('code!~"2..",path!="/x"'))
    local f = assert(common.matcher_fn(assert(common.parse_matchers('code="5xx"'))))
    assert.is_true(f({ code = "5xx" }))
    assert.is_true(f({ code = "503" }))
    assert.is_false(f({ code = "200" }))
    assert.is_false(f({}))
    local g = assert(common.matcher_fn(assert(common.parse_matchers('code=~"4..|5[0-9]{2}"'))))
    assert.is_true(g({ code = "404" }))
    assert.is_true(g({ code = "599" }))
    assert.is_false(g({ code = "5000" }))
    local _, err = common.parse_matchers('code=5')
    assert.equals("expected a quoted value for label code", err)
    _, err = common.parse_matchers('code=="5"')
    assert.matches("bad matcher", err)
  end)

  it("formats windows as PromQL durations", function()
    local out = {}
    for i, w in ipairs({ 300, 60, 45, 7200, 1.5, 300.000001, 5400 }) do out[i] = common.format_window(w) end
    assert.same({ "5m", "1m", "45s", "2h", "1500ms", "5m", "90m" }, out)
  end)
end)

describe("scrape source increments", function()
  local function text(t)
    local lines = {
      "# TYPE http_requests_total counter",
      string.format('http_requests_total{code="200"} %d', t.ok),
      string.format('http_requests_total{code="500"} %d', t.bad),
      "# TYPE http_request_duration_seconds histogram",
    }
    local cum = 0
    for _, b in ipairs(t.buckets) do
      cum = cum + b[2]
      lines[#lines + 1] = string.format('http_request_duration_seconds_bucket{le="%s"} %d', b[1], cum)
    end
    lines[#lines + 1] = "process_cpu_seconds_total " .. (t.cpu or 1)
    if t.start then lines[#lines + 1] = "process_start_time_seconds " .. t.start end
    return table.concat(lines, "\n") .. "\n"
  end
  local ctx = { versions = { baseline = { metrics = "http://127.0.0.1:1/m" },
    canary = { metrics = "http://127.0.0.1:1/m" } } }

  it("spreads bucket counts as histogram_quantile interpolates, +Inf at the highest bound", function()
    local h = scrape.histogram_from_buckets({ { le = 0.1, count = 50 }, { le = 0.2, count = 100 },
      { le = math.huge, count = 100 } })
    assert.equals(100, h:count())
    -- histogram_quantile(0.5) = 0.1 (rank 50 ends the first bucket); 0.75 -> 0.15; 0.99 -> 0.198
    assert.near(0.1, h:quantile(0.5), 0.004)
    assert.near(0.15, h:quantile(0.75), 0.005)
    assert.near(0.198, h:quantile(0.99), 0.006)
    local inf = scrape.histogram_from_buckets({ { le = 0.5, count = 0 }, { le = math.huge, count = 10 } })
    assert.near(0.5, inf:quantile(0.5), 0.01)
    assert.is_nil(scrape.histogram_from_buckets({}), "no observations, no histogram")
    assert.is_nil(scrape.histogram_from_buckets({ { le = 0.1, count = 0 }, { le = math.huge, count = 0 } }))
  end)

  it("turns deltas into records; a reset counts the new value and a restart", function()
    local src = scrape.new({ type = "scrape", cpu_limit = 2 }, ctx)
    local b = { { "0.05", 0 }, { "0.1", 0 }, { "+Inf", 0 } }
    local s0 = assert(src:snapshot("canary", text({ ok = 100, bad = 10, buckets = b, cpu = 5, start = 1000 })))
    s0.t = 0
    local first = src:_record(s0, nil, 0)
    assert.is_nil(first.requests, "the first scrape only sets the baseline")
    local s1 = assert(src:snapshot("canary", text({ ok = 190, bad = 20,
      buckets = { { "0.05", 80 }, { "0.1", 20 }, { "+Inf", 0 } },
      cpu = 6, start = 1000 })))
    s1.t = 10
    local r1 = src:_record(s1, s0, 10)
    assert.equals(100, r1.requests)
    assert.equals(10, r1.errors)
    assert.equals(0, r1.restarts)
    assert.near(0.05, r1.cpu, 1e-9) -- 1 cpu-second over 10 s on 2 cores
    assert.equals(100, r1.latency:count())
    -- process restarted: counters start over at small values, start time moves
    local s2 = assert(src:snapshot("canary", text({ ok = 7, bad = 3,
      buckets = { { "0.05", 10 }, { "0.1", 0 }, { "+Inf", 0 } },
      cpu = 0.5, start = 2000 })))
    local r2, why = src:_record(s2, s1, 20)
    assert.equals("process_start_time_seconds changed", why)
    assert.equals(1, r2.restarts)
    assert.equals(10, r2.requests)
    assert.equals(3, r2.errors)
    assert.equals(10, r2.latency:count())
    assert.near(0.025, r2.cpu, 1e-9)
  end)

  it("reads a counter going backwards as a reset even without a start time", function()
    local src = scrape.new({ type = "scrape", start_time = false }, ctx)
    local b = { { "+Inf", 0 } }
    local s1 = assert(src:snapshot("baseline", text({ ok = 500, bad = 0, buckets = b, start = 1 })))
    s1.t = 0
    assert.is_nil(s1.start)
    local s2 = assert(src:snapshot("baseline", text({ ok = 40, bad = 2, buckets = b })))
    local r, why = src:_record(s2, s1, 10)
    assert.equals("counter reset", why)
    assert.equals(42, r.requests)
    assert.equals(1, r.restarts)
    assert.truthy(r.requests >= 0 and r.errors >= 0)
  end)

  it("reports a malformed exposition with its line", function()
    local src = scrape.new({ type = "scrape" }, ctx)
    local snap, err = src:snapshot("baseline", "ok 1\nbad{x=\"1} 2\n")
    assert.is_nil(snap)
    assert.matches("^line 2: ", err)
  end)
end)

describe("scrape source against sample-service", function()
  local started
  before_each(function() started = {} end)
  after_each(function() support.stop(started) end)

  local function start(opts)
    local s = support.start(opts)
    started[#started + 1] = s
    return s
  end

  it("counts requests and errors exactly and reads latency quantiles from the histogram", function()
    local v1 = start { version = "v1", args = { "--latency-p50", "20ms", "--latency-p99", "80ms", "--seed", "1" } }
    local v2 = start { version = "v2",
      args = { "--error-rate", "0.2", "--latency-p50", "20ms", "--latency-p99", "80ms", "--seed", "2" } }
    local src = sources.new({ type = "scrape" }, ctx_for(v1, v2))
    assert(src:tick(rollout.now()))
    local l1 = support.load(v1.url .. "/", 600)
    local l2 = support.load(v2.url .. "/", 600)
    local now = rollout.now()
    assert(src:tick(now))
    local sig = assert(src:signals(now, 60))
    assert.equals(600, sig.baseline.requests)
    assert.equals(600, sig.canary.requests)
    assert.equals(0, sig.baseline.error_rate)
    assert.equals(l2.by_version.v2.errors / 600, sig.canary.error_rate)
    assert.near(600 / 60, sig.canary.rps, 1e-9)
    assert.is_nil(sig.canary.health, "scrape has no health checks")
    for _, pair in ipairs({ { sig.baseline, l1 }, { sig.canary, l2 } }) do
      local s, l = pair[1], pair[2]
      local exact50, exact99 = support.quantile(l.latencies, 0.5), support.quantile(l.latencies, 0.99)
      -- the histogram's buckets are ~25 % wide around 20 ms; interpolation keeps us closer
      assert.near(exact50, s.p50, 0.15 * exact50, "p50 vs the client's exact median")
      assert.near(exact99, s.p99, 0.2 * exact99, "p99 vs the client's exact 99th percentile")
      assert.near(0.020, s.p50, 0.006, "p50 vs the configured median")
      assert.truthy(s.p50 <= s.p95 and s.p95 <= s.p99)
    end
    -- an interval without traffic: requests 0, so no error rate and no quantiles (no data)
    rollout.sleep(0.05)
    local later = rollout.now()
    assert(src:tick(later))
    local quiet = assert(src:signals(later, (later - now) / 2))
    assert.equals(0, quiet.canary.requests)
    assert.is_nil(quiet.canary.error_rate)
    assert.is_nil(quiet.canary.p99)
  end)

  it("reads saturation from process metrics", function()
    local v1 = start { version = "v1" }
    local v2 = start { version = "v2" }
    local src = sources.new({ type = "scrape", memory_limit = "64Mi", cpu_limit = 0.5 }, ctx_for(v1, v2))
    assert(src:tick(rollout.now()))
    support.load(v2.url .. "/", 2000, { concurrency = 32 })
    local now = rollout.now()
    assert(src:tick(now))
    local sig = assert(src:signals(now, 30))
    local rss = tonumber((require("rollout.http").get(v2.metrics).body):match("process_resident_memory_bytes (%d+)"))
    assert.near(rss / (64 * 1024 * 1024), sig.canary.memory, 0.02)
    assert.truthy(sig.canary.memory > 0 and sig.canary.memory < 1)
    assert.is_number(sig.canary.cpu)
    assert.truthy(sig.canary.cpu > 0, "2000 requests cost the canary some CPU")
    assert.truthy(sig.canary.cpu > sig.baseline.cpu, "the idle baseline used less")
  end)

  it("counts a restart, never a negative increment, and fails the tick while the target is down", function()
    local v1 = start { version = "v1" }
    local v2 = start { version = "v2" }
    local port = v2.port
    local events = {}
    local ctx = ctx_for(v1, v2)
    ctx.emit = function(kind, f) events[#events + 1] = { kind = kind, version = f.version, reason = f.reason } end
    local src = sources.new({ type = "scrape" }, ctx)
    assert(src:tick(rollout.now()))
    support.load(v2.url .. "/", 50)
    assert(src:tick(rollout.now()))
    v2:stop()
    local ok, err = src:tick(rollout.now())
    assert.is_nil(ok)
    assert.matches("scrape canary: connection refused", err)
    assert.matches(v2.metrics, err, "names the URL")
    v2 = start { version = "v2", port = port }
    rollout.sleep(1.1) -- process_start_time_seconds has millisecond resolution; make it move
    support.load(v2.url .. "/", 20)
    local now = rollout.now()
    assert(src:tick(now))
    assert.equals(20, src.last.canary.requests, "after a reset the increment is the new counter value")
    assert.equals(1, src.last.canary.restarts)
    local sig = assert(src:signals(now, 600))
    assert.equals(70, sig.canary.requests)
    assert.equals(1, sig.canary.restarts)
    assert.equals(0, sig.baseline.restarts)
    assert.same({ { kind = "restart", version = "canary", reason = "process_start_time_seconds changed" } }, events)
  end)
end)

describe("scrape source with replicas", function()
  local started
  before_each(function() started = {} end)
  after_each(function() support.stop(started) end)

  it("adds up a version's replicas and counts a restart of one of them", function()
    local base = support.start { version = "v1" }
    local c1 = support.start { version = "v2" }
    local c2 = support.start { version = "v2", args = { "--error-rate", "1" } }
    started[1], started[2], started[3] = base, c1, c2
    local src = sources.new({ type = "scrape", memory_limit = "1Gi",
      targets = { baseline = base.metrics, canary = { c1.metrics, c2.metrics } } }, support.ctx())
    assert(src:tick(rollout.now()))
    support.load(c1.url .. "/", 30)
    support.load(c2.url .. "/", 10)
    local now = rollout.now()
    assert(src:tick(now))
    local sig = assert(src:signals(now, 60))
    assert.equals(40, sig.canary.requests)
    assert.equals(10 / 40, sig.canary.error_rate)
    assert.is_number(sig.canary.memory)
    assert.equals(0, sig.baseline.requests)
    local port = c2.port
    c2:stop()
    local ok, err = src:tick(rollout.now())
    assert.is_nil(ok, "one replica down fails the tick")
    assert.matches("scrape canary: connection refused", err)
    started[3] = support.start { version = "v2", port = port }
    rollout.sleep(1.1)
    support.load(started[3].url .. "/", 5)
    support.load(c1.url .. "/", 5)
    now = rollout.now()
    assert(src:tick(now))
    assert.equals(10, src.last.canary.requests)
    assert.equals(1, src.last.canary.restarts)
    sig = assert(src:signals(now, 60))
    assert.equals(50, sig.canary.requests)
    assert.equals(1, sig.canary.restarts)
  end)

  it("checks replica lists", function()
    assert.same({ "targets.canary[2]: expected an http:// or https:// URL, got \"x\"" },
      scrape.validate({ type = "scrape", targets = { canary = { "http://a/metrics", "x" } } }))
    assert.same({ "targets.canary: expected a URL or a non-empty list of URLs" },
      scrape.validate({ type = "scrape", targets = { canary = {} } }))
  end)
end)

describe("scrape source against HAProxy's exporter", function()
  local started
  before_each(function() started = {} end)
  after_each(function() support.stop(started) end)

  it("maps servers to versions and counts what each one answered", function()
    local v1 = support.start { version = "v1" }
    local v2 = support.start { version = "v2", args = { "--error-rate", "0.25", "--seed", "3" } }
    started[1], started[2] = v1, v2
    local lb = support.haproxy { baseline = "127.0.0.1:" .. v1.port, canary = "127.0.0.1:" .. v2.port,
      weights = { baseline = 75, canary = 25 } }
    started[3] = lb
    local src = sources.new({ type = "scrape", preset = "haproxy", url = lb.metrics, backend = "be" }, support.ctx())
    assert(src:tick(rollout.now()))
    local sent = support.load(lb.url .. "/", 800)
    assert.equals(0, sent.failures)
    rollout.sleep(0.1) -- HAProxy counts a response when its stream ends
    local now = rollout.now()
    assert(src:tick(now))
    local sig = assert(src:signals(now, 60))
    local b, c = sent.by_version.v1, sent.by_version.v2
    assert.equals(800, b.requests + c.requests)
    assert.equals(b.requests, sig.baseline.requests)
    assert.equals(c.requests, sig.canary.requests)
    assert.near(0.25, c.requests / 800, 0.03, "roundrobin 75/25")
    assert.equals(0, sig.baseline.error_rate)
    assert.truthy(c.errors > 0)
    assert.equals(c.errors / c.requests, sig.canary.error_rate)
    assert.is_nil(sig.canary.p99, "HAProxy's exporter has no latency histogram")
    assert.is_nil(sig.canary.restarts, "a load balancer's counters say nothing about version restarts")
  end)
end)

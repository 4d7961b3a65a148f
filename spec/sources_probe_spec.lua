-- The probe source against sample services: one healthy, one failing 30 % of requests with
-- a failing /health, one that is down. The probe's counts are checked against the service's
-- own counters, so nothing here is a statistical guess.
local rollout = require("rollout")
local http = require("rollout.http")
local promtext = require("rollout.promtext")
local sources = require("rollout.sources")
local probe = require("rollout.sources.probe")
local support = require("spec.support.sources_support")

-- {requests=, errors=} of `/` from a sample-service's own metrics.
local function served(s)
  local r = assert(http.get(s.metrics))
  local sel = assert(promtext.select(r.body, { { name = "http_requests_total" },
    { name = "http_requests_total", labels = { code = { re = "5.." } } } }))
  return { requests = sel[1].value or 0, errors = sel[2].value or 0 }
end

describe("probe source config", function()
  it("checks rate, URLs and the errors matcher", function()
    local errs = probe.validate({ type = "probe", rate = 0, urls = { canary = "x" }, errors = 'code=~"(5"', bogus = 1 })
    table.sort(errs)
    assert.same({ "bogus: unknown key", "errors: code: unbalanced parentheses in regex \"(5\"",
      "rate: must be a finite number > 0", 'urls.canary: expected an http:// or https:// URL, got "x"' }, errs)
    local err = assert.has_error(function()
      sources.new({ type = "probe" }, { versions = { baseline = {}, canary = {} } })
    end)
    assert.matches("versions.baseline.url: required", err)
  end)
end)

describe("probe source against sample services", function()
  local started, src
  before_each(function() started = {} end)
  after_each(function()
    if src then src:close() end
    support.stop(started)
  end)

  it("gives error_rate, latency and health per version", function()
    local v1 = support.start { version = "v1",
      args = { "--latency-p50", "30ms", "--latency-p99", "60ms", "--seed", "6" } }
    local v2 = support.start { version = "v2", args = { "--error-rate", "0.3", "--unhealthy", "--seed", "7" } }
    started[1], started[2] = v1, v2
    src = sources.new({ type = "probe", rate = 40, health_interval = 0.25, health_timeout = 1 }, support.ctx(v1, v2))
    local t0 = rollout.now()
    assert.is_true(src:tick(t0))
    rollout.sleep(1)
    assert.is_true(src:tick(rollout.now()))
    rollout.sleep(1.5)
    src:close()
    local deadline = rollout.now() + 6
    while src.inflight > 0 and rollout.now() < deadline do rollout.sleep(0.01) end -- let them land
    local now = rollout.now()
    assert.is_true(src:tick(now))
    local sig = assert(src:signals(now, 60))
    local got1, got2 = served(v1), served(v2)
    -- every synthetic request counted, as the services counted them
    assert.equals(got1.requests, sig.baseline.requests)
    assert.equals(got2.requests, sig.canary.requests)
    -- 40 requests per second for 2.5 s; a busy machine may make the ticker skip a few
    assert.truthy(sig.canary.requests >= 70 and sig.canary.requests <= 103, "requests: " .. sig.canary.requests)
    assert.equals(0, sig.baseline.error_rate)
    assert.equals(got2.errors / got2.requests, sig.canary.error_rate)
    assert.near(0.3, sig.canary.error_rate, 0.15)
    assert.equals(1, sig.baseline.health)
    assert.equals(0, sig.canary.health)
    assert.truthy(sig.baseline.p50 >= 0.020 and sig.baseline.p50 <= 0.060, "p50 near the configured 30 ms: "
      .. sig.baseline.p50)
    assert.truthy(sig.baseline.p99 >= sig.baseline.p50)
    assert.is_nil(sig.canary.cpu, "a probe sees no saturation")
    assert.is_nil(sig.canary.restarts)
  end)

  it("counts a version that refuses connections as all errors, with no latency and no health", function()
    local v1 = support.start { version = "v1" }
    started[1] = v1
    local down = support.servers.free_port()
    local ctx = support.ctx(v1, { url = "http://127.0.0.1:" .. down, version = "v2" })
    src = sources.new({ type = "probe", rate = 20, health_interval = 0.2, timeout = 1,
      errors = 'code=~"4..|5.."' }, ctx)
    src:start()
    rollout.sleep(1)
    src:close()
    local deadline = rollout.now() + 3
    while src.inflight > 0 and rollout.now() < deadline do rollout.sleep(0.01) end
    local now = rollout.now()
    assert.is_true(src:tick(now))
    local sig = assert(src:signals(now, 30))
    assert.truthy(sig.canary.requests >= 15)
    assert.equals(1, sig.canary.error_rate)
    assert.is_nil(sig.canary.p50, "no answer, no latency")
    assert.equals(0, sig.canary.health)
    assert.equals(0, sig.baseline.error_rate)
    assert.equals(1, sig.baseline.health)
  end)

  it("has no data before anything completed", function()
    local v1 = support.start { version = "v1" }
    started[1] = v1
    src = sources.new({ type = "probe", urls = { baseline = v1.url .. "/", canary = v1.url .. "/" } }, {})
    local sig = src:signals(rollout.now(), 60)
    assert.is_nil(sig.canary.requests)
    assert.is_nil(sig.canary.error_rate)
    assert.is_nil(sig.canary.health)
  end)
end)

-- The judge from Prometheus: histogram buckets as tied observations (Mann-Whitney with
-- midranks and the tie-corrected variance, checked against scipy on binned data), and the
-- runbook's abTest rolling back a subtle tail regression end to end, from what a real
-- Prometheus recorded of two sample-service instances (rollout replay).
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local proc = require("rollout.proc")
local stats = require("rollout.stats")
local prometheus = require("rollout.sources.prometheus")
local support = require("spec.support.sources_support")
local servers = support.servers

local function cumulative(bounds, counts)
  local series, acc = {}, 0
  for i, b in ipairs(bounds) do
    acc = acc + counts[i]
    series[i] = { labels = { le = b }, value = acc }
  end
  return series
end

describe("Mann-Whitney on histogram buckets", function()
  local bounds = { "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "+Inf" }

  it("expands cumulative bucket counts into tied observations, +Inf at twice the top bound", function()
    local v = prometheus.bucket_values(cumulative(bounds, { 2, 3, 0, 1, 0, 0, 1 }))
    assert.same({ 0.01, 0.01, 0.025, 0.025, 0.025, 0.1, 1.0 }, v)
    -- scaled down in proportion beyond max, the total kept
    local big = prometheus.bucket_values(cumulative(bounds, { 5000, 3000, 1500, 400, 80, 15, 5 }), 1000)
    assert.equals(1000, #big)
    local n01 = 0
    for _, x in ipairs(big) do if x == 0.01 then n01 = n01 + 1 end end
    assert.equals(500, n01)
  end)

  it("agrees with scipy's mannwhitneyu on the binned data (ties: midranks, tie-corrected variance)", function()
    local cases = {
      { { 120, 300, 260, 90, 20, 6, 4 }, { 100, 260, 270, 130, 40, 12, 8 } },
      { { 50, 50, 50, 0, 0, 0, 0 }, { 40, 50, 60, 0, 0, 0, 0 } },
      { { 3, 1, 0, 0, 0, 0, 1 }, { 0, 1, 2, 1, 0, 0, 2 } },
    }
    local data = {}
    for i, c in ipairs(cases) do
      data[i] = { prometheus.bucket_values(cumulative(bounds, c[1])), prometheus.bucket_values(cumulative(bounds, c[2])) }
    end
    local r = assert(proc.run({ argv = { "/usr/bin/python3", "-c", [[
import json, sys
from scipy.stats import mannwhitneyu
out = []
for x, y in json.load(sys.stdin):
    two = mannwhitneyu(x, y, alternative='two-sided', method='asymptotic')
    less = mannwhitneyu(x, y, alternative='less', method='asymptotic')
    greater = mannwhitneyu(x, y, alternative='greater', method='asymptotic')
    out.append([float(two.statistic), float(two.pvalue), float(less.pvalue), float(greater.pvalue)])
print(json.dumps(out))
]] }, stdin = json.encode(data), timeout = 60 }))
    assert.equals(0, r.code, r.stderr)
    local ref = assert(json.decode(r.stdout))
    for i, d in ipairs(data) do
      local mw = stats.mann_whitney(d[1], d[2])
      assert.near(ref[i][1], mw.u, 1e-9, "case " .. i .. " U")
      assert.near(ref[i][2], mw.p, 1e-9 * math.max(1, ref[i][2]), "case " .. i .. " p")
      assert.near(ref[i][3], mw.p_less, 1e-9 * math.max(1, ref[i][3]), "case " .. i .. " p_less")
      assert.near(ref[i][4], mw.p_greater, 1e-9 * math.max(1, ref[i][4]), "case " .. i .. " p_greater")
    end
  end)
end)

local PROM_CFG = [[
global:
  scrape_interval: 500ms
scrape_configs:
  - job_name: sample
    static_configs:
      - targets: ['127.0.0.1:%d', '127.0.0.1:%d']
]]

describe("the runbook's abTest against a real Prometheus", function()
  local v1, v2, prom, t_start, t_end
  setup(function()
    -- the canary a third slower throughout (p50 27 ms against 20, p99 80 against 60), far
    -- inside the 500 ms p99 limit
    v1 = support.start({ version = "v1", args = { "--latency-p50", "20ms", "--latency-p99", "60ms" } })
    v2 = support.start({ version = "v2", args = { "--latency-p50", "27ms", "--latency-p99", "80ms" } })
    prom = assert(servers.start {
      name = "prometheus",
      argv = function(port, dir)
        assert(fs.write_atomic(dir .. "/prometheus.yml", string.format(PROM_CFG, v1.port, v2.port), 420))
        return { "prometheus", "--config.file=" .. dir .. "/prometheus.yml", "--storage.tsdb.path=" .. dir .. "/data",
          "--web.listen-address=127.0.0.1:" .. port, "--log.level=warn" }
      end,
      ready_url = "http://127.0.0.1:{port}/-/ready",
      timeout = 30,
    })
    local deadline = rollout.now() + 30
    repeat
      rollout.sleep(0.5)
      local r = http.get(prom.url .. "/api/v1/query?query=" .. http.urlencode("count(up == 1)"), { timeout = 2 })
      local doc = r and json.decode(r.body)
      local n = doc and doc.data and doc.data.result[1] and tonumber(doc.data.result[1].value[2])
    until n == 2 or rollout.now() > deadline
    t_start = rollout.time()
    local loads = {}
    for _, s in ipairs({ v1, v2 }) do
      loads[#loads + 1] = assert(proc.spawn({ argv = { rollout.exe:gsub("rollout[^/]*$", "loadgen"), "--url", s.url .. "/",
        "--rps", "80", "--duration", "14s", "--report-interval", "0" }, stdout = "null", stderr = "null" }))
    end
    for _, l in ipairs(loads) do l:wait(40) end
    t_end = rollout.time()
    rollout.sleep(1) -- the last scrapes
  end)
  teardown(function() support.stop({ prom, v1, v2 }) end)

  local function replay(extra)
    local argv = { rollout.exe, "replay", "spec/fixtures/playbooks/judge-prometheus.lua", "--prometheus", prom.url,
      "--from", string.format("%.3f", t_start), "--to", string.format("%.3f", t_end), "--json" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local r = assert(proc.run({ argv = argv, timeout = 120 }))
    local events, summary = {}, nil
    for line in r.stdout:gmatch("[^\n]+") do
      local v = json.decode(line)
      if v and v.event then events[#events + 1] = v elseif v then summary = v end
    end
    return summary, events, r
  end

  it("rolls back the slower canary at the gated stage (gate:ab_test), from Prometheus's buckets", function()
    local s, events, r = replay()
    assert.truthy(s, r.stderr)
    assert.equals("rolled_back", s.outcome, r.stdout:sub(-3000))
    assert.equals("gate:ab_test", s.reason)
    local judge
    for _, e in ipairs(events) do if e.event == "judge" then judge = e end end
    assert.equals("fail", judge.verdict)
    local m = judge.metrics[1]
    assert.equals("High", m.classification)
    -- every request of the hold, from the buckets (80 req/s for 9 s each)
    assert.truthy(m.samples.baseline >= 500 and m.samples.canary >= 500, json.encode(m.samples))
    assert.gt(m.ratio, 1.1)
    assert.lt(m.p, 0.05)
    assert.equals(1, r.code)
  end)

  it("the static thresholds alone promote it", function()
    local s, _, r = replay({ "--set", "ab_test.enabled=false" })
    assert.truthy(s, r.stderr)
    assert.equals("promoted", s.outcome, r.stdout:sub(-3000))
  end)
end)

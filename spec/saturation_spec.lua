-- Saturation as a share of the limit, from the standard exporters' series in a real
-- Prometheus (the exporters are stand-ins serving their metric names and labels:
-- spec/fixtures/saturation_exporter.py): cAdvisor CPU seconds per second over
-- kube-state-metrics' CPU limit, working set over the memory limit; node_exporter's busy
-- CPU share, memory and root filesystem in use. "auto" finds which one Prometheus has.
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local servers = require("spec.support.servers")
local prometheus = require("rollout.sources.prometheus")

local PROM_CFG = [[
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ['127.0.0.1:%d']
]]

local function stack(family)
  local exp = assert(servers.start { name = family .. " exporter",
    argv = { "/usr/bin/python3", assert(fs.realpath("spec/fixtures/saturation_exporter.py")), "{port}", family },
    ready_url = "http://127.0.0.1:{port}/metrics" })
  local prom = assert(servers.start {
    name = "prometheus",
    argv = function(port, dir)
      assert(fs.write_atomic(dir .. "/prometheus.yml", string.format(PROM_CFG, exp.port), 420))
      return { "prometheus", "--config.file=" .. dir .. "/prometheus.yml", "--storage.tsdb.path=" .. dir .. "/data",
        "--web.listen-address=127.0.0.1:" .. port, "--log.level=warn" }
    end,
    ready_url = "http://127.0.0.1:{port}/-/ready", timeout = 30 })
  -- enough scrapes for rate() over 5 s
  local deadline = rollout.now() + 30
  repeat
    rollout.sleep(0.5)
    local r = http.get(prom.url .. "/api/v1/query?query=" .. http.urlencode("count_over_time(up[10s])"), { timeout = 2 })
    local doc = r and json.decode(r.body)
    local n = doc and doc.data and doc.data.result[1] and tonumber(doc.data.result[1].value[2])
  until (n and n >= 6) or rollout.now() > deadline
  return prom, exp
end

local CTX = { service = "dwcp-v3", versions = { baseline = { name = "baseline", version = "v2.9.0" },
  canary = { name = "canary", version = "v3.0.0" } } }

local function signals(url, extra)
  local cfg = { type = "prometheus", url = url, selector = 'deployment="{{name}}"' }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  local src = prometheus.new(cfg, CTX)
  assert(src:tick(0))
  return assert(src:signals(0, 5)), src
end

describe("saturation from the standard exporters, through a real Prometheus", function()
  it("Kubernetes: CPU seconds/s over the CPU limit, working set over the memory limit", function()
    local prom, exp = stack("kubernetes")
    local ok, err = pcall(function()
      local s, src = signals(prom.url)
      assert.equals("kubernetes", src.saturation)
      assert.near(0.9, s.canary.cpu, 0.05)               -- 0.45 cores of a 0.5 limit
      assert.near(400 / 512, s.canary.memory, 1e-6)
      assert.near(0.1, s.baseline.cpu, 0.02)
      assert.near(0.25, s.baseline.memory, 1e-6)
      assert.is_nil(s.canary.disk)
      assert.is_nil(src.provides.disk)
    end)
    prom:stop(); exp:stop()
    assert(ok, err)
  end)

  it("machines (node_exporter): busy CPU share, memory and root filesystem in use", function()
    local prom, exp = stack("node")
    local ok, err = pcall(function()
      local s, src = signals(prom.url)
      assert.equals("node", src.saturation)
      assert.near(0.7, s.canary.cpu, 0.05)
      assert.near(0.75, s.canary.memory, 1e-6)
      assert.near(0.9, s.canary.disk, 1e-6)
      assert.near(0.2, s.baseline.cpu, 0.05)
      -- a limit the config sets keeps the process query it divides
      local s2, src2 = signals(prom.url, { cpu_limit = 2 })
      assert.equals(src2.queries.cpu, prometheus.default_queries({ cpu_limit = 2 }).cpu)
      assert.is_nil(s2.canary.cpu) -- no process_cpu_seconds_total here: no data, never 0
    end)
    prom:stop(); exp:stop()
    assert(ok, err)
  end)

  it("validates the setting", function()
    local errs = prometheus.validate({ type = "prometheus", url = "http://x:9090", saturation = "cloud" })
    assert.matches("saturation: expected \"auto\"", errs[1])
  end)
end)

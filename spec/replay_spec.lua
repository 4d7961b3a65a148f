-- rollout replay: a playbook's decisions against metrics a real Prometheus recorded.
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local proc = require("rollout.proc")
local support = require("spec.support.sources_support")
local servers = support.servers

local PROM_CFG = [[
global:
  scrape_interval: 500ms
scrape_configs:
  - job_name: sample
    static_configs:
      - targets: ['127.0.0.1:%d']
        labels: {version: v1}
      - targets: ['127.0.0.1:%d']
        labels: {version: v2}
]]

local function summary_of(r)
  local last
  for line in r.stdout:gmatch("[^\n]+") do last = line end
  return last and json.decode(last)
end

describe("rollout replay", function()
  local v1, v2, prom, t_start, t_fault, t_end
  setup(function()
    v1 = support.start({ version = "v1" })
    v2 = support.start({ version = "v2" })
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
    -- wait for the first scrapes, then record 18 s of traffic; v2 starts failing at 9 s (the
    -- playbook's clock is the runbook's / 2: 0.5 s scrapes and evaluations)
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
        "--rps", "40", "--duration", "18s", "--report-interval", "0" }, stdout = "null", stderr = "null" }))
    end
    rollout.sleep(9)
    t_fault = rollout.time()
    assert(http.request({ method = "POST", url = v2.url .. "/admin/fault?error_rate=0.3", timeout = 5 }))
    for _, l in ipairs(loads) do l:wait(30) end
    t_end = rollout.time()
    rollout.sleep(1) -- the last scrapes
  end)
  teardown(function() support.stop({ prom, v1, v2 }) end)

  local function replay(from, to)
    return assert(proc.run({ argv = { rollout.exe, "replay", "spec/fixtures/playbooks/replay-fast.lua",
      "--prometheus", prom.url, "--from", string.format("%.3f", from), "--to", string.format("%.3f", to), "--json" },
      timeout = 60 }))
  end

  it("rolls back where the recorded canary started failing", function()
    local r = replay(t_start, t_end)
    local s = summary_of(r)
    assert.truthy(s, r.stderr)
    assert.equals("rolled_back", s.outcome, r.stdout:sub(-2000))
    assert.equals("trigger:error_rate", s.reason)
    local fault = t_fault - t_start
    print(("        rolled back at %.1f s, fault at %.1f s"):format(s.at, t_fault - t_start))
    assert.truthy(s.at > fault and s.at < fault + 6, string.format("at %.1f, fault at %.1f", s.at, fault))
    assert.equals(1, r.code)
  end)

  it("stops at the end of the recording, undecided", function()
    local r = replay(t_start, t_start + 8)
    local s = summary_of(r)
    assert.equals("paused", s.outcome, r.stdout:sub(-2000))
    assert.equals("inconclusive:end_of_recording", s.reason)
    assert.near(8, s.at, 1.5)
    assert.equals(3, r.code)
  end)

  it("parses the times people write", function()
    local rp = require("rollout.cmd.replay")
    assert.equals(1795751000, rp.parse_time("1795751000", 0))
    assert.equals(1000 - 1800, rp.parse_time("-30m", 1000))
    assert.equals(1795752000, rp.parse_time("2026-11-27T04:00:00Z", 0))
    local v, err = rp.parse_time("yesterday", 0)
    assert.is_nil(v)
    assert.matches("malformed time", err)
  end)
end)

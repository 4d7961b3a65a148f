-- The alertmanager source against a real Alertmanager (loopback, no gossip port): only the
-- active alerts its matchers select come back.
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local sources = require("rollout.sources")
local alertmanager = require("rollout.sources.alertmanager")
local support = require("spec.support.sources_support")
local servers = support.servers

local AM_CFG = [[
route:
  receiver: 'null'
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: 'null'
]]

local function start_alertmanager()
  return assert(servers.start {
    name = "alertmanager",
    argv = function(port, dir)
      assert(fs.write_atomic(dir .. "/am.yml", AM_CFG, 420))
      return { "prometheus-alertmanager", "--config.file=" .. dir .. "/am.yml", "--storage.path=" .. dir .. "/data",
        "--web.listen-address=127.0.0.1:" .. port, "--cluster.listen-address=", "--log.level=warn" }
    end,
    ready_url = "http://127.0.0.1:{port}/-/ready",
    timeout = 30,
  })
end

local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t)) end

local function post_alerts(am, list)
  local body = {}
  local now = rollout.time()
  for i, a in ipairs(list) do
    body[i] = { labels = a.labels, annotations = { summary = "from the spec" },
      startsAt = iso(now - (a.resolved and 120 or 10)), endsAt = iso(a.resolved and now - 60 or now + 3600) }
  end
  local r = assert(http.request { method = "POST", url = am.url .. "/api/v2/alerts", body = json.encode(body),
    headers = { ["content-type"] = "application/json" }, timeout = 5 })
  assert.equals(200, r.status, r.body)
end

local function names(list)
  local out = {}
  for i, a in ipairs(list) do out[i] = a.name end
  return out
end

describe("alertmanager source config", function()
  it("requires url and checks matchers", function()
    local errs = alertmanager.validate({ type = "alertmanager",
      matchers = { 'severity="critical"', 42, "nonsense", "x={{team}}" } })
    table.sort(errs)
    assert.same({ "matchers[2]: expected a string such as 'severity=\"critical\"'",
      "url: required URL of Alertmanager (http://host:9093)" }, errs)
    errs = alertmanager.validate({ type = "alertmanager", url = "http://x:9093", matchers = { "nonsense" } })
    assert.same({ 'matchers[1]: expected label="value" (or !=, =~, !~), got "nonsense"' }, errs)
    errs = alertmanager.validate({ type = "alertmanager", url = "http://x:9093", matchers = { "x={{team}}" } })
    assert.same({ "matchers[1]: unknown template variable {{team}}" }, errs)
  end)

  it("filters with one `filter` per matcher, the service filled in", function()
    local src = sources.new({ type = "alertmanager", url = "http://127.0.0.1:9093/" }, { service = "dwcp" })
    assert.equals("http://127.0.0.1:9093/api/v2/alerts?active=true&filter=severity%3D%22critical%22&"
      .. "filter=service%3D%22dwcp%22&inhibited=false&silenced=false", src:url())
    assert.is_nil(src.signals, "no signals: the engine only asks it for alerts")
  end)
end)

describe("alertmanager source against a real Alertmanager", function()
  local am
  after_each(function() if am then am:stop() end end)

  it("returns the active critical alerts of the service and nothing else", function()
    am = start_alertmanager()
    local src = sources.new({ type = "alertmanager", url = am.url }, { service = "dwcp" })
    assert.same({}, assert(src:alerts()), "nothing fired yet")
    post_alerts(am, {
      { labels = { alertname = "DWCPDown", severity = "critical", service = "dwcp", instance = "canary-1" } },
      { labels = { alertname = "DWCPSlow", severity = "warning", service = "dwcp" } },
      { labels = { alertname = "OtherDown", severity = "critical", service = "billing" } },
      { labels = { alertname = "DWCPFlapped", severity = "critical", service = "dwcp" }, resolved = true },
    })
    local list = assert(src:alerts())
    assert.same({ "DWCPDown" }, names(list))
    assert.equals("critical", list[1].severity)
    assert.equals("canary-1", list[1].labels.instance)
    assert.is_string(list[1].fingerprint)

    -- configurable matchers: every severity of the service
    local wide = sources.new({ type = "alertmanager", url = am.url,
      matchers = { 'severity=~"warning|critical"', 'service="{{service}}"' } }, { service = "dwcp" })
    assert.same({ "DWCPDown", "DWCPSlow" }, names(assert(wide:alerts())))

    -- tick fetches once per interval; alerts(now) of that interval reuses it
    local now = rollout.now()
    assert.is_true(src:tick(now))
    am:stop()
    assert.same({ "DWCPDown" }, names(assert(src:alerts(now))))
    local none, err = src:alerts(now + 10)
    assert.is_nil(none)
    assert.matches("alertmanager: connection refused", err)
    local ok, terr = src:tick(now + 10)
    assert.is_nil(ok)
    assert.matches("connection refused", terr)
    am = nil
  end, { timeout = 60 })
end)

-- Signals and pre-flight checks as the runbook means them: the feature_flags check reads the
-- flags from where the service reads them (URL, file, command) and compares them with the
-- playbook's; a skipped check shows in the summary line and the report; policy.preflight_skips
-- = "fail" makes every skip a failure; the runbook playbook's Prometheus queries use the
-- runbook's labels; the config's criticalErrorRate is honoured.
local fs = require("rollout.fs")
local json = require("rollout.json")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local output = require("rollout.output")
local report = require("rollout.report")
local servers = require("spec.support.servers")

local FLAGS = { dwcp_v3_protocol = true, neural_routing = true, adaptive_batching = true }

-- the canary playbook with `params` set, and an engine on a router that reads back 100/0
local function engine_with(sets)
  local pb = assert(playbook.load("playbooks/canary.lua", { sets = sets }))
  local events = {}
  local router = { get_weights = function() return { baseline = 100, canary = 0 } end, check = function() return {} end }
  local e = engine.new(pb, { router = router, sources = {}, emit = function(ev) events[#events + 1] = ev end })
  return e, events, pb
end

local function check(e, name)
  for _, c in ipairs(e.pb.preflight) do
    if c.name == name then return e:run_check(c) end
  end
  error("no check " .. name)
end

describe("pre-flight feature_flags reads the service's flags", function()
  local dir
  setup(function() dir = assert(fs.mkdtemp("flags")) end)
  teardown(function() fs.rmtree(dir) end)

  it("from a file (JSON, YAML): passes when they match, fails naming each difference", function()
    assert(fs.write_atomic(dir .. "/flags.json", json.encode(FLAGS)))
    local st, detail = check(engine_with({ "params.feature_flags_file=" .. dir .. "/flags.json" }), "feature_flags")
    assert.equals("pass", st, detail)
    assert.matches("3 flag%(s%) as expected", detail)
    assert(fs.write_atomic(dir .. "/flags.yaml", "dwcp_v3_protocol: true\nneural_routing: false\n"))
    st, detail = check(engine_with({ "params.feature_flags_file=" .. dir .. "/flags.yaml" }), "feature_flags")
    assert.equals("fail", st)
    assert.matches("neural_routing: expected true, the service has false", detail)
    assert.matches("adaptive_batching: expected true, the service has no such flag", detail)
  end)

  it("from a command's output (name=value lines)", function()
    local argv = json.encode({ "printf", "dwcp_v3_protocol=true\nneural_routing=true\nadaptive_batching=true\n" })
    local st, detail = check(engine_with({ "params.feature_flags_command=" .. argv }), "feature_flags")
    assert.equals("pass", st, detail)
    st, detail = check(engine_with({ "params.feature_flags_command=" .. json.encode({ "false" }) }), "feature_flags")
    assert.equals("fail", st)
    assert.matches("false exited 1", detail)
  end)

  it("from a URL served by a real HTTP server", function()
    assert(fs.write_atomic(dir .. "/flags.json", json.encode({ dwcp_v3_protocol = true, neural_routing = true,
      adaptive_batching = "false" })))
    local srv = assert(servers.start { name = "http.server",
      argv = { "/usr/bin/python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", dir },
      ready_url = "http://127.0.0.1:{port}/flags.json" })
    local ok, err = pcall(function()
      local st, detail = check(engine_with({ "params.feature_flags_url=" .. srv.url .. "/flags.json" }), "feature_flags")
      assert.equals("fail", st)
      assert.matches("adaptive_batching: expected true, the service has false", detail)
      st, detail = check(engine_with({ "params.feature_flags_url=" .. srv.url .. "/missing.json" }), "feature_flags")
      assert.equals("fail", st)
      assert.matches("answered 404", detail)
    end)
    srv:stop()
    assert(ok, err)
  end)

  it("is skipped, saying why, when nothing says where the service reads its flags", function()
    local st, detail = check(engine_with({}), "feature_flags")
    assert.equals("skip", st)
    assert.matches("feature_flags_url, feature_flags_file or feature_flags_command not set", detail)
  end)
end)

describe("skipped pre-flight checks", function()
  it("are named in preflight_done, the outcome (summary line) and the report", function()
    -- no metric sources: monitoring and alertmanager are skipped too, nothing fails
    local e, events = engine_with({ "sources=[]" })
    assert.is_nil(e:preflight())
    local done
    for _, ev in ipairs(events) do if ev.event == "preflight_done" then done = ev end end
    assert.truthy(done.skipped >= 5, json.encode(done))
    assert.equals(done.skipped, #done.skipped_checks)
    local o = e:finish("promoted")
    assert.same(done.skipped_checks, o.preflight_skipped)
    local line = output.line(events[#events])
    assert.matches("%[pre%-flight skipped: cluster_capacity, ", line)
    assert.matches("preflight: %d passed, 0 failed, %d skipped %(cluster_capacity, ", output.line(done))
    local lines = {}
    for _, ev in ipairs(events) do lines[#lines + 1] = json.encode(ev) end
    local md = report.markdown(report.analyze(assert(report.parse(table.concat(lines, "\n") .. "\n", "x"))))
    assert.matches("pre%-flight database skipped: params%.database_command not set", md)
  end)

  it("fail the pre-flight with policy.preflight_skips = \"fail\" (the runbook's set -e)", function()
    local e, events = engine_with({ "policy.preflight_skips=fail" })
    local failed = e:preflight()
    assert.equals("cluster_capacity", failed)
    local first
    for _, ev in ipairs(events) do if ev.event == "preflight_check" then first = first or ev end end
    assert.equals("fail", first.status)
    assert.matches("skipped %(params%.capacity_command not set.*%) and policy%.preflight_skips = \"fail\"", first.detail)
    local r = assert(require("rollout.proc").run({ argv = { rollout.exe, "check", "playbooks/canary.lua", "--offline",
      "--set", "policy.preflight_skips=sometimes" }, timeout = 10 }))
    assert.equals(2, r.code)
    assert.matches("policy%.preflight_skips: must be \"skip\" or \"fail\"", r.stderr)
  end)
end)

describe("the runbook playbook's Prometheus queries", function()
  it("select deployment=\"canary\" / \"baseline\" and count status=~\"5..\" as errors", function()
    local pb = assert(playbook.load("playbooks/canary.lua"))
    local prom = require("rollout.sources.prometheus")
    local common = require("rollout.sources.common")
    local src = prom.new(pb.sources[1], { versions = pb.versions, service = pb.service })
    local q = common.expand(src.queries.error_rate, src:vars("canary", 300))
    assert.equals('(sum(rate(http_requests_total{deployment="canary",status=~"5.."}[5m])) or vector(0)) / '
      .. 'sum(rate(http_requests_total{deployment="canary"}[5m]))', q)
    assert.matches('deployment="baseline"', common.expand(src.queries.p99, src:vars("baseline", 300)))
  end)
end)

describe("the config's criticalErrorRate", function()
  it("is acted on by the error_rate trigger when that has its threshold (the runbook: 0.05 both)", function()
    local pb = assert(playbook.load("playbooks/canary.lua", { config = "playbooks/canary-config.yaml" }))
    for _, tr in ipairs(pb.triggers) do assert.truthy(tr.name ~= "critical_error_rate") end
  end)

  it("otherwise rolls back at once above it: trigger critical_error_rate", function()
    local dir = assert(fs.mkdtemp("critical"))
    local yaml = assert(fs.read("playbooks/canary-config.yaml")):gsub("criticalErrorRate: 0%.05", "criticalErrorRate: 0.03")
    assert(fs.write_atomic(dir .. "/config.yaml", yaml))
    local pb = assert(playbook.load("playbooks/canary.lua", { config = dir .. "/config.yaml" }))
    local crit
    for _, tr in ipairs(pb.triggers) do if tr.name == "critical_error_rate" then crit = tr end end
    assert.truthy(crit, "a critical_error_rate trigger")
    assert.equals(0.03, crit.condition.value)
    assert.equals(0, crit.duration)
    -- a canary failing 4 % from 12 minutes in: above critical, under the 5 % trigger
    assert(fs.write_atomic(dir .. "/sc.lua", [[
return { seed = 2, traffic = { rps = 400 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" }, changes = { { at = "12m", error_rate = 0.04 } } } }
]]))
    local sim = require("spec.support.sim")
    local s = sim.simulate("playbooks/canary.lua", dir .. "/sc.lua", { "--config", dir .. "/config.yaml" })
    assert.equals("rolled_back", s.outcome)
    assert.equals("trigger:critical_error_rate", s.reason)
    assert.truthy(s.at > 720 and s.at < 840, "within a trigger window of the fault: " .. s.at)
    local plain = sim.simulate("playbooks/canary.lua", dir .. "/sc.lua", { "--config", "playbooks/canary-config.yaml" })
    assert.truthy(plain.reason ~= "trigger:critical_error_rate")
    fs.rmtree(dir)
  end)
end)

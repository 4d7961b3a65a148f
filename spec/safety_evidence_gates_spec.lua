-- Never promote on evidence the engine does not have (issue: traffic safety, items 1, 2, 9
-- and 10), end to end on the demo stack (real HAProxy, two sample-service processes, load
-- through HAProxy; demo/stack.lua) with short stages set on the command line. These cases
-- decide on counts, not on timing, so they run beside other files; the timed ones
-- (re-apply within an interval, rollback within max_rollback_time) are in
-- spec/safety_evidence_spec.lua.
--
--   A canary that HAProxy drains (weight unchanged, no requests) never passes a gate.
--   Frozen canary metrics (the service's /metrics stops advancing): no gate passes on the
--   probe's synthetic requests alone.
--   Sources that cannot answer: `rollout check` fails, `run` shifts no traffic.
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")
local E = require("spec.support.evidence")
local say, dump, stage, run, haproxy_cli, events = E.say, E.dump, E.stage, E.run, E.haproxy_cli, E.events

describe("evidence: a drained canary", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  it("never passes a gate while the canary gets far less than its weight (drained in HAProxy)", function()
    s = assert(demo_stack.start({ rps = 200 }))
    s:on_weight(25, function()
      -- weight stays 25 (the read-back agrees), but HAProxy sends the canary nothing
      haproxy_cli(s, "set server " .. demo_stack.BACKEND .. "/canary state drain")
    end)
    local res = run(s, { stage("Ramp-Up", 25, "3s"), stage("Full", 100, "2s") }, { "policy.inconclusive=rollback" })
    local gates = events(res, "gate", function(ev) return ev.stage == "Ramp-Up" end)
    for _, g in ipairs(gates) do
      assert.is_true(g.result ~= "pass", "a gate passed on a canary that got no traffic:\n" .. dump(res))
      assert.is_true(g.canary_share.far_below, dump(res))
    end
    assert.is_true(#gates >= 2, "the hold was extended before it was inconclusive")
    assert.equals(1, res.code, dump(res))
    assert.equals("rolled_back", res.outcome, dump(res))
    assert.equals("inconclusive:canary_share", res.reason, dump(res))
    say("drained canary: %d gates, last share %.2f %% of %d requests at weight 25 -> %s", #gates,
      gates[#gates].canary_share.share, gates[#gates].canary_share.requests, res.reason)
    assert.equals(0, s:canary_weight())
  end, { timeout = 120 })
end)

describe("evidence: frozen canary metrics", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  it("a canary whose /metrics stops advancing never passes a gate on probe requests", function()
    s = assert(demo_stack.start({ rps = 200 }))
    local frozen = assert(s.canary:fault({ metrics_frozen = 1 }))
    assert.is_true(frozen.metrics_frozen)
    local res = run(s, { stage("Ramp-Up", 25, "3s"), stage("Full", 100, "2s") }, { "policy.inconclusive=rollback" })
    local gates = events(res, "gate", function(ev) return ev.stage == "Ramp-Up" end)
    assert.is_true(#gates >= 1, dump(res))
    for _, g in ipairs(gates) do
      assert.is_true(g.result ~= "pass", "a gate passed on frozen canary metrics:\n" .. dump(res))
      -- the scrape saw no new canary requests: no error rate from the probe stands in
      assert.equals(0, g.canary.requests, dump(res))
      assert.is_nil(g.canary.error_rate, dump(res))
    end
    assert.equals(1, res.code, dump(res))
    assert.equals("rolled_back", res.outcome, dump(res))
    assert.matches("^inconclusive:", res.reason, dump(res))
    -- the service did answer real requests all along (only its metrics were frozen)
    local served = s.load:read()
    assert.is_true(#served > 0)
    say("frozen canary: %d gates, none passed; outcome %s", #gates, res.reason)
  end, { timeout = 120 })
end)

describe("sources that cannot answer", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  local function check(sets)
    local argv = { rollout.exe, "check", demo_stack.ROOT .. "/playbooks/demo.lua" }
    for _, x in ipairs(sets) do argv[#argv + 1] = "--set"; argv[#argv + 1] = x end
    local r = assert(proc.run({ argv = argv, timeout = 60 }))
    return r.code, (r.stdout or "") .. (r.stderr or "")
  end

  it("rollout check asks every source and fails on one that cannot answer (exit 3)", function()
    s = assert(demo_stack.start({ rps = 50 }))
    local code, out = check(s:sets())
    assert.equals(0, code, out) -- the real sources answer
    assert.matches("ok   source metrics %(scrape, sources%[1%]%)", out)
    assert.matches("ok   source probe %(probe, sources%[2%]%)", out)
    local sets = s:sets()
    sets[#sets + 1] = "sources[1].type=prometheus"
    sets[#sets + 1] = "sources[1].url=http://127.0.0.1:1"
    code, out = check(sets)
    assert.equals(3, code, out)
    assert.matches("FAIL source metrics %(prometheus, sources%[1%]%): [^\n]*127%.0%.0%.1:1", out)
    -- Alertmanager too
    sets = s:sets()
    sets[#sets + 1] = "sources[3].type=alertmanager"
    sets[#sets + 1] = "sources[3].url=http://127.0.0.1:1"
    code, out = check(sets)
    assert.equals(3, code, out)
    assert.matches("FAIL source alertmanager %(alertmanager, sources%[3%]%): [^\n]*127%.0%.0%.1:1", out)
  end, { timeout = 90 })

  it("run shifts no traffic until every source has answered: the monitoring pre-flight check fails", function()
    s = assert(demo_stack.start({ rps = 50 }))
    local res = run(s, { stage("Initial", 5, "2s"), stage("Full", 100, "2s") },
      { "versions.canary.metrics=http://127.0.0.1:1/metrics" }, { timeout = 30 })
    for _, w in ipairs(s.weights) do assert.equals(0, w.canary, "traffic moved:\n" .. dump(res)) end
    assert.equals(0, #events(res, "weight_requested"), dump(res))
    assert.equals("aborted", res.outcome, dump(res))
    assert.equals("preflight:monitoring", res.reason, dump(res))
    assert.equals(3, res.code)
  end, { timeout = 90 })

  it("run shifts no traffic until every source has answered, also without pre-flight checks", function()
    s = assert(demo_stack.start({ rps = 50 }))
    local res = run(s, { stage("Initial", 5, "2s"), stage("Full", 100, "2s") },
      { "versions.canary.metrics=http://127.0.0.1:1/metrics", "preflight=[]" }, { timeout = 30 })
    for _, w in ipairs(s.weights) do assert.equals(0, w.canary, "traffic moved:\n" .. dump(res)) end
    assert.equals(0, #events(res, "weight_requested"), dump(res))
    assert.equals("aborted", res.outcome, dump(res))
    assert.equals("error:sources", res.reason, dump(res))
    local pf = events(res, "sources_checked")[1]
    assert.equals("fail", pf.status)
    assert.matches("127.0.0.1:1", pf.detail)
  end, { timeout = 90 })
end)

-- The runbook's abTest works as configured: `--config playbooks/canary-config.yaml`
-- (abTest.enabled: true, alpha 0.05, minimumSampleSize 10,000) gates the stage whose own
-- minSampleSize reaches the test's (Half), and a regression inside every static threshold
-- is rolled back by it.
local sim = require("spec.support.sim")

local HEALTHY = "scenarios/healthy.lua"
local SUBTLE = "spec/fixtures/scenarios/subtle-tail.lua"
local CONFIG = { "--config", "playbooks/canary-config.yaml" }

local function judges(events)
  local out = {}
  for _, e in ipairs(sim.events_of(events, "judge")) do out[#out + 1] = e end
  return out
end

describe("the runbook's abTest through --config", function()
  it("runs the A/B test at Half on a healthy canary, which passes it: promoted on time", function()
    local s, events, r = sim.simulate("playbooks/canary.lua", HEALTHY, CONFIG)
    assert.truthy(s, r.stderr)
    assert.equals("promoted", s.outcome)
    assert.near(3300, s.at, 1)
    local j = judges(events)
    assert.equals(1, #j, "one A/B test, at Half")
    assert.equals("ab_test", j[1].name)
    assert.equals("Half", j[1].stage)
    assert.equals("pass", j[1].verdict)
    assert.is_nil(j[1].insufficient)
  end)

  it("rolls back a tail 30 % slower inside every static threshold at Half (gate:ab_test)", function()
    for _, extra in ipairs({ CONFIG, {} }) do
      local s, events, r = sim.simulate("playbooks/canary.lua", SUBTLE, extra)
      assert.truthy(s, r.stderr)
      assert.equals("rolled_back", s.outcome)
      assert.equals("gate:ab_test", s.reason)
      local j = judges(events)
      assert.equals("fail", j[#j].verdict)
      assert.equals("Half", j[#j].stage)
      assert.equals(1, r.code)
    end
    -- the static gates alone promote it
    local s = sim.simulate("playbooks/canary.lua", SUBTLE, { "--set", "ab_test.enabled=false" })
    assert.equals("promoted", s.outcome)
  end)

  it("ab_test.gate = false turns it off; a list names the stages", function()
    local _, events = sim.simulate("playbooks/canary.lua", HEALTHY, { "--set", "ab_test.gate=false" })
    assert.equals(0, #judges(events))
    local _, ev2 = sim.simulate("playbooks/canary.lua", HEALTHY, { "--set", "ab_test.gate[1]=Majority" })
    local j = judges(ev2)
    assert.equals(1, #j)
    assert.equals("Majority", j[1].stage)
  end)
end)

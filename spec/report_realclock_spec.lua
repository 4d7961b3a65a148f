-- rollout-test: serial (a real-clock rollout whose evaluation count is read back)
-- rollout report on a journal that rollout.journal wrote during a real-clock rollout (the
-- engine on the real clock with a simulated canary), torn last line and all. The rest of
-- the report's specs are in spec/report_spec.lua.
local fs = require("rollout.fs")
local report = require("rollout.report")
local journal = require("rollout.journal")
local obs = require("spec.support.observability")

describe("report of a real-clock rollout", function()
  local dir
  setup(function() dir = assert(fs.mkdtemp("report-realclock")) end)
  teardown(function() fs.rmtree(dir) end)

  it("reads a journal written by rollout.journal during a real-clock rollout, torn last line and all", function()
    local path = dir .. "/real.jsonl"
    local w = assert(journal.open(path))
    local pb = obs.playbook({ stages = { { name = "Initial", weight = 10, hold = "1.5s" },
      { name = "Full", weight = 100, hold = "1s" } } })
    local outcome = obs.run(pb, obs.scenario({ canary = { error_rate = 0.003,
      latency = { p50 = "42ms", p99 = "190ms" }, changes = { { at = "0.1s", error_rate = 0.9 } } } }), { emit = w:sink() })
    w:close()
    assert.equals("rolled_back", outcome.outcome)
    local h = assert(io.open(path, "a"))
    h:write('{"event":"evalu') -- a crash mid-write
    h:close()
    local m = report.analyze(assert(report.load(path)))
    assert.is_true(m.torn)
    assert.equals("rolled_back", m.outcome.outcome)
    assert.matches("^obs%-demo%-canary%-%d+%-%d+$", m.deployment_id)
    assert.is_number(m.started_ts)
    assert.equals("spec", m.who)
    assert.gt(m.counts.evaluations, 2)
    assert.gt(m.rollbacks[1].restore, -1e-9)
    assert.matches("^Rolled back at [%d%.]+s during Initial %(canary at 10%%%): trigger error_rate fired", m.why)
    local html = report.html(m)
    assert.truthy(html:find("torn line", 1, true))
  end)
end)

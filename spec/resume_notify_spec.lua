-- A rollout keeps its identity across a resume: the notifications a resumed run (or a fleet
-- takeover, which continues the journal the same way) sends name the deployment the rollout
-- started as. The engine's `t` leaves out the time no engine ran, so an id rebuilt from the
-- resumed run's clock (ts - t) was the start plus the downtime, and the deployment API was
-- told to roll back a deployment it had never heard of. Real clock, simulated router and
-- traffic (spec/support/observability.lua), a real HTTP receiver.
local rollout = require("rollout")
local journal = require("rollout.journal")
local notify = require("rollout.notify")
local obs = require("spec.support.observability")
local receiver = require("spec.support.receiver")

local function playbook(url)
  return obs.playbook({
    stages = { { name = "Initial", weight = 10, hold = "400ms" }, { name = "Half", weight = 50, hold = "2s" },
      { name = "Full", weight = 100, hold = "400ms" } },
    notifications = {
      { type = "deployment_api", url = url .. "/deployments", rollback_url = url .. "/rollback" },
      { type = "webhook", url = url .. "/hook", events = { "*" } },
    },
  })
end

local function ids(requests)
  local out = {}
  for _, q in ipairs(requests) do
    local id = q.json.deployment_id or (q.json.rollout or {}).deployment_id
    out[#out + 1] = q.path .. " " .. tostring(q.json.event or "") .. " " .. tostring(id)
  end
  return out
end

describe("a resumed rollout's notifications", function()
  local rx
  after_each(function() if rx then rx.close() end end)

  it("name the deployment it started as, after downtime, through the rollback call", function()
    rx = receiver()
    local pb = playbook(rx.url)
    -- the first run: stopped (as by kill -9: no more events) once the second stage is under way
    local n1 = notify.new(pb, { who = "spec" })
    local events = obs.crash_at(pb, obs.scenario(), 50, n1.emit, 0.2)
    n1:close(2)
    local start = rx.on("/deployments")[1]
    assert(start, "the deployment API heard the start")
    local id = start.json.deployment_id
    assert.matches("^obs%-demo%-canary%-%d+%-%d+$", id)

    -- no engine runs for 1.5 s, then `--resume`: a new process, a new notifier; the canary
    -- now fails, so the resumed run rolls back and calls the deployment API's rollback_url
    rollout.sleep(1.5)
    local resume = assert(journal.replay(events))
    local n2 = notify.new(pb, { who = "spec" })
    local bad = obs.scenario({ canary = { error_rate = 0.5, latency = { p50 = "42ms", p99 = "190ms" } } })
    local outcome, _, evs2 = obs.run(pb, bad, { emit = n2.emit, resume = resume })
    n2:close(5)
    assert.equals("rolled_back", outcome.outcome)
    local resumed = obs.events_of(evs2, "rollout_resumed")[1]
    assert.truthy(resumed.down >= 1.5, "the downtime is recorded: " .. tostring(resumed.down))

    local rb = rx.on("/rollback")
    assert.equals(1, #rb, table.concat(ids(rx.requests), "\n"))
    assert.equals(id, rb[1].json.deployment_id, "the rollback names the deployment that started")
    local after = 0
    for _, q in ipairs(rx.on("/hook")) do
      if q.at > start.at + 1 and q.json.rollout then
        after = after + 1
        assert.equals(id, q.json.rollout.deployment_id, q.json.event .. " after the resume")
      end
    end
    assert.truthy(after >= 3, "the resumed run notified (" .. after .. " webhooks)")
  end)
end)

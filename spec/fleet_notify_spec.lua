-- A fleet rollout sends its playbook's notifications, as `rollout run` does: a real etcd
-- (spec/fixtures/fleet/harness.lua, on spec/support/servers.lua), one `rollout agent`
-- process, two rollouts submitted with webhook and deployment_api notifiers pointing at an
-- HTTP receiver (spec/support/receiver.lua). The agent posts the start, every stage and
-- the outcome (and the deployment API's start and rollback), and journals each delivery
-- (notification_sent) to etcd before it lets the rollout go.
local fs = require("rollout.fs")
local json = require("rollout.json")
local H = require("spec.fixtures.fleet.harness")
local receiver = require("spec.support.receiver")

local PB = "spec/fixtures/fleet/playbooks/canary.lua"
local HEALTHY = "spec/fixtures/fleet/scenarios/healthy.lua"
local FAILS = "spec/fixtures/fleet/scenarios/fails-late.lua"

local function count(events, kind)
  local n = 0
  for _, ev in ipairs(events) do if ev.event == kind then n = n + 1 end end
  return n
end

describe("fleet notifications", function()
  local E, rx, agent, dir

  setup(function()
    E = assert(H.etcd())
    dir = assert(fs.mkdtemp("fleet-notify-spec"))
    rx = receiver({ ["/hang"] = { "hang" } }) -- /hang never answers
  end)

  teardown(function()
    if agent then pcall(agent.stop) end
    if rx then rx.close() end
    if E then E.stop() end
    if dir then fs.rmtree(dir) end
  end)

  it("an agent posts the playbook's webhook and deployment API notifications and journals each delivery", function()
    local prefix = "/fn/"
    -- a long lease: this spec is about notifications, not takeovers
    agent = H.agent({ name = "n1", etcd = E.url, prefix = prefix, ttl = 10, dir = dir })
    local c = E.client()
    H.wait(function()
      local kvs = require("rollout.fleet").range(c, prefix .. "agents/", { keys_only = true })
      return kvs and #kvs >= 1
    end, 15, "the agent to join")
    H.submit(E.url, prefix, "good", PB, { "--simulated-router", "--scenario", HEALTHY,
      "--set", "notifications[1].type=webhook", "--set", "notifications[1].url=" .. rx.url .. "/good" })
    H.submit(E.url, prefix, "bad", PB, { "--simulated-router", "--scenario", FAILS, "--set", "stages[3].hold=3s",
      "--set", "notifications[1].type=webhook", "--set", "notifications[1].url=" .. rx.url .. "/bad",
      "--set", "notifications[2].type=deployment_api", "--set", "notifications[2].url=" .. rx.url .. "/deployments" })
    -- the owner lets a rollout go (owner_released) only after its notifications went out
    local function released(id)
      return H.first(H.events(c, prefix, id), function(ev) return ev.event == "owner_released" end)
    end
    H.wait(function() return released("good") and released("bad") end, 40, "both rollouts to end and be released")

    -- the promoted rollout: started, every stage, the outcome, in order
    local kinds, stages = {}, {}
    for _, q in ipairs(rx.on("/good")) do
      kinds[#kinds + 1] = q.json.event
      if q.json.event == "stage_entered" then stages[#stages + 1] = q.json.stage end
    end
    assert.equals("rollout_started", kinds[1], json.encode(kinds))
    assert.equals("outcome", kinds[#kinds], json.encode(kinds))
    assert.equals("s1,s2,s3,s4", table.concat(stages, ","))
    local last = rx.on("/good")[#kinds].json
    assert.equals("promoted", last.decision)
    assert.equals("promoted", last.data.outcome)
    assert.equals("svc", last.rollout.service)
    assert.equals("v1", last.rollout.baseline)
    assert.equals("v2", last.rollout.canary)
    assert.equals("n1", last.rollout.started_by, "the agent that drove it")

    -- the rolled-back rollout: the webhook's outcome and the runbook's deployment calls
    local bad = rx.on("/bad")
    assert.equals("rollout_started", bad[1].json.event)
    assert.equals("outcome", bad[#bad].json.event)
    assert.equals("rolled_back", bad[#bad].json.data.outcome)
    assert.equals("trigger:error_rate", bad[#bad].json.reason)
    local start = assert(rx.on("/deployments")[1], "the deployment API's start call").json
    assert.equals("svc", start.service)
    assert.equals("v1", start.from_version)
    assert.equals("v2", start.to_version)
    local rb = assert(rx.on("/deployments/rollback")[1], "the deployment API's rollback call").json
    assert.equals(start.deployment_id, rb.deployment_id)
    assert.equals("trigger:error_rate", rb.reason_code)
    assert.is_true(rb.automatic)

    -- each delivery is in the rollout's journal in etcd, written by its owner, before the release
    for _, id in ipairs({ "good", "bad" }) do
      local events = H.events(c, prefix, id)
      assert(H.check_journal(events))
      local want = #rx.on("/" .. id) + (id == "bad" and (#rx.on("/deployments") + #rx.on("/deployments/rollback")) or 0)
      assert.equals(want, count(events, "notification_sent"), id)
      assert.equals(0, count(events, "notification_failed"), id)
      local rel = released(id)
      for _, ev in ipairs(events) do
        if ev.event == "notification_sent" then
          assert.equals("n1", ev.agent)
          assert.truthy(ev.seq < rel.seq, id .. ": journaled before the release")
        end
      end
    end
  end, { timeout = 90 })

  it("after a handover the new owner goes on notifying, with the same deployment id", function()
    local prefix = "/fn2/"
    local agents = {}
    for _, name in ipairs({ "m1", "m2" }) do
      agents[name] = H.agent({ name = name, etcd = E.url, prefix = prefix, ttl = 10, dir = dir })
    end
    finally(function() for _, a in pairs(agents) do pcall(a.stop) end end)
    local c = E.client()
    H.wait(function()
      local kvs = require("rollout.fleet").range(c, prefix .. "agents/", { keys_only = true })
      return kvs and #kvs >= 2
    end, 15, "the agents to join")
    H.submit(E.url, prefix, "moved", PB, { "--simulated-router", "--scenario", HEALTHY, "--set", "stages[2].hold=3s",
      "--set", "notifications[1].type=webhook", "--set", "notifications[1].url=" .. rx.url .. "/moved" })
    H.wait(function()
      local st = H.status(c, prefix, "moved").status
      return st.stage == "s2" and st.event == "evaluation" and (st.held or 0) >= 0.5
    end, 20, "the rollout in the middle of stage s2")
    local first = H.owner(c, prefix, "moved")
    agents[first].stop() -- SIGTERM: hands the rollout back at once
    local events
    H.wait(function()
      events = H.events(c, prefix, "moved")
      return H.first(events, function(ev) return ev.event == "owner_released" and ev.agent ~= first end)
    end, 30, "the other agent to finish and release it")
    assert(H.check_journal(events))
    local second = H.first(events, function(ev) return ev.event == "owner_acquired" and ev.agent ~= first end).agent

    local reqs = rx.on("/moved")
    local stages = {}
    for _, q in ipairs(reqs) do if q.json.event == "stage_entered" then stages[#stages + 1] = q.json.stage end end
    assert.equals("rollout_started", reqs[1].json.event)
    assert.equals("s1,s2,s3,s4", table.concat(stages, ","), "each stage once: s1 and s2 by " .. first .. ", s3 and s4 by " .. second)
    local last = reqs[#reqs].json
    assert.equals("outcome", last.event)
    assert.equals("promoted", last.data.outcome)
    assert.equals(reqs[1].json.rollout.deployment_id, last.rollout.deployment_id, "one deployment across the handover")
    -- every delivery journaled, by the agent that made it
    local by = {}
    for _, ev in ipairs(events) do
      if ev.event == "notification_sent" then by[ev.agent] = (by[ev.agent] or 0) + 1 end
    end
    assert.equals(#reqs, (by[first] or 0) + (by[second] or 0))
    assert.truthy((by[first] or 0) >= 3 and (by[second] or 0) >= 3,
      "the start, s1 and s2 by the first owner; s3, s4 and the outcome by the second: " .. json.encode(by))
  end, { timeout = 90 })

  it("an agent that hands a rollout back lets its undelivered notifications go at once and says so", function()
    local prefix = "/fn3/"
    local a = H.agent({ name = "h1", etcd = E.url, prefix = prefix, ttl = 10, dir = dir })
    finally(function() pcall(a.stop) end)
    local c = E.client()
    H.wait(function()
      local kvs = require("rollout.fleet").range(c, prefix .. "agents/", { keys_only = true })
      return kvs and #kvs >= 1
    end, 15, "the agent to join")
    H.submit(E.url, prefix, "stuck", PB, { "--simulated-router", "--scenario", HEALTHY,
      "--set", "notifications[1].type=webhook", "--set", "notifications[1].url=" .. rx.url .. "/hang" })
    H.wait(function()
      local st = H.status(c, prefix, "stuck").status
      return st.stage == "s1" and st.event == "evaluation"
    end, 20, "the rollout in stage s1")
    H.wait(function() return #rx.on("/hang") >= 1 end, 10, "the first notification to hang")
    a.stop()
    local events = H.events(c, prefix, "stuck")
    assert.truthy(H.first(events, function(ev) return ev.event == "owner_released" and ev.why == "agent stopping" end))
    local n = tonumber(a.stderr():match("stuck: (%d+) notification%(s%) not sent %(agent stopping%)"))
    assert.truthy(n and n >= 2, "the hanging start and the queued s1 were let go: " .. a.stderr())
    assert.equals(0, #H.events(c, prefix, "stuck") - #events, "nothing written after the hand-back")
    assert.is_nil(H.first(events, function(ev) return ev.event == "notification_sent" end))
  end, { timeout = 60 })
end)

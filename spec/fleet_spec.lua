-- rollout-test: serial (etcd leases, keepalives and partitions timed in seconds; a busy neighbour shifts them)
-- Fleet mode against a real etcd (3.4) and a real HAProxy: three `rollout agent` processes,
-- several rollouts each, ownership through leases and fencing tokens, takeover after
-- kill -9, a partitioned owner (iptables inside a network namespace), commands through etcd.
local fs = require("rollout.fs")
local json = require("rollout.json")
local H = require("spec.fixtures.fleet.harness")

local PB = "spec/fixtures/fleet/playbooks/canary.lua"
local PROBE = "spec/fixtures/fleet/playbooks/probe.lua"
local HEALTHY = "spec/fixtures/fleet/scenarios/healthy.lua"
local FAILS = "spec/fixtures/fleet/scenarios/fails-late.lua"
local TTL, INTERVAL = 2, 0.25
-- etcd's lessor revokes expired leases on a 500 ms tick, so a lease outlives its TTL by up to
-- that much before anybody can take its keys over.
local LESSOR_TICK = 0.5

-- The partition test needs a network namespace with iptables; try one (and remove it).
local netns_ok, netns_why = H.netns()
if netns_ok then netns_ok.remove(); netns_ok = true end

local function router_sets(socket, be)
  return { "--set", "router.socket=" .. socket, "--set", "router.backend=" .. be }
end

local function concat(...)
  local out = {}
  for _, t in ipairs({ ... }) do for _, v in ipairs(t) do out[#out + 1] = v end end
  return out
end

describe("fleet pieces", function()
  it("events leave the agent redacted exactly as the journal writes them", function()
    local fleet = require("rollout.fleet")
    local journal = require("rollout.journal")
    local evs = {
      { event = "evaluation", t = 1.5, stage = "s1", canary = { error_rate = 0.01, requests = 10 }, weight = 5 },
      { event = "hook_failed", hook = "deploy", error = "curl https://bob:hunter2secret@example.test/x failed" },
      { event = "command", command = "abort", arg = "Authorization: Bearer abcdefgh12345678", who = "ops",
        headers = { token = "s3cr3t-value" } },
    }
    for _, ev in ipairs(evs) do
      assert.equals(journal.encode(ev), fleet.encode(ev))
      assert.equals(journal.encode(ev), fleet.encode(ev), "a second time, from the memo")
    end
    assert.is_nil(fleet.encode(evs[2]):find("hunter2secret", 1, true))
  end)

  it("the synthetic source gives a window's expected traffic from the confirmed weights", function()
    local sc = assert(require("rollout.sim.scenario").check({ traffic = { rps = 200 },
      baseline = { error_rate = 0.01, latency = { p50 = "20ms", p99 = "80ms" } },
      canary = { error_rate = 0.01, latency = { p50 = "20ms", p99 = "80ms" }, changes = { { at = "10s", error_rate = 0.5 } } } }))
    local now = 0
    local src = require("rollout.fleet_sim").source(sc, { clock = function() return now end })
    src:record_weight(0, 25)
    now = 4
    local s = src:signals(nil, 2)
    assert.equals(100, s.canary.requests)
    assert.equals(300, s.baseline.requests)
    assert.near(0.01, s.canary.error_rate, 1e-9)
    assert.near(0.08, s.canary.p99, 1e-9)
    now = 10.5 -- half of the 1 s window after the change
    assert.near((0.01 + 0.5) / 2, src:signals(nil, 1).canary.error_rate, 1e-9)
    src:record_weight(11, 0)
    now = 12
    assert.equals(0, src:signals(nil, 1).canary.requests)
    assert.is_nil(src:signals(nil, 1).canary.error_rate, "no requests: no data, never 0")
  end)
end)

describe("fleet mode", function()
  local E, backends, hx, dir, ns
  local all_agents = {}

  setup(function()
    if netns_ok then ns = assert(H.netns()) end
    E = assert(H.etcd({ extra_host = ns and ns.host_ip }))
    backends = H.backends()
    hx = H.haproxy(12, backends)
    dir = assert(fs.mkdtemp("fleet-spec"))
  end)

  teardown(function()
    for _, a in ipairs(all_agents) do pcall(a.stop) end
    if hx then hx.stop() end
    if backends then backends.stop() end
    if E then E.stop() end
    if ns then ns.remove() end
    if dir then fs.rmtree(dir) end
  end)

  local function start_agents(prefix, names, extra)
    local list = {}
    for _, name in ipairs(names) do
      local o = { name = name, etcd = E.url, prefix = prefix, ttl = TTL, dir = dir .. prefix:gsub("/", "_") }
      for k, v in pairs(extra or {}) do o[k] = v end
      local a = H.agent(o)
      list[#list + 1] = a
      all_agents[#all_agents + 1] = a
    end
    local c = E.client()
    H.wait(function()
      local kvs = require("rollout.fleet").range(c, prefix .. "agents/", { keys_only = true })
      return kvs and #kvs >= #names
    end, 15, "agents to join")
    return list
  end

  local function wait_done(c, prefix, ids, timeout)
    H.wait(function()
      for _, id in ipairs(ids) do
        if not H.status(c, prefix, id).done then return false end
      end
      return true
    end, timeout or 40, "rollouts to finish")
  end

  local function check_owners(agents, c, prefix, id)
    local events = H.events(c, prefix, id)
    local ok, err = H.check_journal(events)
    assert(ok, id .. ": " .. tostring(err))
    local epochs, overlap = H.epochs(agents, id)
    assert.is_nil(overlap, id .. ": two owners at once: " .. json.encode(overlap or {}))
    return events, epochs
  end

  it("agents share the rollouts, commands through etcd reach the owner, list shows who drives what", function()
    local prefix = "/t1/"
    local agents = start_agents(prefix, { "a1", "a2", "a3" })
    local c = E.client()
    local urls = { "--set", "versions.baseline.url=" .. backends.url.v1, "--set", "versions.canary.url=" .. backends.url.v2 }
    H.submit(E.url, prefix, "gate", PROBE, concat(router_sets(hx.socket, "be1"), urls, { "--set", "stages[2].pause=true" }))
    H.submit(E.url, prefix, "abort", PB, concat(router_sets(hx.socket, "be2"), { "--scenario", HEALTHY, "--set", "stages[1].hold=30s" }))
    H.submit(E.url, prefix, "plain", PROBE, concat(router_sets(hx.socket, "be3"), urls))
    -- a manual gate: the rollout waits for a person
    H.wait(function()
      local st = H.status(c, prefix, "gate").status
      return st.state == "paused" and st.stage == "s2"
    end, 30, "the manual gate")
    local owners = {}
    for _, id in ipairs({ "gate", "abort", "plain" }) do owners[id] = H.owner(c, prefix, id) or "?" end
    assert.truthy(owners.gate ~= owners.abort and owners.abort ~= owners.plain and owners.gate ~= owners.plain,
      "three agents, three rollouts: one each (" .. json.encode(owners) .. ")")
    local l = H.cli("list", "--etcd", E.url, "--prefix", prefix)
    assert.equals(0, l.code, l.stderr)
    assert.matches("gate%s+svc%s+" .. owners.gate .. "%s+paused", l.stdout)
    assert.matches("agents: a1 %(1%) a2 %(1%) a3 %(1%)", l.stdout)
    -- the commands: promote passes the gate, abort rolls back; both acknowledged by the owner
    local r = H.cli("ctl", "--etcd", E.url, "--prefix", prefix, "gate", "promote")
    assert.equals(0, r.code, r.stderr)
    assert.matches("acknowledged by " .. owners.gate, r.stdout)
    r = H.cli("ctl", "--etcd", E.url, "--prefix", prefix, "abort", "abort", "bad canary")
    assert.equals(0, r.code, r.stderr)
    assert.matches("acknowledged by " .. owners.abort, r.stdout)
    wait_done(c, prefix, { "gate", "abort", "plain" })
    local st = H.cli("ctl", "--etcd", E.url, "--prefix", prefix, "abort", "status")
    assert.equals(0, st.code)
    assert.matches("abort: rolled_back %(manual%)", st.stdout)
    r = H.cli("ctl", "--etcd", E.url, "--prefix", prefix, "gate", "pause")
    assert.equals(1, r.code, "a finished rollout refuses commands (exit 1, as a socket refusal)")
    assert.matches("has ended %(promoted%)", r.stderr)
    assert.equals("promoted", H.status(c, prefix, "gate").done.outcome)
    assert.equals("promoted", H.status(c, prefix, "plain").done.outcome)
    -- traffic where the outcomes say: the promoted backends serve the canary only
    assert.same({ baseline = 0, canary = 100 }, hx.weights("be1"))
    assert.same({ baseline = 100, canary = 0 }, hx.weights("be2"))
    assert.same({ baseline = 0, canary = 100 }, hx.weights("be3"))
    assert.same({ v2 = 10 }, hx.served("be1", 10))
    for _, id in ipairs({ "gate", "abort", "plain" }) do
      local events, epochs = check_owners(agents, c, prefix, id)
      assert.equals(1, #epochs, id .. ": one owner from start to end")
      local cmds = 0
      for _, ev in ipairs(events) do if ev.event == "command" then cmds = cmds + 1 end end
      assert.equals(id == "plain" and 0 or 1, cmds, id .. ": each command applied exactly once")
    end
    -- real signals came from the probe
    local gate_ev = H.first(H.events(c, prefix, "plain"), function(ev) return ev.event == "gate" and ev.result == "pass" end)
    assert.truthy(gate_ev and gate_ev.canary.requests > 0, "the probe measured the canary")
    local lj = json.decode(H.cli("list", "--etcd", E.url, "--prefix", prefix, "--json").stdout)
    assert.equals(3, #lj.rollouts)
    for _, row in ipairs(lj.rollouts) do assert.is_nil(row.owner, row.id .. " is let go once finished") end
  end, { timeout = 90 })

  it("kill -9 of an owner mid-stage: another agent resumes it, and the outcome matches uninterrupted runs", function()
    local prefix = "/t2/"
    local agents = start_agents(prefix, { "b1", "b2", "b3" })
    local by_name = {}
    for _, a in ipairs(agents) do by_name[a.name] = a end
    local c = E.client()
    local ids = { "h1", "f1", "h2", "f2", "h3", "f3" }
    for i, id in ipairs(ids) do
      H.submit(E.url, prefix, id, PB,
        concat(router_sets(hx.socket, "be" .. (3 + i)), { "--scenario", id:sub(1, 1) == "h" and HEALTHY or FAILS,
          "--set", "stages[3].hold=3s" }))
    end
    H.wait(function()
      for _, id in ipairs(ids) do if not H.owner(c, prefix, id) then return false end end
      return true
    end, 15, "every rollout to be owned")
    local victim = by_name[H.owner(c, prefix, "f1")]
    H.wait(function()
      local st = H.status(c, prefix, "f1").status
      return st.stage == "s2" and st.event == "evaluation" and (st.held or 0) >= 0.4
    end, 20, "f1 in the middle of stage s2")
    local owned = {}
    for _, id in ipairs(ids) do if H.owner(c, prefix, id) == victim.name then owned[#owned + 1] = id end end
    local before = {}
    for _, id in ipairs(owned) do before[id] = H.status(c, prefix, id).status end
    local t_kill = victim.kill9()
    wait_done(c, prefix, ids, 40)
    local outcomes, paths = {}, {}
    local report = {}
    for _, id in ipairs(ids) do
      local events = check_owners(agents, c, prefix, id)
      local out = H.outcome(events)
      outcomes[id] = out.outcome .. " " .. tostring(out.reason) .. " " .. tostring(out.stage)
      paths[id] = H.stage_path(events)
    end
    for _, id in ipairs(owned) do
      local events = H.events(c, prefix, id)
      local acquired = H.first(events, function(ev) return ev.event == "owner_acquired" and ev.agent ~= victim.name end)
      assert.truthy(acquired, id .. ": taken over")
      local resumed = H.first(events, function(ev) return ev.event == "rollout_resumed" end)
      local b4 = before[id]
      local took = resumed.ts - t_kill
      report[#report + 1] = string.format("%s: %s -> %s, acquired after %.2f s, resumed after %.2f s (stage %s, held %.2f)",
        id, victim.name, acquired.agent, acquired.time - t_kill, took, tostring(resumed.stage_index), resumed.held or -1)
      assert.truthy(took <= TTL + INTERVAL + LESSOR_TICK,
        string.format("%s resumed %.2f s after the kill (TTL %d + interval %.2f + etcd's lease tick %.1f)",
        id, took, TTL, INTERVAL, LESSOR_TICK))
      if b4.stage and not before[id].outcome then
        local sr = H.first(events, function(ev) return ev.event == "stage_resumed" end)
        if b4.state == "stage" then
          assert.truthy(sr, id .. ": the stage continued, not restarted")
          assert.truthy(sr.index >= b4.stage_index, id .. ": same stage or later")
          local rb = H.first(events, function(ev) return ev.event == "weights_read_back" and ev.seq > sr.seq end)
          assert.truthy(rb and rb.got and rb.got.canary == rb.want.canary, id .. ": weights re-verified on HAProxy")
        end
      end
    end
    print("\n    " .. table.concat(report, "\n    "))
    -- interrupted or not, the same decisions
    for _, id in ipairs(ids) do
      local kind = id:sub(1, 1)
      local want = kind == "h" and "promoted nil s4" or "rolled_back trigger:error_rate s3"
      assert.equals(want, outcomes[id], id)
      assert.equals(kind == "h" and "s1,s2,s3,s4" or "s1,s2,s3", paths[id], id .. " stage path")
      assert.same(kind == "h" and { baseline = 0, canary = 100 } or { baseline = 100, canary = 0 },
        hx.weights("be" .. (3 + (function() for i, x in ipairs(ids) do if x == id then return i end end end)())))
    end
    assert.truthy(#owned >= 1)
  end, { timeout = 120 })

  it("SIGTERM hands an agent's rollouts back at once, without waiting for the lease", function()
    local prefix = "/t4/"
    local agents = start_agents(prefix, { "s1", "s2" })
    local by_name = { s1 = agents[1], s2 = agents[2] }
    local c = E.client()
    H.submit(E.url, prefix, "g1", PB, concat(router_sets(hx.socket, "be12"), { "--scenario", HEALTHY, "--set", "stages[2].hold=3s" }))
    H.wait(function()
      local st = H.status(c, prefix, "g1").status
      return st.stage == "s2" and st.event == "evaluation"
    end, 15, "g1 in stage s2")
    local first = H.owner(c, prefix, "g1")
    local t_stop = require("rollout").time()
    by_name[first].stop()
    wait_done(c, prefix, { "g1" }, 30)
    local events = check_owners(agents, c, prefix, "g1")
    local released = H.first(events, function(ev) return ev.event == "owner_released" and ev.agent == first end)
    local acquired = H.first(events, function(ev) return ev.event == "owner_acquired" and ev.agent ~= first end)
    assert.truthy(released and acquired, "handed back and taken over")
    assert.truthy(acquired.time - t_stop < 1, string.format("taken over %.2f s after SIGTERM (TTL %d)", acquired.time - t_stop, TTL))
    assert.equals("promoted", H.outcome(events).outcome)
    assert.equals("s1,s2,s3,s4", H.stage_path(events))
  end, { timeout = 60 })

  local partition = netns_ok and it or function(name)
    print("  skip: " .. name .. ": cannot make a network namespace here: " .. tostring(netns_why))
    return pending(name)
  end

  partition("a partitioned owner (etcd unreachable) stops acting before its lease can be taken over", function()
    local prefix = "/t3/"
    local p = start_agents(prefix, { "p" }, { etcd = E.url_on(ns.host_ip), netns = ns })[1]
    local c = E.client()
    local ids = { "n1", "n2" }
    for i, id in ipairs(ids) do
      H.submit(E.url, prefix, id, PB, concat(router_sets(hx.socket, "be" .. (9 + i)),
        { "--scenario", HEALTHY, "--set", "stages[2].hold=3s", "--set", "stages[3].hold=3s" }))
    end
    H.wait(function() return H.owner(c, prefix, "n1") == "p" and H.owner(c, prefix, "n2") == "p" end, 15, "p to own both")
    local others = start_agents(prefix, { "q1", "q2" })
    local agents = { p, others[1], others[2] }
    H.wait(function()
      for _, id in ipairs(ids) do
        local st = H.status(c, prefix, id).status
        if st.stage ~= "s2" or st.event ~= "evaluation" or (st.held or 0) < 0.5 then return false end
      end
      return true
    end, 20, "both in stage s2")
    local t_cut = require("rollout").time()
    ns.cut()
    H.wait(function()
      for _, id in ipairs(ids) do
        local o = H.owner(c, prefix, id)
        if not o or o == "p" then return false end
        local resumed = H.first(H.events(c, prefix, id), function(ev) return ev.event == "rollout_resumed" and ev.who ~= "p" end)
        if not resumed then return false end
      end
      return true
    end, 15, "the others to take over")
    local lost = {}
    H.wait(function()
      for _, ev in ipairs(p.events()) do if ev.event == "ownership_lost" then lost[ev.rollout] = ev end end
      return lost.n1 and lost.n2
    end, 5, "p to record that it stopped")
    assert.matches("etcd unreachable", p.stderr())
    local report = {}
    for _, id in ipairs(ids) do
      local events = H.events(c, prefix, id)
      local acq = H.first(events, function(ev) return ev.event == "owner_acquired" and ev.agent ~= "p" end)
      report[#report + 1] = string.format("%s: cut at 0, p stopped at +%.2f s, %s took over at +%.2f s", id,
        lost[id].time - t_cut, acq.agent, acq.time - t_cut)
      assert.truthy(lost[id].time < acq.time, id .. ": p stopped before the takeover")
      -- p moved no traffic once it could not prove ownership
      for _, ev in ipairs(p.events()) do
        if ev.rollout == id and (ev.event == "router" or ev.event == "weight_confirmed" or ev.event == "rollback_attempt") then
          assert.truthy(ev.ts < t_cut + 0.05, id .. ": p acted after the cut: " .. json.encode(ev))
        end
      end
    end
    print("\n    " .. table.concat(report, "\n    "))
    -- p was paused for etcd: the pause is in its own journal, never in etcd's
    local paused = H.first(p.events(), function(ev) return ev.event == "paused" and tostring(ev.reason):find("etcd", 1, true) end)
    assert.truthy(paused, "p paused its rollouts when etcd went away")
    ns.heal()
    H.wait(function() return select(2, p.stderr():gsub("joined:", "")) >= 2 end, 15, "p to rejoin with a new lease")
    wait_done(c, prefix, ids, 40)
    for i, id in ipairs(ids) do
      local events = check_owners(agents, c, prefix, id)
      assert.equals("promoted", H.outcome(events).outcome)
      assert.equals("s1,s2,s3,s4", H.stage_path(events))
      for _, ev in ipairs(events) do
        assert.truthy(ev.agent ~= "p" or (ev.ts or ev.time) < t_cut + 0.05, id .. ": p wrote to etcd after the cut: " .. json.encode(ev))
      end
      assert.same({ baseline = 0, canary = 100 }, hx.weights("be" .. (9 + i)))
    end
  end, { timeout = 120 })
  partition("a short etcd outage pauses the owner's rollouts and resumes them when etcd answers with the lease held", function()
    local prefix = "/t5/"
    -- keepalives every 3.3 s, each waiting up to 2.5 s: the outage is noticed within 5.8 s of
    -- the last answered one, healed at once, and over well before the lease (10 s) would end
    local ttl = 10
    local p = start_agents(prefix, { "o" }, { etcd = E.url_on(ns.host_ip), netns = ns, ttl = ttl })[1]
    local c = E.client()
    H.submit(E.url, prefix, "u1", PB, concat(router_sets(hx.socket, "be9"),
      { "--scenario", HEALTHY, "--set", "stages[2].hold=12s" }))
    H.wait(function()
      local st = H.status(c, prefix, "u1").status
      return st.stage == "s2" and st.event == "evaluation"
    end, 20, "u1 in stage s2")
    ns.cut()
    H.wait(function() return p.stderr():find("etcd unreachable", 1, true) end, 10, "o to notice")
    ns.heal()
    H.wait(function() return p.stderr():find("etcd reachable again", 1, true) end, 10, "o to see etcd again")
    wait_done(c, prefix, { "u1" }, 40)
    local events = check_owners({ p }, c, prefix, "u1")
    local takes = 0
    for _, ev in ipairs(events) do if ev.event == "owner_acquired" then takes = takes + 1 end end
    assert.equals(1, takes, "the lease held: nobody took over")
    local paused = H.first(events, function(ev) return ev.event == "paused" and ev.reason == "etcd unreachable" end)
    assert.truthy(paused, "the pause is in etcd's journal too (the backlog was sent)")
    assert.truthy(H.first(events, function(ev) return ev.event == "resumed" and ev.seq > paused.seq end), "resumed afterwards")
    assert.equals("promoted", H.outcome(events).outcome)
    assert.equals("s1,s2,s3,s4", H.stage_path(events))
    assert.same({ baseline = 0, canary = 100 }, hx.weights("be9"))
  end, { timeout = 90 })
end)

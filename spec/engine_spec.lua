-- The engine's decisions beyond the labelled scenarios (simulation, virtual time).
local proc = require("rollout.proc")
local json = require("rollout.json")
local sim = require("spec.support.sim")

local function drive(playbook, scenario, cmds, env)
  local argv = { rollout.exe, "--clock=virtual", "spec/support/engine_driver.lua", playbook, scenario }
  for _, c in ipairs(cmds) do argv[#argv + 1] = c end
  local r = assert(proc.run({ argv = argv, timeout = 60, env = env }))
  local events, summary = {}, nil
  for line in r.stdout:gmatch("[^\n]+") do
    local v = json.decode(line)
    if v and v.event then events[#events + 1] = v elseif v then summary = v end
  end
  assert.truthy(summary, "no summary: " .. r.stderr)
  return summary, events
end

local function first(events, kind, pred)
  for _, e in ipairs(events) do if e.event == kind and (not pred or pred(e)) then return e end end
end

describe("engine", function()
  it("a pre-flight failure stops before any traffic moves", function()
    local dir = require("rollout.fs").mkdtemp("sc")
    local p = dir .. "/pf.lua"
    local f = io.open(p, "w")
    f:write('local s = dofile("spec/fixtures/scenarios/steady.lua"); s.preflight = { database = "fail" }; return s')
    f:close()
    local summary, events = sim.simulate("playbooks/canary.lua", p)
    require("rollout.fs").rmtree(dir)
    assert.equals("aborted", summary.outcome)
    assert.equals("preflight:database", summary.reason)
    assert.is_nil(first(events, "weight_requested"))
    local checks = sim.events_of(events, "preflight_check")
    assert.equals(10, #checks, "every check runs and is reported")
    assert.truthy(first(events, "preflight_done", function(e) return e.failed == 1 and e.passed == 9 end))
  end)

  it("a manual gate waits for promote", function()
    local dir = require("rollout.fs").mkdtemp("pb")
    local p = dir .. "/gate.lua"
    local f = io.open(p, "w")
    f:write('local pb = include("' .. require("rollout.fs").realpath("playbooks/canary.lua") .. '"); pb.stages[2].pause = true; return pb')
    f:close()
    -- without a promote the run pauses at the end of Ramp-Up (15 m)
    local s1 = sim.simulate(p, "spec/fixtures/scenarios/steady.lua")
    assert.equals("paused", s1.outcome)
    assert.equals("manual_gate", s1.reason)
    assert.near(900, s1.at, 1)
    -- an operator's resume does not pass a manual gate; promote at 20 m does
    local s2, ev2 = drive(p, "spec/fixtures/scenarios/steady.lua", { "resume@17m", "promote@20m" })
    require("rollout.fs").rmtree(dir)
    assert.equals("promoted", s2.outcome)
    assert.near(55 * 60 + 5 * 60, s2.at, 1, "the rollout continues from 20 m")
    assert.truthy(first(ev2, "manual_gate_waiting"))
    local half = first(ev2, "stage_entered", function(e) return e.stage == "Half" end)
    assert.near(1200, half.t, 1)
  end)

  it("a trigger fires while a hook is waiting, and the hook is cancelled", function()
    local summary, events = sim.simulate("spec/fixtures/playbooks/slow-hook.lua", "spec/fixtures/scenarios/spike-in-rampup.lua", { "--run-hooks" })
    -- the hook blocks before Ramp-Up shifts, so the canary stays at 5 %; the 8 % errors
    -- from 7 m still fire error_rate about 2 m 40 s later
    assert.equals("rolled_back", summary.outcome)
    assert.equals("trigger:error_rate", summary.reason)
    assert.truthy(summary.at > 9 * 60 and summary.at < 11 * 60, "at " .. summary.at)
    local cancelled = first(events, "hook_cancelled")
    assert.truthy(cancelled, "the waiting hook was cancelled")
    assert.equals("before_stage", cancelled.hook)
    assert.is_nil(first(events, "stage_entered", function(e) return e.stage == "Half" end))
  end)

  it("rollback retries an unconfirmed router until it confirms, one event per attempt", function()
    local summary, events = sim.simulate("playbooks/canary.lua", "spec/fixtures/scenarios/spike-in-rampup.lua")
    assert.equals("rolled_back", summary.outcome)
    local attempts = sim.events_of(events, "rollback_attempt")
    assert.truthy(#attempts >= 2, "the router was down at first")
    assert.is_false(attempts[1].ok)
    assert.is_true(attempts[#attempts].ok)
    assert.truthy(summary.at >= 9.5 * 60, "at is when 0 % was confirmed")
  end)

  it("thresholds relative to the baseline catch what absolute ones miss", function()
    local abs = sim.simulate("playbooks/canary.lua", "spec/fixtures/scenarios/slightly-worse.lua")
    assert.equals("promoted", abs.outcome)
    local rel, events = sim.simulate("playbooks/canary.lua", "spec/fixtures/scenarios/slightly-worse.lua",
      { "--set", "stages[3].thresholds.error_rate=+0.4pp" })
    assert.equals("rolled_back", rel.outcome)
    assert.equals("gate:error_rate", rel.reason)
    local gate = first(events, "gate", function(e) return e.stage == "Half" end)
    local check = gate.checks[1]
    assert.equals("plus", check.relative)
    assert.near(0.001 + 0.004, check.threshold, 0.0005)
    assert.near(30 * 60, rel.at, 1)
    assert.truthy(first(events, "baseline_captured"))
  end)

  it("an operator pause holds the stage and resume continues with the time left", function()
    local s, events = drive("playbooks/canary.lua", "spec/fixtures/scenarios/steady.lua", { "pause@2m", "resume@4m" })
    assert.equals("promoted", s.outcome)
    assert.near(55 * 60 + 120, s.at, 1)
    local ramp = first(events, "stage_entered", function(e) return e.stage == "Ramp-Up" end)
    assert.near(7 * 60, ramp.t, 1)
  end)

  it("abort from an operator rolls back with reason manual", function()
    local s = drive("playbooks/canary.lua", "spec/fixtures/scenarios/steady.lua", { "abort@12m" })
    assert.equals("rolled_back", s.outcome)
    assert.equals("manual", s.reason)
    assert.near(720, s.at, 1)
  end)

  it("every gate event carries the values and thresholds behind it", function()
    local _, events = sim.simulate("playbooks/canary.lua", sim.SCENARIOS .. "/healthy.lua")
    local gates = sim.events_of(events, "gate")
    assert.equals(5, #gates)
    for _, g in ipairs(gates) do
      assert.equals("pass", g.result)
      assert.is_number(g.canary.error_rate)
      assert.is_number(g.canary.p99)
      for _, c in ipairs(g.checks) do
        if c.status ~= "not_measured" then
          assert.is_number(c.value, g.stage .. " " .. c.signal)
          assert.is_number(c.threshold)
        end
      end
    end
  end)

  it("a pause while a hook runs holds the rollout; resume runs the hook again and the stage", function()
    -- before_stage takes 60 s: Initial shifts at 1m, Ramp-Up's hook starts at 6m
    local s, events = drive("spec/fixtures/playbooks/slow-hooks.lua", "spec/fixtures/scenarios/steady.lua",
      { "pause@6m10s", "resume@6m40s" }, { RUN_HOOKS = "1" })
    assert.equals("promoted", s.outcome)
    local cancelled = first(events, "hook_cancelled")
    assert.equals("before_stage", cancelled.hook)
    local ramp = first(events, "stage_entered", function(e) return e.stage == "Ramp-Up" end)
    local shifted = first(events, "weight_confirmed", function(e) return e.canary == 25 end)
    assert.truthy(ramp and shifted, "Ramp-Up still shifts to 25 % after the resume")
    assert.near(6 * 60 + 40 + 60, shifted.t, 1)
    local gate = first(events, "gate", function(e) return e.stage == "Ramp-Up" end)
    assert.equals("pass", gate.result)
  end)

  it("a broken threshold rolls back even while samples are short", function()
    local s, events = sim.simulate("playbooks/canary.lua", "spec/fixtures/scenarios/lowtraffic-broken.lua")
    assert.equals("rolled_back", s.outcome)
    assert.equals("gate:error_rate", s.reason)
    assert.near(300, s.at, 1)
    local gate = first(events, "gate")
    assert.truthy(gate.samples < gate.min_samples)
  end)

  it("a critical alert fires while the metric source is down", function()
    local s = sim.simulate("playbooks/canary.lua", "spec/fixtures/scenarios/alert-during-outage.lua")
    assert.equals("rolled_back", s.outcome)
    assert.equals("trigger:critical_alert", s.reason)
    assert.truthy(s.at >= 20 * 60 + 5 and s.at <= 20 * 60 + 30, "at " .. s.at)
  end)

  it("relative thresholds can follow the live baseline", function()
    local dir = require("rollout.fs").mkdtemp("sc")
    local p = dir .. "/both.lua"
    local f = io.open(p, "w")
    f:write([[return { seed = 23, traffic = { rps = 400 },
      baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" }, changes = { { at = "16m", error_rate = 0.012 } } },
      canary = { error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" }, changes = { { at = "16m", error_rate = 0.012 } } } }]])
    f:close()
    local set = { "--set", "stages[3].thresholds.error_rate=2x" }
    local snap = sim.simulate("playbooks/canary.lua", p, set)
    assert.equals("gate:error_rate", snap.reason, "2 x the captured 0.2 %")
    set[#set + 1] = "--set"
    set[#set + 1] = "policy.relative_to=live"
    local live = sim.simulate("playbooks/canary.lua", p, set)
    require("rollout.fs").rmtree(dir)
    assert.equals("promoted", live.outcome, "the canary is no worse than the baseline beside it")
  end)
end)
-- Resume after a crash: replay() of journals; fast-haproxy.lua killed with SIGKILL at many
-- points and resumed, on the virtual clock with the simulated router (the whole matrix, in
-- about a second) and in real time against a real HAProxy (three of the points, and HAProxy
-- restarting meanwhile); the lock; SIGTERM and a double SIGINT; a plain run refusing an
-- unfinished journal.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local journal = require("rollout.journal")
local live = require("spec.support.live_rollout")

local function ev(kind, ts, fields)
  local e = fields or {}
  e.event, e.ts, e.t = kind, ts, ts - 100
  return e
end

describe("journal.replay", function()
  it("continues a confirmed stage with the time held, pauses excluded", function()
    local r = assert(journal.replay({
      ev("rollout_started", 100, { service = "s" }),
      ev("baseline_captured", 100.5, { baseline = { error_rate = 0.01 } }),
      ev("stage_entered", 101, { index = 1 }),
      ev("weight_requested", 101, { baseline = 90, canary = 10 }),
      ev("weight_confirmed", 102, { baseline = 90, canary = 10 }),
      ev("evaluation", 110),
      ev("gate", 112, { result = "pass" }),
      ev("stage_entered", 112, { index = 2 }),
      ev("weight_requested", 112, { baseline = 50, canary = 50 }),
      ev("weight_confirmed", 113, { baseline = 50, canary = 50 }),
      ev("paused", 115, { reason = "manual" }),
      ev("resumed", 125),
      ev("evaluation", 130),
    }))
    assert.equals("stage", r.phase)
    assert.equals(2, r.stage_index)
    assert.is_true(r.stage_confirmed)
    assert.near(130 - 113 - 10, r.held, 1e-9, "held since the confirmation, minus the pause")
    assert.same({ baseline = 50, canary = 50 }, r.last_confirmed)
    assert.same({ error_rate = 0.01 }, r.baseline_snapshot)
    assert.near(30, r.elapsed, 1e-9)
    assert.is_nil(r.paused)
  end)

  it("re-enters a stage whose weight was requested but never confirmed", function()
    local r = assert(journal.replay({
      ev("rollout_started", 100), ev("stage_entered", 101, { index = 1 }),
      ev("weight_confirmed", 102, { baseline = 90, canary = 10 }),
      ev("stage_entered", 110, { index = 2 }), ev("weight_requested", 110, { baseline = 50, canary = 50 }),
    }))
    assert.equals(2, r.stage_index)
    assert.is_false(r.stage_confirmed)
    assert.same({ baseline = 90, canary = 10 }, r.last_confirmed)
  end)

  it("keeps an operator's pause, but not a signal's", function()
    local base = { ev("rollout_started", 100), ev("stage_entered", 101, { index = 1 }),
      ev("weight_confirmed", 102, { baseline = 90, canary = 10 }) }
    local a = { table.unpack(base) }
    a[#a + 1] = ev("paused", 105, { reason = "manual" })
    a[#a + 1] = ev("evaluation", 109)
    local r = assert(journal.replay(a))
    assert.equals("manual", r.paused)
    assert.near(3, r.held, 1e-9, "the pause stops the hold's clock")
    local b = { table.unpack(base) }
    b[#b + 1] = ev("paused", 105, { reason = "signal:TERM" })
    b[#b + 1] = ev("outcome", 105, { outcome = "paused", reason = "signal:TERM" })
    r = assert(journal.replay(b))
    assert.is_nil(r.paused)
  end)

  it("finishes a rollback or a promotion that was under way", function()
    local r = assert(journal.replay({ ev("rollout_started", 100), ev("stage_entered", 101, { index = 1 }),
      ev("weight_confirmed", 102, { baseline = 90, canary = 10 }),
      ev("rollback_started", 103, { reason = "trigger:errors" }) }))
    assert.equals("rolling_back", r.phase)
    assert.equals("trigger:errors", r.reason)
    r = assert(journal.replay({ ev("rollout_started", 100), ev("stage_entered", 101, { index = 3 }),
      ev("weight_confirmed", 102, { baseline = 0, canary = 100 }), ev("promoting", 110) }))
    assert.equals("promoting", r.phase)
  end)

  it("says finished or start when there is nothing to continue", function()
    local _, why = journal.replay({ ev("rollout_started", 100), ev("outcome", 101, { outcome = "promoted" }) })
    assert.equals("finished: promoted", why)
    _, why = journal.replay({ ev("rollout_started", 100), ev("preflight_done", 101) })
    assert.equals("start", why)
    _, why = journal.replay({ ev("rollout_started", 100), ev("abandoned", 101) })
    assert.equals("finished: abandoned", why)
  end)
end)

-- ---- real runs ------------------------------------------------------------------------------

local function stage_hold(name) return ({ ten = 1.5, half = 1.5, full = 1.0 })[name] end

-- The kill points of the matrix (spec/fixtures/resume/crash.lua knows them by name).
local PROMOTE_POINTS = {
  { name = "right after rollout_started" }, { name = "at the first weight request" },
  { name = "10 % confirmed" }, { name = "mid-hold of ten", phase = "stage" }, { name = "the gate of ten" },
  { name = "50 % requested" }, { name = "mid-hold of half" }, { name = "100 % confirmed" },
  { name = "while promoting", phase = "promoting" },
}
local ROLLBACK_POINTS = {
  { name = "none", none = true }, { name = "10 % confirmed" }, { name = "trigger pending" },
  { name = "rollback started" }, { name = "during the rollback hook", phase = "rolling_back" },
}

-- A run of crash.lua on the virtual clock, SIGKILLed at each of `kills` in turn and resumed,
-- then run to its end. Returns the exit code `rollout run` would give, every journal
-- event, and the router's weights at the end.
local CRASH = "spec/fixtures/resume/crash.lua"
local function virtual_crash(mode, kills)
  local dir = assert(fs.mkdtemp("resume-virtual"))
  finally(function() fs.rmtree(dir) end)
  local function run(how, point)
    return assert(proc.run({ argv = { rollout.exe, "--clock=virtual", CRASH, dir, mode, how, point }, timeout = 60 }))
  end
  for i, point in ipairs(kills) do
    local r = run(i == 1 and "start" or "resume", point.name)
    assert.equals("KILL", r.signal, "killed at " .. point.name .. ": " .. r.stdout .. r.stderr)
  end
  local r = run(#kills == 0 and "start" or "resume")
  assert.equals(0, r.code, r.stderr)
  local code = json.decode(r.stdout).code
  return code, live.events({ journal_dir = dir .. "/journal" }), json.decode(assert(fs.read(dir .. "/weights.json")))
end

describe("kill -9 and resume on the virtual clock", function()
  for _, point in ipairs(PROMOTE_POINTS) do
    it("killed " .. point.name .. ": same outcome, same confirmed weights", function()
      local code, events, weights = virtual_crash("promote", { point })
      assert.equals(0, code)
      assert.equals("promoted", live.outcome(events).outcome)
      assert.same({ 10, 50, 100 }, live.confirmed(events))
      assert.same({ baseline = 0, canary = 100 }, weights)
      -- one start, then one continuation (or a start over, when no stage had begun)
      assert.equals(2, live.count(events, "rollout_started") + live.count(events, "rollout_resumed"))
      if point.phase then
        assert.truthy(live.find(events, "rollout_resumed", function(e) return e.phase == point.phase end),
          "resumed in phase " .. point.phase)
      end
    end)
  end

  it("an uninterrupted run promotes through 10, 50, 100", function()
    local code, events, weights = virtual_crash("promote", {})
    assert.equals(0, code)
    assert.same({ 10, 50, 100 }, live.confirmed(events))
    assert.same({ baseline = 0, canary = 100 }, weights)
    assert.equals(0, live.count(events, "rollout_resumed"))
  end)

  it("killed twice (mid-ten, then mid-half): still the same run", function()
    local code, events = virtual_crash("promote", { PROMOTE_POINTS[4], PROMOTE_POINTS[7] })
    assert.equals(0, code)
    assert.equals("promoted", live.outcome(events).outcome)
    assert.same({ 10, 50, 100 }, live.confirmed(events))
    assert.equals(2, live.count(events, "rollout_resumed"))
  end)

  it("resumes the hold with the time that was left", function()
    local code, events = virtual_crash("promote", { PROMOTE_POINTS[4] })
    assert.equals(0, code)
    local resumed = live.find(events, "stage_resumed")
    assert.truthy(resumed, "the stage was resumed, not entered again")
    assert.equals("ten", resumed.stage)
    assert.truthy(resumed.held > 0.8 and resumed.held < 1.5, "held before the crash: " .. resumed.held)
    -- the first gate evaluation after the resume comes when the rest of the hold is over
    local gate
    for _, e in ipairs(events) do
      if e.event == "gate" and e.ts > resumed.ts then gate = e; break end
    end
    local left = stage_hold("ten") - resumed.held
    assert.near(left, gate.ts - resumed.ts, 0.26, "time left " .. left) -- one evaluation interval
    assert.equals(1, live.count(events, "stage_entered", function(e) return e.stage == "ten" end))
  end)

  for _, point in ipairs(ROLLBACK_POINTS) do
    it("a failing canary killed at " .. point.name .. ": rolled back by the trigger, 10 then 0", function()
      local code, events, weights = virtual_crash("rollback", point.none and {} or { point })
      assert.equals(1, code)
      local out = live.outcome(events)
      assert.equals("rolled_back", out.outcome)
      assert.equals("trigger:errors", out.reason)
      assert.same({ 10, 0 }, live.confirmed(events))
      assert.same({ baseline = 100, canary = 0 }, weights)
      if point.phase then
        assert.truthy(live.find(events, "rollout_resumed", function(e) return e.phase == point.phase end),
          "resumed in phase " .. point.phase)
      end
    end)
  end
end)

-- Run to completion, killing with SIGKILL when kill_when(events) first holds; then resume
-- (again and again if `kills` has more points). Returns the final exit code and the events.
local function crash_and_resume(env, kills)
  local run = live.start(env)
  for _, point in ipairs(kills) do
    live.wait_for(env, point.when, 30, point.name)
    run:kill("KILL")
    assert.is_nil((run:wait(10)), "killed by SIGKILL")
    run = live.start(env, { "--resume" })
  end
  local code = run:wait(60)
  return code, live.events(env), run
end

local function after(kind, pred)
  return function(evs) return live.find(evs, kind, pred) end
end

describe("kill -9 and resume against a real HAProxy", function()
  local env, baseline_events
  setup(function()
    env = live.env()
    -- promotion takes a moment (its hook), so a crash can land in the middle of it
    env.playbook = live.variant(env, "slow-promote", "pb.hooks = { on_promote = function() rollout.sleep(0.8) end }")
    -- the uninterrupted run: what every crashed one must come back to
    local run = live.start(env)
    assert.equals(0, run:wait(60), run:stderr())
    baseline_events = live.events(env)
  end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    require("rollout.fs").rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("an uninterrupted run promotes through 10, 50, 100", function()
    assert.same({ 10, 50, 100 }, live.confirmed(baseline_events))
    assert.equals("promoted", live.outcome(baseline_events).outcome)
  end)

  -- two points in real time (the rest of the matrix runs on the virtual clock above)
  local POINTS = {
    { name = "mid-hold of ten", phase = "stage", when = function(evs)
      local c = live.find(evs, "weight_confirmed", function(e) return e.canary == 10 end)
      local last = evs[#evs]
      return c and last.ts and last.ts - c.ts > 0.8
    end },
    { name = "while promoting", phase = "promoting",
      when = after("hook_started", function(e) return e.hook == "on_promote" end) },
  }

  for _, point in ipairs(POINTS) do
    it("killed " .. point.name .. ": same outcome, same confirmed weights", function()
      local code, events, run = crash_and_resume(env, { point })
      assert.equals(0, code, run:stderr())
      assert.equals("promoted", live.outcome(events).outcome)
      assert.same({ 10, 50, 100 }, live.confirmed(events))
      assert.same({ baseline = 0, canary = 100 }, (live.router(env):get_weights()))
      assert.truthy(live.find(events, "rollout_resumed", function(e) return e.phase == point.phase end),
        "resumed in phase " .. point.phase)
    end)
  end

  it("re-applies the last confirmed weights when HAProxy restarted meanwhile", function()
    local run = live.start(env)
    live.wait_for(env, function(evs) return live.count(evs, "evaluation") >= 9 end, 30, "mid-half")
    run:kill("KILL")
    run:wait(10)
    env.hx.kill()
    env.hx.start() -- the runtime weights are gone: 100 / 0 from the config
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
    local again = live.start(env, { "--resume" })
    assert.equals(0, again:wait(60), again:stderr())
    local events = live.events(env)
    local back = live.last(events, "weights_read_back")
    assert.same({ baseline = 100, canary = 0 }, back.got)
    assert.same({ baseline = 50, canary = 50 }, back.want)
    assert.truthy(live.find(events, "weights_reapplied"))
    assert.same({ 10, 50, 100 }, live.confirmed(events))
    assert.equals("promoted", live.outcome(events).outcome)
  end)
end)

describe("one engine per rollout, signals, unfinished journals", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    require("rollout.fs").rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("a second engine refuses, naming the holder's pid; the lock dies with the holder", function()
    local a = live.start(env)
    live.wait_for(env, after("rollout_started"), 30)
    local b = live.start(env, { "--resume" })
    assert.equals(2, b:wait(30))
    assert.matches("another engine %(pid " .. a.pid .. "%)", b:stderr())
    a:kill("KILL")
    a:wait(10)
    local c = live.start(env, { "--resume" })
    assert.equals(0, c:wait(60), c:stderr())
  end)

  it("SIGTERM pauses, persists and exits 3 with traffic where the journal says; a plain run refuses; --resume finishes", function()
    local run = live.start(env, { "--on-interrupt=pause" })
    live.wait_for(env, after("weight_confirmed", function(e) return e.canary == 50 end), 30)
    run:kill("TERM")
    assert.equals(3, run:wait(30))
    local events = live.events(env)
    local out = live.outcome(events)
    assert.equals("paused", out.outcome)
    assert.equals("signal:TERM", out.reason)
    local last = live.last(events, "weight_confirmed")
    assert.same({ baseline = last.baseline, canary = last.canary }, (live.router(env):get_weights()))
    assert.equals(50, last.canary)
    local plain = live.start(env)
    assert.equals(2, plain:wait(30))
    assert.matches("unfinished rollout of fast", plain:stderr())
    assert.matches("%-%-resume", plain:stderr())
    local resumed = live.start(env, { "--resume" })
    assert.equals(0, resumed:wait(60), resumed:stderr())
    assert.same({ 10, 50, 100 }, live.confirmed(live.events(env)))
  end)

  it("a second SIGINT within a few seconds rolls back", function()
    local run = live.start(env, { "--on-interrupt=pause" })
    live.wait_for(env, after("weight_confirmed", function(e) return e.canary == 10 end), 30)
    run:kill("INT")
    live.wait_for(env, after("paused", function(e) return e.reason == "signal:INT" end), 10)
    rollout.sleep(0.2)
    run:kill("INT")
    assert.equals(1, run:wait(30))
    local events = live.events(env)
    local out = live.outcome(events)
    assert.equals("rolled_back", out.outcome)
    assert.equals("manual", out.reason)
    assert.equals(1, live.count(events, "outcome"), "one run, one outcome")
    assert.same({ 10, 0 }, live.confirmed(events))
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)

  it("--fresh starts over and marks the old journal abandoned", function()
    local run = live.start(env)
    live.wait_for(env, after("weight_confirmed"), 30)
    run:kill("KILL")
    run:wait(10)
    local fresh = live.start(env, { "--fresh" })
    assert.equals(0, fresh:wait(60), fresh:stderr())
    local files = journal.list(env.journal_dir)
    assert.equals(2, #files)
    local old = assert(journal.read(files[1]))
    assert.equals("abandoned", old[#old].event)
    assert.is_true(journal.summary(old).finished)
    local nothing = live.start(env, { "--resume" })
    assert.equals(2, nothing:wait(30))
    assert.matches("nothing to resume", nothing:stderr())
  end)
end)

-- An interrupted run leaves no canary unwatched (issue 15, item 6): `rollout run` against a
-- real HAProxy, stopped by SIGTERM / SIGINT. --on-interrupt=rollback (the default) reaches
-- the safe state (canary 0 %, confirmed by read-back) before it exits 1; --on-interrupt=pause
-- keeps the weight for a supervisor that resumes. Either way one run writes one outcome.
local live = require("spec.support.live_rollout")

local function after(kind, pred)
  return function(evs) return live.find(evs, kind, pred) end
end

local function at(weight)
  return after("weight_confirmed", function(e) return e.canary == weight end)
end

describe("--on-interrupt against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    require("rollout.fs").rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("by default the first SIGTERM rolls back to canary 0 % (confirmed) and exits 1", function()
    local run = live.start(env)
    live.wait_for(env, at(50), 30, "50 % confirmed")
    run:kill("TERM")
    assert.equals(1, run:wait(30), run:stderr())
    local events = live.events(env)
    local out = live.outcome(events)
    assert.equals("rolled_back", out.outcome)
    assert.equals("manual", out.reason)
    assert.equals(1, live.count(events, "outcome"))
    assert.same({ 10, 50, 0 }, live.confirmed(events))
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
    local started = live.last(events, "rollback_started")
    assert.equals("interrupted: signal:TERM", started.detail)
    assert.matches("rolling back to the baseline", run:stderr())
    -- nothing is left to resume: the rollback was the end
    local again = live.start(env, { "--resume" })
    assert.equals(2, again:wait(30))
    assert.matches("nothing to resume", again:stderr())
  end)

  it("by default a double Ctrl-C rolls back once and writes one outcome", function()
    local run = live.start(env)
    live.wait_for(env, at(10), 30, "10 % confirmed")
    run:kill("INT")
    rollout.sleep(0.05)
    run:kill("INT")
    assert.equals(1, run:wait(30), run:stderr())
    local events = live.events(env)
    assert.equals(1, live.count(events, "outcome"), "one run, one outcome")
    assert.equals("rolled_back", live.outcome(events).outcome)
    assert.same({ 10, 0 }, live.confirmed(events))
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)

  it("--on-interrupt=pause: SIGTERM pauses with the canary's weight kept, exit 3; --resume finishes", function()
    local run = live.start(env, { "--on-interrupt=pause" })
    live.wait_for(env, at(10), 30, "10 % confirmed")
    run:kill("TERM")
    assert.equals(3, run:wait(30), run:stderr())
    local events = live.events(env)
    assert.equals("paused", live.outcome(events).outcome)
    assert.equals(1, live.count(events, "outcome"))
    assert.same({ baseline = 90, canary = 10 }, (live.router(env):get_weights()))
    local resumed = live.start(env, { "--resume", "--on-interrupt=pause" })
    assert.equals(0, resumed:wait(60), resumed:stderr())
    assert.same({ 10, 50, 100 }, live.confirmed(live.events(env)))
  end)

  it("--on-interrupt=pause: a second Ctrl-C within 5 s rolls back, and the run writes one outcome", function()
    local run = live.start(env, { "--on-interrupt=pause" })
    live.wait_for(env, at(10), 30, "10 % confirmed")
    run:kill("INT")
    live.wait_for(env, after("paused", function(e) return e.reason == "signal:INT" end), 10, "paused")
    rollout.sleep(0.3)
    run:kill("INT")
    assert.equals(1, run:wait(30), run:stderr())
    local events = live.events(env)
    assert.equals(1, live.count(events, "outcome"), "one run, one outcome")
    local out = live.outcome(events)
    assert.equals("rolled_back", out.outcome)
    assert.equals("manual", out.reason)
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)

  it("SIGTERM during the deploy hook rolls back too (not `failed`), exit 1; with pause it pauses, exit 3", function()
    local pb = live.variant(env, "slow-deploy", "pb.hooks = { deploy = function() rollout.sleep(5) end }")
    for _, mode in ipairs({ "rollback", "pause" }) do
      require("rollout.fs").rmtree(env.journal_dir)
      local run = live.start(env, { "--on-interrupt=" .. mode }, pb)
      live.wait_for(env, after("hook_started", function(e) return e.hook == "deploy" end), 30, "deploy started")
      run:kill("TERM")
      local events
      if mode == "rollback" then
        assert.equals(1, run:wait(30), run:stderr())
        events = live.events(env)
        assert.equals("rolled_back", live.outcome(events).outcome)
        assert.equals("manual", live.outcome(events).reason)
      else
        assert.equals(3, run:wait(30), run:stderr())
        events = live.events(env)
        assert.equals("paused", live.outcome(events).outcome)
        assert.equals("signal:TERM", live.outcome(events).reason)
      end
      assert.equals(1, live.count(events, "outcome"))
      assert.truthy(live.find(events, "hook_cancelled", function(e) return e.hook == "deploy" end))
      assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
    end
  end)

  it("--on-interrupt takes rollback or pause, nothing else (exit 2, nothing done)", function()
    local run = live.start(env, { "--on-interrupt=ignore" })
    assert.equals(2, run:wait(30))
    assert.matches("%-%-on%-interrupt: expected rollback or pause", run:stderr())
    assert.same({}, live.events(env))
  end)
end)

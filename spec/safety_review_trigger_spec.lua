-- A trigger whose check keeps failing is not a disarmed trigger (review defect 10), against a
-- real HAProxy: its errors are printed without --verbose, and after
-- engine.TRIGGER_ERROR_LIMIT (3) failed evaluations in a row it counts as no data: no gate
-- passes (the hold is extended, then the stage is inconclusive), so nothing is promoted on it.
local live = require("spec.support.live_rollout")
local fs = require("rollout.fs")

describe("a trigger check that always errors, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function() fs.rmtree(env.journal_dir); assert(live.router(env):set_weights{ baseline = 100, canary = 0 }) end)

  it("is printed, blocks the first gate (extended, then inconclusive), and nothing is promoted", function()
    local pb = live.variant(env, "trigerr", [[
pb.triggers = { mine = { check = function(s) return s.canary.nonexistent > 0.1 end, duration = "0.5s" } }
pb.stages[1].max_hold = "2.5s"
pb.policy = { detect = 10, inconclusive = "rollback" }
]])
    local run = live.start(env, {}, pb)
    local code = run:wait(60)
    local evs = live.events(env)
    assert.equals(1, code, run:stdout() .. run:stderr())
    local out = live.outcome(evs)
    assert.equals("rolled_back", out.outcome)
    assert.equals("inconclusive:trigger_error:mine", out.reason)
    assert.equals(0, live.count(evs, "weight_confirmed", function(e) return e.canary == 50 end), "never went on to 50 %")
    local gate = live.find(evs, "gate")
    assert.equals("extend", gate.result)
    assert.matches("trigger_error:mine", gate.why)
    assert.truthy(gate.trigger_errors.mine >= 3)
    assert.is_truthy(live.find(evs, "hold_extended"))
    -- on the terminal, without --verbose: the first error and the one that makes it no data
    local stdout = run:stdout()
    assert.matches("trigger mine: its check FAILED: .*attempt to compare", stdout)
    assert.matches("trigger mine: its check FAILED %(3 in a row%).*no gate passes while it fails", stdout)
  end)

  it("a check that recovers counts again: the rollout promotes", function()
    local pb = live.variant(env, "trigflaky", [[
local n = 0
pb.triggers = { mine = { check = function(s)
  n = n + 1
  if n <= 2 then error("warming up") end
  return (s.canary.error_rate or 0) > 0.5
end, duration = "0.5s" } }
]])
    local run = live.start(env, {}, pb)
    assert.equals(0, run:wait(60), run:stdout() .. run:stderr())
    local evs = live.events(env)
    assert.equals(2, live.count(evs, "trigger_error"))
    assert.equals("promoted", live.outcome(live.events(env)).outcome)
  end)
end)

describe("an engine error while a hook runs, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)

  it("stops the hook and journals hook_cancelled (why engine_error)", function()
    fs.rmtree(env.journal_dir); assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local pb = live.variant(env, "orph", [[
pb.hooks = {
  after_stage = function(ctx)
    if ctx.stage_index == 1 then ctx.engine.sources[1].signals = function() error("source exploded") end end
  end,
  before_stage = function(ctx)
    if ctx.stage_index == 2 then
      proc.run({ argv = { "sh", "-c", "sleep 2; touch ]] .. env.dir .. [[/hook-acted" }, timeout = 30 })
    end
  end,
}]])
    local run = live.start(env, {}, pb)
    assert.equals(3, run:wait(60), run:stderr())
    local evs = live.events(env)
    assert.is_truthy(live.find(evs, "engine_error"))
    local c = assert(live.find(evs, "hook_cancelled"), "hook_started without hook_cancelled")
    assert.equals("before_stage", c.hook)
    assert.equals("engine_error", c.why)
    rollout.sleep(2.5)
    assert.is_nil(fs.stat(env.dir .. "/hook-acted"), "the hook's command went on after the engine ended")
  end)
end)

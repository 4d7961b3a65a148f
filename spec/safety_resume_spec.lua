-- --resume runs the playbook the rollout started with, and finalize needs 100 % confirmed
-- (issue 15, item 3). Real `rollout run`s against a real HAProxy: paused by SIGTERM
-- (--on-interrupt=pause), then resumed with the same, fewer or other --set values.
local live = require("spec.support.live_rollout")
local fs = require("rollout.fs")

local ONLY = 'stages=[{"name":"Only","weight":100,"hold":"1s"}]'

local function at(weight)
  return function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == weight end) end
end

-- A run with `extra` --set values, stopped by SIGTERM once 50 % is confirmed (exit 3, paused).
local function paused_at_half(env, extra, pb)
  local argv = { "--on-interrupt=pause" }
  for _, v in ipairs(extra or {}) do argv[#argv + 1] = v end
  local run = live.start(env, argv, pb)
  live.wait_for(env, at(50), 30, "50 % confirmed")
  run:kill("TERM")
  assert.equals(3, run:wait(30), run:stderr())
  assert.same({ baseline = 50, canary = 50 }, (live.router(env):get_weights()))
end

describe("--resume and the resolved playbook, against a real HAProxy", function()
  local env, pb
  setup(function()
    env = live.env()
    pb = live.variant(env, "finalizing", 'pb.hooks = { finalize = { "touch", "' .. env.dir .. '/finalized" } }')
  end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    fs.rmtree(env.journal_dir)
    fs.rmtree(env.dir .. "/finalized")
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("records the resolved playbook: its hash, each key's hash, the --set values and the playbook", function()
    paused_at_half(env, { "--set", "stages[2].hold=3s" }, pb)
    local started = live.find(live.events(env), "engine_started")
    assert.matches("^fnv1a64:%x+$", started.playbook_hash)
    assert.is_string(started.playbook_keys.stages)
    assert.equals(pb, started.playbook)
    assert.equals("stages[2].hold=3s", started.sets[#started.sets])
  end)

  it("a resume with other --set values is refused, exit 2, naming what changed; nothing is touched", function()
    paused_at_half(env, {}, pb)
    local before = #live.events(env)
    local run = live.start(env, { "--resume", "--set", ONLY }, pb)
    assert.equals(2, run:wait(30), run:stderr())
    local err = run:stderr()
    assert.matches("refusing to resume: the playbook resolves differently", err)
    assert.matches("changed: stages\n", err)
    assert.matches("recorded fnv1a64:%x+, now fnv1a64:%x+", err)
    assert.matches("%-%-accept%-changed%-playbook", err)
    assert.equals(before, #live.events(env), "nothing journaled")
    assert.is_nil(fs.stat(env.dir .. "/finalized"), "finalize never ran")
    assert.same({ baseline = 50, canary = 50 }, (live.router(env):get_weights()))
  end)

  it("a resume without the first run's --set values reuses them (the hold stays what it was)", function()
    paused_at_half(env, { "--set", "stages[2].hold=3s" }, pb)
    local run = live.start(env, { "--resume" }, pb)
    assert.equals(0, run:wait(60), run:stderr())
    local events = live.events(env)
    local resumed = live.find(events, "stage_resumed")
    assert.equals(3, resumed.hold, "the recorded --set stages[2].hold=3s is applied again")
    local starts = {}
    for _, e in ipairs(events) do if e.event == "engine_started" then starts[#starts + 1] = e end end
    assert.equals(2, #starts)
    assert.equals(starts[1].playbook_hash, starts[2].playbook_hash)
    assert.same({ 10, 50, 100 }, live.confirmed(events))
    assert.truthy(fs.stat(env.dir .. "/finalized"), "finalize ran after 100 % was confirmed")
  end)

  it("--accept-changed-playbook continues, journaled; finalize still waits for 100 % confirmed", function()
    paused_at_half(env, {}, pb)
    local run = live.start(env, { "--resume", "--set", ONLY, "--accept-changed-playbook" }, pb)
    local refused = live.wait_for(env, function(evs) return live.find(evs, "promotion_refused") end, 30, "promotion_refused")
    assert.matches("canary 50%%", refused.why)
    local changed = assert(live.find(live.events(env), "playbook_changed"))
    assert.same({ "stages" }, changed.keys)
    assert.is_nil(fs.stat(env.dir .. "/finalized"), "no finalize at 50 %")
    assert.same({ baseline = 50, canary = 50 }, (live.router(env):get_weights()))
    live.wait_socket(env)
    assert.is_true(live.ctl(env, "abort").ok)
    assert.equals(1, run:wait(30), run:stderr())
    assert.is_nil(fs.stat(env.dir .. "/finalized"))
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)
end)

describe("finalize needs the router to confirm 100 %, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)

  it("HAProxy at 50 % after the last gate: promotion refused and paused, finalize not run; promote --full finishes", function()
    -- behind the engine's back: the last stage's after_stage hook sets HAProxy to 50/50
    local pb = live.variant(env, "drift-at-promotion", [[
pb.hooks = {
  after_stage = function(ctx)
    if ctx.stage_index == 3 then assert(ctx.engine.router:set_weights({ baseline = 50, canary = 50 })) end
  end,
  finalize = { "touch", "]] .. env.dir .. [[/finalized" },
}]])
    local run = live.start(env, {}, pb)
    local refused = live.wait_for(env, function(evs) return live.find(evs, "promotion_refused") end, 30, "promotion_refused")
    assert.matches("serves baseline 50%% / canary 50%%", refused.why)
    assert.is_nil(live.find(live.events(env), "promoting"))
    assert.is_nil(fs.stat(env.dir .. "/finalized"), "no finalize while HAProxy serves 50 %")
    live.wait_socket(env)
    assert.is_true(live.ctl(env, "promote --full").ok)
    assert.equals(0, run:wait(30), run:stderr())
    assert.truthy(fs.stat(env.dir .. "/finalized"))
    assert.same({ baseline = 0, canary = 100 }, (live.router(env):get_weights()))
    assert.equals("promoted", live.outcome(live.events(env)).outcome)
  end)
end)

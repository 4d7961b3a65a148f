-- A resume never changes what the rollout was (review defects 1 and 8), against a real
-- HAProxy: an observe-only rollout killed with SIGKILL and resumed without --observe (as a
-- supervisor would) stays observe-only and never moves traffic; --supervised does not take an
-- observe-only "promoted" for a real promotion; a playbook whose only change is a file-level
-- local that a trigger's check reads is a changed playbook (refused, exit 2).
local live = require("spec.support.live_rollout")
local fs = require("rollout.fs")

describe("resume keeps an observe-only rollout observe-only, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function() fs.rmtree(env.journal_dir) end)

  it("--observe, kill -9, --resume without --observe: HAProxy stays where it was", function()
    assert(live.router(env):set_weights{ baseline = 80, canary = 20 })
    local run = live.start(env, { "--observe" })
    live.wait_for(env, function(evs) return live.find(evs, "would_set_weights", function(e) return e.canary == 50 end) end,
      30, "the observe run's second stage")
    local started = live.find(live.events(env), "engine_started")
    assert.is_true(started.observe, "engine_started records observe")
    run:kill("KILL"); run:wait(10)
    local r2 = live.start(env, { "--resume", "--on-interrupt=pause" })
    local code = r2:wait(60)
    assert.matches("observe%-only rollout: resuming it observe%-only", r2:stderr())
    local w = live.router(env):get_weights()
    assert.same({ 80, 20 }, { w.baseline, w.canary }, "HAProxy keeps the split the observe run saw")
    local evs = live.events(env)
    assert.equals(0, live.count(evs, "weight_requested"))
    assert.equals(0, live.count(evs, "weight_confirmed"))
    assert.equals(0, live.count(evs, "playbook_changed"))
    local out = live.outcome(evs)
    assert.is_true(out.observe, "the resumed outcome is observe-only")
    assert.equals(0, code, r2:stderr())
    assert.is_true(live.last(evs, "engine_started").observe, "the resume records observe too")
  end)

  it("--supervised after an observe-only run that ended starts the real rollout, not 'already ended'", function()
    assert(live.router(env):set_weights{ baseline = 80, canary = 20 })
    local run = live.start(env, { "--observe" })
    assert.equals(0, run:wait(60), run:stderr())
    assert.equals("promoted", live.outcome(live.events(env)).outcome)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local r2 = live.start(env, { "--supervised", "--on-interrupt=pause" })
    live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == 10 end) end,
      30, "the real rollout's first stage")
    r2:kill("KILL"); r2:wait(10)
    assert.is_nil(r2:stderr():find("already ended", 1, true), r2:stderr())
  end)

  it("--supervised resumes an unfinished observe-only rollout observe-only", function()
    assert(live.router(env):set_weights{ baseline = 80, canary = 20 })
    local run = live.start(env, { "--observe" })
    live.wait_for(env, function(evs) return live.find(evs, "would_set_weights", function(e) return e.canary == 50 end) end,
      30, "the observe run's second stage")
    run:kill("KILL"); run:wait(10)
    local r2 = live.start(env, { "--supervised", "--on-interrupt=pause" })
    assert.equals(0, r2:wait(60), r2:stderr())
    local w = live.router(env):get_weights()
    assert.same({ 80, 20 }, { w.baseline, w.canary })
    assert.equals(0, live.count(live.events(env), "weight_confirmed"))
  end)

  it("a real rollout resumed with --observe is a changed playbook (refused, exit 2)", function()
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local run = live.start(env, { "--on-interrupt=pause" })
    live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == 10 end) end,
      30, "10 %")
    run:kill("TERM"); assert.equals(3, run:wait(30))
    local r2 = live.start(env, { "--resume", "--observe" })
    assert.equals(2, r2:wait(30))
    assert.matches("env%.observe", r2:stderr())
  end)
end)

describe("the playbook fingerprint covers file-level locals, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function() fs.rmtree(env.journal_dir); assert(live.router(env):set_weights{ baseline = 100, canary = 0 }) end)

  it("a resume after only `local LIMIT` changed is refused, exit 2, nothing touched", function()
    local p = env.dir .. "/up.lua"
    local body = 'local LIMIT = 0.2\nlocal pb = include("' .. live.PLAYBOOK .. '")\n'
      .. 'pb.triggers = { custom = { check = function(s) return (s.canary.error_rate or 0) > LIMIT end, duration = "0.5s" } }\n'
      .. 'return pb\n'
    assert(fs.write_atomic(p, body))
    local run = live.start(env, { "--on-interrupt=pause" }, p)
    live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == 10 end) end,
      30, "10 %")
    run:kill("TERM"); assert.equals(3, run:wait(30))
    local before = #live.events(env)
    assert(fs.write_atomic(p, (body:gsub("LIMIT = 0.2", "LIMIT = 1e9"))))
    local r2 = live.start(env, { "--resume" }, p)
    assert.equals(2, r2:wait(30), r2:stderr())
    assert.matches("refusing to resume", r2:stderr())
    assert.matches("triggers", r2:stderr())
    assert.equals(before, #live.events(env), "nothing journaled")
    local w = live.router(env):get_weights()
    assert.equals(10, w.canary)
  end)
end)

describe("observe-only checks see a read-only router, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)

  it("a trigger check and a pre-flight check that call set_weights are refused; HAProxy keeps 80/20", function()
    fs.rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 80, canary = 20 })
    local pb = live.variant(env, "sneaky", [[
pb.preflight = { { name = "sneaky", run = function(ctx)
  local ok, err = ctx.engine.router:set_weights({ baseline = 0, canary = 100 })
  if ok then return true, "moved traffic" end
  return "skip", tostring(err)
end } }
pb.triggers = { sneaky = { duration = "0.5s", check = function(s, engine)
  local ok, err = engine.router:set_weights({ baseline = 0, canary = 100 })
  assert(engine.router:get_weights(), "reads still work")
  if ok then error("set_weights worked") end
  return false, tostring(err)
end } }
]])
    local run = live.start(env, { "--observe" }, pb)
    assert.equals(0, run:wait(60), run:stdout() .. run:stderr())
    local w = live.router(env):get_weights()
    assert.same({ 80, 20 }, { w.baseline, w.canary })
    local evs = live.events(env)
    local pf = assert(live.find(evs, "preflight_check", function(e) return e.check == "sneaky" end))
    assert.equals("skip", pf.status)
    assert.matches("observe%-only: the router is read%-only", pf.detail)
    assert.equals(0, live.count(evs, "trigger_error"))
  end)
end)

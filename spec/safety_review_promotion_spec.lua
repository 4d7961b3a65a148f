-- The baseline is removed only while the canary serves everyone (review defects 4-7),
-- against a real HAProxy: playbooks/finalize.lua needs outcome `promoted`, a read-back of
-- canary 100 % and the journal's lock; the engine reads back 100 % right before `finalize`
-- and blue-green `scale_down`; once one of them started (the point of no return) it runs to
-- its end and an interrupt pauses with the canary kept at 100 %; a blue-green switch-back
-- removes the header override.
local live = require("spec.support.live_rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local http = require("rollout.http")

local function at(w)
  return function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == w end) end
end

local function weights(env)
  local w = assert(live.router(env):get_weights())
  return { w.baseline, w.canary }
end

local function finalize(env, pb, extra)
  local argv = { rollout.exe, "playbooks/finalize.lua", pb, "--journal", env.journal_dir }
  for _, a in ipairs(env.sets) do argv[#argv + 1] = a end
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  return assert(proc.run({ argv = argv, timeout = 60 }))
end

local function bg(env, name, extra)
  return live.variant(env, name, [[
pb.stages = nil
pb.strategy = "blue_green"
pb.header_override = { name = "canary", value = "true" }
pb.router.override_acl = "]] .. env.hx.acl .. [["
pb.router.override_header = "canary"
]] .. extra)
end

describe("playbooks/finalize.lua needs a promotion the router confirms, against a real HAProxy", function()
  local env, pb
  setup(function()
    env = live.env()
    pb = live.variant(env, "drain", 'pb.params = { drain_baseline_command = { "touch", "' .. env.dir .. '/drained" } }')
  end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    fs.rmtree(env.journal_dir); os.remove(env.dir .. "/drained")
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("refuses a rollout paused at 100 % (no outcome promoted) after HAProxy went back to the baseline", function()
    local run = live.start(env, { "--on-interrupt=pause" }, live.variant(env, "long", 'pb.stages[3].hold = "60s"'))
    live.wait_for(env, at(100), 30, "100 %")
    run:kill("TERM"); assert.equals(3, run:wait(30))
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 }) -- HAProxy reloaded meanwhile
    local r = finalize(env, pb)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("finalize refused: .*outcome is `paused`", r.stderr)
    assert.is_nil(fs.stat(env.dir .. "/drained"), "the baseline was not drained")
  end)

  it("refuses beside a live engine (the journal's lock), whatever its journal says", function()
    local run = live.start(env, {}, live.variant(env, "long2", 'pb.stages[3].hold = "60s"'))
    live.wait_for(env, at(100), 30, "100 %")
    local r = finalize(env, pb)
    run:kill("KILL"); run:wait(10)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("an engine %(pid %d+%) is running this rollout", r.stderr)
    assert.is_nil(fs.stat(env.dir .. "/drained"))
  end)

  it("after a promotion: refused while HAProxy serves the baseline, run once it reads back canary 100 %", function()
    local run = live.start(env, {})
    assert.equals(0, run:wait(60), run:stderr())
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local r = finalize(env, pb)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("the router serves baseline 100%% / canary 0%%", r.stderr)
    assert.is_nil(fs.stat(env.dir .. "/drained"))
    assert(live.router(env):set_weights{ baseline = 0, canary = 100 })
    r = finalize(env, pb)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.truthy(fs.stat(env.dir .. "/drained"))
  end)
end)

describe("the engine reads back 100 % right before removing the baseline, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    fs.rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("blue-green: HAProxy back on blue during scale_down_delay: blue is not retired; promotion_refused, paused", function()
    local pb = bg(env, "bgd", [[
pb.blue_green = { pre_promotion = { hold = "1s" }, post_promotion = { hold = "1s" }, scale_down_delay = "1.5s" }
pb.hooks = { scale_down = { "touch", "]] .. env.dir .. [[/blue-retired" } }
]])
    local run = live.start(env, {}, pb)
    live.wait_for(env, function(evs) return live.find(evs, "scale_down_waiting") end, 60, "the delay")
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 }) -- HAProxy reloaded with its config weights
    local refused = live.wait_for(env, function(evs) return live.find(evs, "promotion_refused") end, 30, "refused")
    assert.equals("scale_down", refused.hook)
    assert.matches("baseline 100%% / canary 0%%", refused.why)
    live.wait_for(env, function(evs) return live.find(evs, "paused") end, 10, "paused")
    assert.is_nil(fs.stat(env.dir .. "/blue-retired"), "blue retired while it served 100 %")
    assert.is_true(live.ctl(env, "abort blue-still-serving").ok)
    assert.equals(1, run:wait(30), run:stderr())
    assert.is_nil(fs.stat(env.dir .. "/blue-retired"))
    assert.equals(0, live.count(live.events(env), "hook_started", function(e) return e.hook == "scale_down" end))
  end)

  it("canary: HAProxy back on the baseline between on_promote and finalize: finalize is not run", function()
    local pb = live.variant(env, "onp", [[
pb.hooks = {
  on_promote = function(ctx) assert(ctx.engine.router:set_weights({ baseline = 100, canary = 0 })) end,
  finalize = { "touch", "]] .. env.dir .. [[/finalized" },
}]])
    local run = live.start(env, {}, pb)
    local refused = live.wait_for(env, function(evs) return live.find(evs, "promotion_refused") end, 30, "refused")
    assert.equals("finalize", refused.hook)
    assert.is_nil(fs.stat(env.dir .. "/finalized"))
    live.wait_socket(env)
    assert.is_true(live.ctl(env, "abort").ok)
    assert.equals(1, run:wait(30), run:stderr())
    assert.is_nil(fs.stat(env.dir .. "/finalized"))
  end)
end)

describe("past the point of no return an interrupt pauses at 100 %, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    fs.rmtree(env.journal_dir)
    for _, f in ipairs({ "started", "done" }) do os.remove(env.dir .. "/" .. f) end
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  local SLOW = '{ "sh", "-c", "touch %s/started; sleep 1.5; touch %s/done" }'

  it("SIGTERM (default rollback) during finalize: finalize finishes, canary stays 100 %, paused, exit 3", function()
    local pb = live.variant(env, "slowfin", "pb.hooks = { finalize = " .. SLOW:format(env.dir, env.dir) .. " }")
    local run = live.start(env, {}, pb)
    live.wait_for(env, function(evs) return live.find(evs, "hook_started", function(e) return e.hook == "finalize" end) end,
      60, "finalize")
    rollout.sleep(0.3)
    run:kill("TERM")
    assert.equals(3, run:wait(30), run:stderr())
    assert.truthy(fs.stat(env.dir .. "/done"), "finalize ran to its end")
    assert.same({ 0, 100 }, weights(env), "users stay on the canary")
    local evs = live.events(env)
    assert.is_truthy(live.find(evs, "hook_finished", function(e) return e.hook == "finalize" end))
    assert.equals(0, live.count(evs, "hook_cancelled"))
    assert.equals(0, live.count(evs, "rollback_started"))
    local nr = assert(live.find(evs, "no_return_interrupt"))
    assert.equals("finalize", nr.hook)
    assert.equals("rollback", nr.action)
    local out = live.outcome(evs)
    assert.equals("paused", out.outcome)
    assert.matches("^point_of_no_return", out.reason)
    assert.equals(1, live.count(evs, "outcome"))
    assert.matches("the point of no return", run:stderr())
  end)

  it("ctl abort during finalize: finalize finishes, paused at 100 %; resume promotes", function()
    local pb = live.variant(env, "slowfin2", "pb.hooks = { finalize = " .. SLOW:format(env.dir, env.dir) .. " }")
    local run = live.start(env, {}, pb)
    live.wait_for(env, function(evs) return live.find(evs, "hook_started", function(e) return e.hook == "finalize" end) end,
      60, "finalize")
    live.wait_socket(env)
    assert.is_true(live.ctl(env, "abort too-late").ok)
    live.wait_for(env, function(evs) return live.find(evs, "paused", function(e) return tostring(e.reason):match("point_of_no_return") end) end,
      30, "the pause")
    assert.truthy(fs.stat(env.dir .. "/done"))
    assert.same({ 0, 100 }, weights(env))
    assert.is_true(live.ctl(env, "resume").ok)
    assert.equals(0, run:wait(30), run:stderr())
    assert.equals("promoted", live.outcome(live.events(env)).outcome)
  end)

  it("blue-green: SIGTERM during scale_down: it finishes, green keeps 100 %, paused, exit 3", function()
    local pb = bg(env, "bgs", [[
pb.blue_green = { pre_promotion = { hold = "1s" }, post_promotion = { hold = "1s" }, scale_down_delay = "0.5s" }
pb.hooks = { scale_down = ]] .. SLOW:format(env.dir, env.dir) .. [[ }
]])
    local run = live.start(env, {}, pb)
    live.wait_for(env, function(evs) return live.find(evs, "hook_started", function(e) return e.hook == "scale_down" end) end,
      60, "scale_down")
    rollout.sleep(0.3)
    run:kill("TERM")
    assert.equals(3, run:wait(30), run:stderr())
    assert.truthy(fs.stat(env.dir .. "/done"), "scale_down ran to its end")
    assert.same({ 0, 100 }, weights(env), "users stay on green")
    local evs = live.events(env)
    assert.equals(0, live.count(evs, "rollback_started"))
    assert.equals("scale_down", live.find(evs, "no_return_interrupt").hook)
    assert.equals("paused", live.outcome(evs).outcome)
  end)
end)

describe("a blue-green switch-back removes the header override, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)

  it("ctl abort in the active phase: blue 100 %, and `canary: true` requests reach blue", function()
    fs.rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local pb = bg(env, "bgsb", [[
pb.blue_green = { pre_promotion = { hold = "1s" }, post_promotion = { hold = "30s" }, scale_down_delay = "1s" }
]])
    local run = live.start(env, {}, pb)
    live.wait_for(env, at(100), 60, "the switch")
    live.wait_socket(env)
    assert.is_true(live.ctl(env, "abort green-bad").ok)
    assert.equals(1, run:wait(30), run:stderr())
    assert.same({ 100, 0 }, weights(env))
    local r = require("rollout.routers").new{ type = "haproxy", socket = env.hx.socket, backend = "be",
      baseline = "baseline", canary = "canary", override_acl = env.hx.acl, override_header = "canary" }
    assert.equals(false, r:_read_override(), "no ACL entry left")
    for _ = 1, 5 do
      local res = assert(http.request{ method = "GET", url = env.hx.url .. "/", headers = { canary = "true" }, timeout = 2 })
      assert.matches("v1", res.body, "a `canary: true` request reached green")
    end
    local removed = live.find(live.events(env), "header_override", function(e) return e.removed and e.ok end)
    assert.is_truthy(removed, "the removal is journaled")
  end)
end)

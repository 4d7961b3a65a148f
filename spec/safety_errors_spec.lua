-- Unexpected errors do not escape the engine (issue 15, item 7): a router or a source that
-- raises, injected into real `rollout run`s against a real HAProxy (a before_stage hook swaps
-- the method at stage 2). The run must end `failed` with the error journaled, traffic sent
-- to the baseline where the router still answers, the lock released, the socket removed.
local live = require("spec.support.live_rollout")
local journal = require("rollout.journal")
local fs = require("rollout.fs")

-- A variant whose before_stage hook, at stage 2, replaces `target` with one that raises.
local function raising(env, name, target)
  return live.variant(env, name, [[
pb.hooks = { before_stage = function(ctx)
  if ctx.stage_index ~= 2 then return end
  local e = ctx.engine
  ]] .. target .. "\n" .. [[
end }]])
end

local function ended_cleanly(env, run, code)
  assert.equals(code or 3, run:wait(60), run:stderr())
  local events = live.events(env)
  local out = live.outcome(events)
  assert.equals("failed", out.outcome)
  assert.equals("error:internal", out.reason)
  assert.equals(1, live.count(events, "outcome"))
  local lock = assert(journal.lock(env.journal_dir), "the lock is released")
  lock:release()
  assert.is_nil(fs.stat(env.socket), "the control socket is removed")
  assert.falsy(run:stderr():find("stack traceback", 1, true), "no raw traceback on stderr")
  return events
end

describe("an error inside the engine, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    fs.rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("a router that raises on a shift: outcome failed, the error journaled, traffic back to the baseline", function()
    local pb = raising(env, "router-raises", [[
  local r, set = e.router, e.router.set_weights
  r.set_weights = function(self, w, o)
    if w.canary == 50 then error("router exploded at 50") end
    return set(self, w, o)
  end]])
    local events = ended_cleanly(env, live.start(env, {}, pb))
    local err = assert(live.find(events, "engine_error"))
    assert.matches("router exploded at 50", err.error)
    assert.matches("stack traceback", err.traceback)
    assert.same({ 10, 0 }, live.confirmed(events))
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)

  it("a source that raises: outcome failed, the error journaled, traffic back to the baseline", function()
    local pb = raising(env, "source-raises", [[
  e.sources[1].signals = function() error("source exploded") end]])
    local events = ended_cleanly(env, live.start(env, {}, pb))
    assert.matches("source exploded", live.find(events, "engine_error").error)
    assert.same({ 10, 50, 0 }, live.confirmed(events), "the first evaluation at 50 % raised")
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)

  it("a router that raises on every call: failed, and the journal's last confirmed weights are HAProxy's", function()
    local pb = raising(env, "router-dead", [[
  e.router.set_weights = function() error("router gone") end]])
    local events = ended_cleanly(env, live.start(env, {}, pb))
    assert.truthy(live.find(events, "weight_failed", function(e) return e.canary == 0 end),
      "the attempt to reach the baseline is journaled")
    local last = live.last(events, "weight_confirmed")
    assert.same({ baseline = last.baseline, canary = last.canary }, (live.router(env):get_weights()))
    assert.equals(10, last.canary)
  end)
end)

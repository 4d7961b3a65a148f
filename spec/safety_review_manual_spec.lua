-- A manual rollback is a rollback wherever it is run from (review defects 2 and 3), against
-- a real HAProxy: `rollout playbooks/rollback.lua` from another directory (no journal found
-- there) goes through the live engine's control socket, and against an observe-only engine it
-- stops the engine and rolls back itself, journaled.
local live = require("spec.support.live_rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")

local SCRIPT = fs.realpath("playbooks/rollback.lua")

local function manual(env, pb, extra, cwd)
  local argv = { rollout.exe, SCRIPT, pb, "--run-dir", env.run_dir }
  for _, a in ipairs(env.sets) do argv[#argv + 1] = a end
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  return assert(proc.run({ argv = argv, timeout = 60, cwd = cwd or env.dir }))
end

describe("rollout playbooks/rollback.lua finds the live engine, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function() fs.rmtree(env.journal_dir) end)

  it("from another directory, without --journal: through the engine, which rolls back and does not promote", function()
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local pb = live.variant(env, "slow", 'pb.stages[1].hold = "4s"')
    local run = live.start(env, {}, pb)
    live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == 10 end) end,
      30, "10 %")
    live.wait_socket(env)
    local other = assert(fs.mkdtemp("elsewhere"))
    local r = manual(env, pb, { "--reason", "incident 7" }, other)
    fs.rmtree(other)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("asking it to roll back %(abort%)", r.stdout)
    assert.equals(1, run:wait(30), run:stderr())
    local evs = live.events(env)
    assert.equals("rolled_back", live.outcome(evs).outcome)
    assert.is_truthy(live.find(evs, "command", function(e) return e.command == "abort" and e.arg == "incident 7" end))
    assert.equals(1, live.count(evs, "outcome"))
    local w = live.router(env):get_weights()
    assert.same({ 100, 0 }, { w.baseline, w.canary })
  end)

  it("against an observe-only engine: stops it and rolls back itself, journaled; HAProxy at 100/0", function()
    assert(live.router(env):set_weights{ baseline = 80, canary = 20 })
    local pb = live.variant(env, "obs", 'pb.stages = { { name = "long", weight = 10, hold = "30s" } }')
    local run = live.start(env, { "--observe" }, pb)
    live.wait_for(env, function(evs) return live.find(evs, "observed_weights") end, 30, "observed")
    live.wait_socket(env)
    local r = manual(env, pb, { "--journal", env.journal_dir })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("observe%-only", r.stdout)
    assert.equals(1, run:wait(30), run:stderr())
    local w = live.router(env):get_weights()
    assert.same({ 100, 0 }, { w.baseline, w.canary }, "an operator who asks for a rollback gets one")
    local evs = live.events(env)
    local mr = assert(live.find(evs, "manual_rollback"))
    assert.is_true(mr.observe_engine)
    assert.is_truthy(live.find(evs, "weight_confirmed", function(e) return e.canary == 0 end))
    local out = live.outcome(evs)
    assert.equals("rolled_back", out.outcome)
    assert.equals("manual", out.reason)
    assert.is_nil(out.observe)
  end)
end)

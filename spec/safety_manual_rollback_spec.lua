-- A manual rollback is never undone (issue 15, item 4): `rollout playbooks/rollback.lua`
-- against a real HAProxy, while an engine runs the rollout (the rollback goes through its
-- control socket), after the engine was killed with SIGKILL (the script journals itself, and
-- --resume does not re-apply canary weights), and after the script itself died between its
-- record and the cutover (--resume finishes the rollback).
local live = require("spec.support.live_rollout")
local journal = require("rollout.journal")
local fs = require("rollout.fs")
local proc = require("rollout.proc")

local SCRIPT = fs.realpath("playbooks/rollback.lua")

local function at(weight)
  return function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == weight end) end
end

-- rollout playbooks/rollback.lua fast-haproxy.lua --journal .. --run-dir .. --set ... [extra]
local function manual(env, extra)
  local argv = { rollout.exe, SCRIPT, live.PLAYBOOK, "--journal", env.journal_dir, "--run-dir", env.run_dir }
  for _, a in ipairs(env.sets) do argv[#argv + 1] = a end
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  return assert(proc.run({ argv = argv, timeout = 60, cwd = env.dir }))
end

-- Canary weights confirmed or requested after the first event for which `from` holds.
local function canary_after(events, from)
  local seen, out = false, {}
  for _, e in ipairs(events) do
    if not seen and from(e) then seen = true
    elseif seen and (e.event == "weight_confirmed" or e.event == "weight_requested") and (e.canary or 0) > 0 then
      out[#out + 1] = e.event .. " " .. tostring(e.canary)
    end
  end
  assert(seen, "the marker event is in the journal")
  return out
end

describe("rollout playbooks/rollback.lua against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    fs.rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("while an engine runs: it goes through the engine (abort), which rolls back and does not move on", function()
    local run = live.start(env)
    live.wait_for(env, at(10), 30, "10 % confirmed")
    live.wait_socket(env)
    local r = manual(env, { "--reason", "incident 42" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("asking it to roll back %(abort%)", r.stdout)
    assert.equals(1, run:wait(30), run:stderr())
    local events = live.events(env)
    local abort = assert(live.find(events, "command", function(e) return e.command == "abort" end))
    assert.equals("incident 42", abort.arg)
    assert.same({}, canary_after(events, function(e) return e.event == "command" and e.command == "abort" end),
      "no canary weight after the abort")
    assert.equals(1, live.count(events, "outcome"))
    assert.equals("rolled_back", live.outcome(events).outcome)
    assert.equals("manual", live.outcome(events).reason)
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)

  it("an engine whose socket does not answer: refused, exit 3, nothing journaled", function()
    local run = live.start(env, { "--no-control" })
    live.wait_for(env, at(10), 30, "10 % confirmed")
    local r = manual(env)
    run:kill("KILL")
    run:wait(10)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("does not answer", r.stderr)
    assert.matches("nothing was touched", r.stderr)
    assert.equals(0, live.count(live.events(env), "manual_rollback"))
  end)

  it("after kill -9 of the engine: it journals itself, and --resume re-applies no canary weight", function()
    local run = live.start(env)
    live.wait_for(env, at(50), 30, "50 % confirmed")
    run:kill("KILL")
    assert.is_nil((run:wait(10)))
    local r = manual(env)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
    local events = live.events(env)
    local rec = assert(live.find(events, "manual_rollback"))
    assert.is_string(rec.who)
    local out = live.outcome(events)
    assert.equals("rolled_back", out.outcome)
    assert.equals("manual", out.reason)
    local resumed = live.start(env, { "--resume" })
    assert.equals(2, resumed:wait(30), resumed:stderr())
    assert.matches("nothing to resume", resumed:stderr())
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
    assert.same({}, canary_after(live.events(env), function(e) return e.event == "manual_rollback" end))
  end)

  it("the script died after its record, before the cutover: --resume finishes the rollback", function()
    local run = live.start(env)
    live.wait_for(env, at(50), 30, "50 % confirmed")
    run:kill("KILL")
    run:wait(10)
    -- what the script writes before it touches the router, then SIGKILL
    local path = journal.list(env.journal_dir)[1]
    local w = assert(journal.open(path))
    assert(w:append({ event = "manual_rollback", ts = rollout.time(), who = "ops", reason = "incident", pid = 1 }))
    w:close()
    assert.same({ baseline = 50, canary = 50 }, (live.router(env):get_weights()))
    local resumed = live.start(env, { "--resume" })
    assert.equals(1, resumed:wait(30), resumed:stderr())
    local events = live.events(env)
    assert.truthy(live.find(events, "rollout_resumed", function(e) return e.phase == "rolling_back" end))
    assert.same({}, canary_after(events, function(e) return e.event == "manual_rollback" end))
    local out = live.outcome(events)
    assert.equals("rolled_back", out.outcome)
    assert.equals("manual", out.reason)
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)
end)

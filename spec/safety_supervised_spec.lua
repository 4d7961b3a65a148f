-- A supervised engine comes back and resumes (issue 15, item 6): contrib/systemd's unit
-- restarts a dead engine (Restart=on-failure) with `rollout run --supervised
-- --on-interrupt=pause`. systemd itself is not PID 1 here, so the spec checks the unit's keys
-- (spec/contrib_systemd_spec.lua runs systemd-analyze verify on it) and then plays the
-- supervisor: the same command line again after SIGKILL and after SIGTERM, against a real
-- HAProxy.
local live = require("spec.support.live_rollout")
local journal = require("rollout.journal")
local fs = require("rollout.fs")

local SUPERVISED = { "--supervised", "--on-interrupt=pause" }

local function at(weight)
  return function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == weight end) end
end

-- [Service] keys of the unit: key -> value (the last one wins, as in systemd)
local function service_keys(text)
  local keys, section = {}, nil
  for line in text:gmatch("[^\n]+") do
    local s = line:match("^%[(.+)%]$")
    if s then section = s
    elseif section == "Service" and not line:match("^#") then
      local k, v = line:match("^(%w+)=(.*)$")
      if k then keys[k] = v end
    end
  end
  return keys
end

describe("contrib/systemd/rollout@.service", function()
  it("has Restart=on-failure, runs --supervised --on-interrupt=pause, and does not restart on exit 1, 2, 3 or 4", function()
    local keys = service_keys(assert(fs.read("contrib/systemd/rollout@.service")))
    assert.equals("on-failure", keys.Restart)
    assert.matches("%-%-supervised", keys.ExecStart)
    assert.matches("%-%-on%-interrupt=pause", keys.ExecStart)
    local prevent = {}
    for code in (keys.RestartPreventExitStatus or ""):gmatch("%d+") do prevent[tonumber(code)] = true end
    for _, code in ipairs({ 1, 2, 3, 4 }) do
      assert.is_true(prevent[code] or false, "exit " .. code .. " is an answer, not a crash: no restart")
    end
  end)
end)

describe("rollout run --supervised against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)
  before_each(function()
    fs.rmtree(env.journal_dir)
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
  end)

  it("starts, dies (SIGKILL), is started again and resumes to the end; once ended, a start does nothing", function()
    local run = live.start(env, SUPERVISED)
    live.wait_for(env, at(50), 30, "50 % confirmed")
    run:kill("KILL")
    assert.is_nil((run:wait(10)))
    local again = live.start(env, SUPERVISED) -- what Restart=on-failure does
    assert.equals(0, again:wait(60), again:stderr())
    local events = live.events(env)
    assert.equals(1, live.count(events, "rollout_resumed"))
    assert.same({ 10, 50, 100 }, live.confirmed(events))
    assert.equals(1, #journal.list(env.journal_dir))
    local third = live.start(env, SUPERVISED)
    assert.equals(2, third:wait(30))
    assert.matches("already ended %(promoted%)", third:stderr())
    assert.equals(1, #journal.list(env.journal_dir), "no new rollout")
    assert.equals(#events, #live.events(env), "nothing journaled")
    assert.same({ baseline = 0, canary = 100 }, (live.router(env):get_weights()))
  end)

  it("systemctl stop (SIGTERM) pauses with the weight kept; the next start resumes", function()
    local run = live.start(env, SUPERVISED)
    live.wait_for(env, at(10), 30, "10 % confirmed")
    run:kill("TERM")
    assert.equals(3, run:wait(30), run:stderr())
    assert.same({ baseline = 90, canary = 10 }, (live.router(env):get_weights()))
    local again = live.start(env, SUPERVISED)
    assert.equals(0, again:wait(60), again:stderr())
    assert.same({ 10, 50, 100 }, live.confirmed(live.events(env)))
  end)

  it("after an ended rollout, a new canary version starts a new rollout", function()
    local first = live.start(env, SUPERVISED)
    assert.equals(0, first:wait(60), first:stderr())
    local v3 = live.variant(env, "canary-v3", 'pb.versions.canary.version = "v3"')
    assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
    local second = live.start(env, SUPERVISED, v3)
    assert.equals(0, second:wait(60), second:stderr())
    assert.equals(2, #journal.list(env.journal_dir), "a second rollout, in its own journal")
    assert.equals(0, live.count(live.events(env), "rollout_resumed"))
  end)

  it("--supervised excludes --resume and --fresh (exit 2)", function()
    local run = live.start(env, { "--supervised", "--resume" })
    assert.equals(2, run:wait(30))
    assert.matches("no %-%-resume or %-%-fresh with it", run:stderr())
  end)
end)

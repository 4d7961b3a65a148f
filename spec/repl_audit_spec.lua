-- The control socket's REPL is audited (a real run of fast-haproxy.lua against a real
-- HAProxy): every chunk of Lua is journaled (control_eval) with the peer's user from
-- SO_PEERCRED, not $USER; os.exit, os.execute and io are not there; router:set_weights typed
-- in the REPL goes through the engine (command + weight_requested/confirmed with who), so the
-- journal and `status` agree with HAProxy.
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local live = require("spec.support.live_rollout")

local function ctl(env, ...)
  -- $USER claims someone else: the journal must name the peer's real user
  return assert(proc.run({ argv = { rollout.exe, "ctl", env.socket, ... }, timeout = 60,
    env = { USER = "mallory", SUDO_USER = "mallory", LOGNAME = "mallory" } }))
end

local function me()
  local uid = fs.getuid()
  for line in (fs.read("/etc/passwd") or ""):gmatch("[^\n]+") do
    local name, id = line:match("^([^:]*):[^:]*:(%d+):")
    if tonumber(id) == uid then return name end
  end
  return "uid " .. uid
end

describe("the control socket's REPL, audited", function()
  local env, run
  setup(function()
    env = live.env()
    env.playbook = live.variant(env, "long", 'pb.stages[1].hold = "10m"')
    run = live.start(env)
    live.wait_for(env, function(evs)
      return live.find(evs, "weight_confirmed", function(e) return e.stage == "ten" end)
    end, 30, "stage ten")
    live.wait_socket(env)
  end)
  teardown(function() if env then env.stop() end end)

  it("journals every chunk with the peer's user, and has no os.exit", function()
    local r = ctl(env, "os.exit(0)")
    assert.equals(1, r.code, r.stdout)
    assert.matches("attempt to call a nil value %(field 'exit'%)", r.stderr)
    for _, line in ipairs({ "os.execute", "io", "debug", "_G" }) do
      local x = ctl(env, "--json", line)
      assert.equals(0, x.code, x.stderr)
      assert.equals("null", (x.stdout:gsub("%s+$", "")), line .. " is reachable from the REPL")
    end
    assert.is_true(run.child:running(), "the engine is still running")
    assert.equals("stage", live.ctl(env, "status").value.state)
    local evals = {}
    for _, ev in ipairs(live.events(env)) do if ev.event == "control_eval" then evals[#evals + 1] = ev end end
    assert.equals(5, #evals)
    assert.equals("os.exit(0)", evals[1].code)
    assert.matches("^" .. me():gsub("%p", "%%%0") .. " %(pid %d+%) via control socket$", evals[1].who)
    assert.is_nil(evals[1].who:find("mallory", 1, true))
    -- `status` is a command, not Lua: not journaled as control_eval
    ctl(env, "status")
    local n = 0
    for _, ev in ipairs(live.events(env)) do if ev.event == "control_eval" then n = n + 1 end end
    assert.equals(5, n)
  end)

  it("router:set_weights from the REPL goes through the engine: journaled, confirmed, in status", function()
    local r = ctl(env, "router:set_weights{baseline = 60, canary = 40}")
    assert.equals(0, r.code, r.stderr)
    assert.same({ baseline = 60, canary = 40 }, (live.router(env):get_weights()))
    local st = live.ctl(env, "status").value
    assert.equals(40, st.weights.canary)
    local evs = live.events(env)
    local cmd = live.last(evs, "command")
    assert.equals("set_weight", cmd.command)
    assert.equals(40, cmd.arg)
    assert.matches("via control socket", cmd.who)
    assert.equals(40, live.last(evs, "weight_requested").canary)
    assert.matches("via control socket", live.last(evs, "weight_requested").by)
    assert.equals(40, live.last(evs, "weight_confirmed").canary)
    -- through the engine object too, and the engine's router cannot be swapped
    r = ctl(env, "engine.router:set_weights{baseline = 80}")
    assert.equals(0, r.code, r.stderr)
    assert.same({ baseline = 80, canary = 20 }, (live.router(env):get_weights()))
    assert.equals(20, live.ctl(env, "status").value.weights.canary)
    r = ctl(env, "engine.router = {}")
    assert.equals(1, r.code)
    assert.matches("cannot be replaced", r.stderr)
    -- reads pass through
    r = ctl(env, "--json", "router:get_weights()")
    assert.equals(0, r.code, r.stderr)
    assert.matches('"canary":20', r.stdout)
  end)

  it("ends with a rollback the operator asked for", function()
    assert.equals(0, ctl(env, "abort", "done").code)
    assert.equals(1, run:wait(30))
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end)
end)

-- The playbook sandbox (rollout.sandbox) and the load budget (rollout.playbook.load):
-- a playbook's code has no blocking escape hatch (os.execute, io.popen, io.open, os.exit),
-- loading it has no side effects and a bounded cost, and a playbook that exceeds its budget
-- is a configuration error (exit 2) for check, run and submit; a fleet agent (real etcd)
-- rejects it and keeps its lease.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local playbook = require("rollout.playbook")
local fleet = require("rollout.fleet")
local H = require("spec.fixtures.fleet.harness")

local dir
local function write(name, text)
  local p = dir .. "/" .. name
  assert(fs.write_atomic(p, text))
  return p
end

local function cli(argv, timeout)
  local full = { rollout.exe }
  for _, a in ipairs(argv) do full[#full + 1] = a end
  local t0 = rollout.now()
  local r = assert(proc.run({ argv = full, timeout = timeout or 30 }))
  r.elapsed = rollout.now() - t0
  return r
end

local GOOD = [[
return {
  name = "sbx", versions = { baseline = { version = "v1" }, canary = { version = "v2" } },
  stages = { { weight = 50, hold = "1s" }, { weight = 100, hold = "1s" } },
  hooks = { before_stage = function(ctx) return PROBE(ctx) end },
}
]]

describe("the playbook environment", function()
  setup(function() dir = assert(fs.mkdtemp("sandbox-spec")) end)
  teardown(function() fs.rmtree(dir) end)

  it("has no blocking escape hatches; hooks get the asynchronous host API", function()
    local p = write("env.lua", [[
      local seen = {}
      function PROBE()
        return {
          execute = os.execute, popen = io and io.popen, io = io, exit = os.exit, remove = os.remove,
          debug = debug, dofile = dofile, loadfile = loadfile, G = _G, print = print, collectgarbage = collectgarbage,
          require_io = select(2, pcall(require, "io")), require_os = select(2, pcall(require, "rollout.cli")),
          proc_run = type(proc.run), http_request = type(http.request), fs_read = type(fs.read),
          json = json.encode({ 1 }), time = type(os.time()), getenv = type(os.getenv("HOME")),
          bytecode = select(2, load(string.dump(function() end))),
          string_mt = getmetatable(""),
        }
      end
    ]] .. GOOD)
    local pb, errs = playbook.load(p)
    assert.is_nil(errs)
    local got = pb.hooks.before_stage({})
    for _, k in ipairs({ "execute", "popen", "io", "exit", "remove", "debug", "dofile", "loadfile", "G", "string_mt", "print",
      "collectgarbage" }) do
      assert.is_nil(got[k], k .. " must not be reachable from a playbook")
    end
    assert.matches("not available in a playbook", got.require_io)
    assert.matches("not available in a playbook", got.require_os)
    assert.matches("attempt to load a binary chunk", got.bytecode)
    assert.equals("function", got.proc_run)
    assert.equals("function", got.http_request)
    assert.equals("function", got.fs_read)
    assert.equals("[1]", got.json)
    assert.equals("number", got.time)
    assert.equals("string", got.getenv)
  end)

  it("cannot change the host's libraries or modules", function()
    local p = write("patch.lua", [[
      string.format = function() return "patched" end
      local ok, err = pcall(function() json.encode = nil end)
      PATCH = { ok = ok, err = err }
      function PROBE() return PATCH end
    ]] .. GOOD)
    local pb = assert(playbook.load(p))
    local got = pb.hooks.before_stage({})
    assert.is_false(got.ok)
    assert.matches("json is read%-only", got.err)
    assert.equals("1", string.format("%d", 1))
    assert.equals("function", type(require("rollout.json").encode))
  end)

  it("loading has no side effects: commands, writes, HTTP and tasks are refused while it loads", function()
    local marker = dir .. "/pwned"
    for _, body in ipairs({
      string.format("proc.run({ argv = { 'touch', %q } })", marker),
      string.format("fs.write_atomic(%q, 'x')", marker),
      string.format("fs.mkdir(%q)", marker),
      "http.request({ url = 'http://127.0.0.1:9/' })",
      string.format("rollout.spawn(function() proc.run({ argv = { 'touch', %q } }) end)", marker),
      "rollout.sleep(1)",
      "rollout.clock('virtual')",
      string.format("local f = io.open(%q, 'w')", marker),
      "os.execute('true')",
    }) do
      local p = write("side.lua", body .. "\nreturn {}\n")
      local r = cli({ "check", "--offline", p })
      assert.equals(2, r.code, body .. ": " .. r.stderr)
      assert.matches("side%.lua:1: ", r.stderr, body)
      assert.is_nil(fs.stat(marker), body .. " had a side effect")
    end
    local r = cli({ "check", "--offline", write("msg.lua", "proc.run({ argv = { 'true' } })\nreturn {}\n") })
    assert.matches("proc%.run: not available while a playbook loads", r.stderr)
  end)

  it("a playbook that loops, or grows without bound, at load time is a configuration error (exit 2)", function()
    local loop = write("loop.lua", "local n = 0\nwhile true do n = n + 1 end\n")
    for _, argv in ipairs({
      { "check", "--offline", loop },
      { "check", loop },
      { "run", loop, "--journal", dir .. "/journal", "--no-control" },
      { "submit", loop, "--etcd", "http://127.0.0.1:9" },
      { "simulate", loop, "--scenario", "spec/fixtures/fleet/scenarios/healthy.lua" },
    }) do
      local r = cli(argv)
      assert.equals(2, r.code, table.concat(argv, " ") .. ": " .. r.stderr)
      assert.matches("loop%.lua:2: budget exceeded: more than %d+ instructions", r.stderr, argv[1])
      assert.lt(r.elapsed, 10, argv[1] .. " must give up within its load budget")
    end
    local mem = write("mem.lua", "local t = {}\nfor i = 1, 1e9 do t[i] = { i } end\nreturn {}\n")
    local r = cli({ "check", "--offline", mem })
    assert.equals(2, r.code, r.stderr)
    assert.matches("budget exceeded: more than 64 MiB of memory", r.stderr)
    -- an include()d file is charged to the same budget, and named
    write("inner.lua", "while true do end\n")
    r = cli({ "check", "--offline", write("outer.lua", "return include('inner.lua')\n") })
    assert.equals(2, r.code, r.stderr)
    assert.matches("inner%.lua:1: budget exceeded", r.stderr)
  end)

  it("a playbook error inside a metamethod is a configuration error (exit 2), not a crash", function()
    local p = write("meta.lua", [[
      local st = setmetatable({}, { __index = function() error("boom in __index") end })
      return setmetatable({ name = "m", versions = { baseline = { version = "a" }, canary = { version = "b" } },
        stages = { st } }, { __pairs = function() error("boom in __pairs") end })
    ]])
    local r = cli({ "check", "--offline", p })
    assert.equals(2, r.code, r.stderr)
    assert.matches("meta%.lua:%d+: stages%[1%]%.weight: required", r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
  end)

  it("the shipped playbooks load in the sandbox", function()
    for _, p in ipairs({ "playbooks/canary.lua", "playbooks/demo.lua" }) do
      local pb, errs = playbook.load(p)
      assert.is_nil(errs, p .. ": " .. json.encode(errs or {}))
      assert.equals("function", type(pb.hooks.on_rollback), p)
    end
  end)
end)

describe("a fleet agent and a playbook that exceeds its load budget (real etcd)", function()
  local E, agent, adir
  setup(function()
    E = assert(H.etcd())
    adir = assert(fs.mkdtemp("sandbox-agent"))
  end)
  teardown(function()
    if agent then pcall(agent.stop) end
    if E then E.stop() end
    if adir then fs.rmtree(adir) end
  end)

  it("rejects it, keeps its lease, and goes on taking rollouts", function()
    local prefix = "/sbx/"
    local K = fleet.keys(prefix)
    local c = E.client()
    agent = H.agent({ name = "a1", etcd = E.url, prefix = prefix, ttl = 2, dir = adir })
    local lease = H.wait(function()
      local kvs = fleet.range(c, K.agents, {})
      return kvs and kvs[1] and kvs[1].lease
    end, 15, "the agent to join")
    -- whoever can write the prefix stores a playbook that spins only where it is loaded
    local b = assert(fleet.bundle("spec/fixtures/fleet/playbooks/canary.lua",
      { scenario = "spec/fixtures/fleet/scenarios/healthy.lua", simulated_router = true, who = "mallory" }))
    b.files["canary.lua"] = "local n = 0\nwhile true do n = n + 1 end\n"
    assert(fleet.submit(c, K, b, { id = "spin", service = "svc" }))
    local done = H.wait(function() return H.status(c, prefix, "spin").done end, 30, "the rollout to be rejected")
    assert.equals("failed", done.outcome)
    assert.equals("rejected:playbook", done.reason)
    assert.matches("budget exceeded", done.detail)
    -- the agent is unharmed: same lease, listed, and it drives the next rollout to its end
    local kvs = assert(fleet.range(c, K.agents, {}))
    assert.equals(1, #kvs)
    assert.equals(lease, kvs[1].lease, "the agent kept its lease")
    local l = H.cli("list", "--etcd", E.url, "--prefix", prefix)
    assert.equals(0, l.code, l.stderr)
    assert.matches("agents: a1 ", l.stdout)
    assert.matches("spin%s+svc%s+%-%s+failed rejected:playbo", l.stdout)
    local good = assert(fleet.bundle("spec/fixtures/fleet/playbooks/canary.lua",
      { scenario = "spec/fixtures/fleet/scenarios/healthy.lua", simulated_router = true, who = "alice" }))
    assert(fleet.submit(c, K, good, { id = "good", service = "svc" }))
    local gd = H.wait(function() return H.status(c, prefix, "good").done end, 40, "the good rollout")
    assert.equals("promoted", gd.outcome)
    kvs = assert(fleet.range(c, K.agents, {}))
    assert.equals(lease, kvs[1].lease, "still the same lease")
    -- ${env:...} in a stored --set value is read where the playbook loads: on the agent
    local envb = assert(fleet.bundle("spec/fixtures/fleet/playbooks/canary.lua", { scenario = "spec/fixtures/fleet/scenarios/healthy.lua",
      simulated_router = true, who = "alice", sets = { "params.db_url=${env:ROLLOUT_SPEC_ONLY_ON_THE_SUBMITTER}" } }))
    assert(fleet.submit(c, K, envb, { id = "envset", service = "svc" }))
    local ed = H.wait(function() return H.status(c, prefix, "envset").done end, 30, "the env rollout")
    assert.equals("rejected:playbook", ed.reason)
    assert.matches("environment variable ROLLOUT_SPEC_ONLY_ON_THE_SUBMITTER is not set", ed.detail)
    -- and it still stops on SIGTERM at once
    local t0 = rollout.now()
    agent.stop()
    assert.lt(rollout.now() - t0, 5)
  end, { timeout = 120 })
end)

describe("runaway playbook code outside hooks (real HAProxy)", function()
  local live = require("spec.support.live_rollout")
  local env
  after_each(function() if env then env.stop() end; env = nil end)

  it("a trigger check that never returns is a trigger error; the engine goes on, and no gate passes on it", function()
    env = live.env()
    env.playbook = live.variant(env, "spin-check", [[
      pb.triggers.spin = { check = function() while true do end end }
      pb.stages[1].max_hold = "4s"
      pb.policy = { detect = 10, inconclusive = "rollback" }
    ]])
    local run = live.start(env)
    local t0 = rollout.now()
    assert.equals(1, run:wait(60), run:stderr())
    local evs = live.events(env)
    local errs = live.count(evs, "trigger_error", function(e) return e.trigger == "spin" and e.error:find("budget exceeded", 1, true) end)
    assert.gt(errs, 3, "each evaluation's check ran out of its budget")
    assert.gt(live.count(evs, "evaluation"), 3)
    -- a check that keeps failing watches nothing: no data, never a pass (engine.TRIGGER_ERROR_LIMIT)
    assert.equals("inconclusive:trigger_error:spin", live.outcome(evs).reason)
    assert.lt(rollout.now() - t0, 30)
  end, { timeout = 90 })

  it("a pre-flight check that never returns fails that check (outcome aborted), bounded by its timeout", function()
    env = live.env()
    env.playbook = live.variant(env, "spin-preflight", [[
      pb.preflight = { { name = "spin", timeout = "2s", run = function() while true do end end } }
    ]])
    local run = live.start(env)
    local t0 = rollout.now()
    assert.equals(3, run:wait(60), run:stderr())
    local evs = live.events(env)
    local chk = live.find(evs, "preflight_check")
    assert.equals("fail", chk.status)
    assert.matches("budget exceeded", chk.detail)
    assert.equals("preflight:spin", live.outcome(evs).reason)
    assert.lt(rollout.now() - t0, 20)
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()), "no traffic moved")
  end, { timeout = 90 })
end)

-- One exit-code table for every operator command (rollout.exit): `list`, `submit` and
-- `ctl --etcd` exit 3 when etcd cannot be reached, 2 for no such rollout (a socket that is
-- not there, an id etcd does not hold) and for an id that exists already or is invalid; the
-- code comes from the client's reason word, and every command's help text from the table.
-- Against a real etcd (spec/fixtures/fleet/harness.lua) and real unix sockets.
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local rollout = require("rollout")
local exit = require("rollout.exit")
local servers = require("spec.support.servers")
local H = require("spec.fixtures.fleet.harness")

local PB = "spec/fixtures/fleet/playbooks/canary.lua"
local HEALTHY = "spec/fixtures/fleet/scenarios/healthy.lua"
local OPERATOR = { "ctl", "list", "submit", "watch", "attach", "agent" }

local function closed_etcd() return "http://127.0.0.1:" .. servers.free_port() end

describe("exit codes: etcd cannot be reached", function()
  it("list exits 3 (UNREACHABLE), as ctl --etcd does", function()
    local r = H.cli("list", "--etcd", closed_etcd())
    assert.equals(exit.UNREACHABLE, r.code, r.stderr)
    assert.equals(3, r.code)
    assert.matches("rollout list: ", r.stderr)
  end)

  it("submit exits 3 (UNREACHABLE)", function()
    local r = H.cli("submit", PB, "--etcd", closed_etcd(), "--scenario", HEALTHY, "--simulated-router", "--id", "x1")
    assert.equals(3, r.code, r.stderr)
    assert.matches("rollout submit: ", r.stderr)
  end)

  it("ctl --etcd exits 3 (UNREACHABLE) for status and for a command", function()
    local url = closed_etcd()
    assert.equals(3, H.cli("ctl", "--etcd", url, "x1", "status").code)
    assert.equals(3, H.cli("ctl", "--etcd", url, "x1", "pause").code)
    assert.equals(3, H.cli("watch", "--etcd", url, "x1").code)
  end)
end)

describe("exit codes: a real etcd", function()
  local E
  local prefix = "/exitcodes-" .. tostring(math.random(1, 1e9)) .. "/"
  setup(function() E = assert(H.etcd()) end)
  teardown(function() if E then E.stop() end end)

  it("no such rollout: ctl --etcd status and pause exit 2 (NOT_FOUND)", function()
    local r = H.cli("ctl", "--etcd", E.url, "--prefix", prefix, "nope", "status")
    assert.equals(exit.NOT_FOUND, r.code, r.stderr)
    assert.equals(2, r.code)
    assert.matches("no rollout 'nope'", r.stderr)
    assert.equals(2, H.cli("ctl", "--etcd", E.url, "--prefix", prefix, "nope", "pause").code)
    r = H.cli("watch", "--etcd", E.url, "--prefix", prefix, "nope")
    assert.equals(2, r.code, r.stderr)
  end)

  it("submit: stored 0, the same id again 2 (exists), an invalid id 2 (was 1), list 0", function()
    local function submit(id)
      return H.cli("submit", PB, "--etcd", E.url, "--prefix", prefix, "--scenario", HEALTHY, "--simulated-router",
        "--id", id)
    end
    local r = submit("dup")
    assert.equals(0, r.code, r.stderr)
    r = submit("dup")
    assert.equals(2, r.code, r.stderr)
    assert.matches("exists already", r.stderr)
    r = submit("bad id!")
    assert.equals(2, r.code, r.stderr)
    assert.matches("invalid rollout id", r.stderr)
    r = H.cli("list", "--etcd", E.url, "--prefix", prefix)
    assert.equals(0, r.code, r.stderr)
    assert.matches("dup", r.stdout)
  end)
end)

describe("exit codes: a control socket", function()
  local dir
  setup(function() dir = assert(fs.mkdtemp("exitcodes")) end)
  teardown(function() if dir then fs.rmtree(dir) end end)

  local function run(...) return assert(proc.run({ argv = { rollout.exe, ... }, timeout = 30 })) end

  it("no socket at the path: ctl, attach and watch exit 2 (NOT_FOUND, no such rollout)", function()
    local r = run("ctl", dir .. "/nope.sock", "status")
    assert.equals(exit.NOT_FOUND, r.code, r.stderr)
    assert.equals(2, r.code)
    r = run("attach", dir .. "/nope.sock")
    assert.equals(2, r.code, r.stderr)
    r = run("watch", dir .. "/nope.sock")
    assert.equals(2, r.code, r.stderr)
  end)

  it("a service name with no socket in the run directory exits 2", function()
    local r = assert(proc.run({ argv = { rollout.exe, "ctl", "no-such-service-" .. math.random(1, 1e9), "status" },
      env = { XDG_RUNTIME_DIR = dir }, timeout = 30 }))
    assert.equals(2, r.code, r.stderr)
  end)

  it("something at the path that does not answer: ctl and attach exit 3 (UNREACHABLE)", function()
    local stale = dir .. "/stale.sock"
    local f = assert(io.open(stale, "w")); f:write("not a socket"); f:close()
    local r = run("ctl", stale, "status")
    assert.equals(exit.UNREACHABLE, r.code, r.stderr)
    assert.equals(3, r.code)
    assert.equals(3, run("attach", stale).code)
    assert.equals(3, run("watch", stale).code)
  end)
end)

describe("exit codes: one table", function()
  it("every command's help text is made from rollout.exit, and --help prints it", function()
    local names = {}
    for _, f in ipairs(assert(fs.list("lua/rollout/cmd"))) do
      local name = f:match("^([%w_]+)%.lua$")
      if name then names[#names + 1] = name end
    end
    table.sort(names)
    for _, n in ipairs(OPERATOR) do
      assert.truthy(table.concat(names, " "):find(n, 1, true), n .. " is not among " .. table.concat(names, " "))
    end
    assert.truthy(#names >= 17, "commands found: " .. table.concat(names, " "))
    for _, name in ipairs(names) do
      local cmd = require("rollout.cmd." .. name)
      assert.is_string(cmd.exit, name)
      assert.is_true(exit.generated(cmd.exit), name .. ": M.exit is not made by rollout.exit.describe")
      local h = H.cli(name, "--help")
      local flat = h.stdout:gsub("%s+", " ")
      assert.truthy(flat:find(cmd.exit, 1, true), name .. " --help does not print " .. cmd.exit)
    end
    assert.is_false(exit.generated("0 ok, 1 etcd error, 2 usage error"))
  end)

  it("the codes are the project's: outcomes for rollouts, reasons for operator commands", function()
    assert.same({ promoted = 0, rolled_back = 1, paused = 3, aborted = 3, failed = 3 }, exit.OUTCOME)
    assert.same(exit.OUTCOME, require("rollout.engine").EXIT)
    assert.same({ 0, 1, 2, 2, 3 }, { exit.OK, exit.REFUSED, exit.USAGE, exit.NOT_FOUND, exit.UNREACHABLE })
    assert.equals(1, exit.UNMET)
    assert.equals(require("rollout.journal").EXIT_INCOMPLETE, exit.INCOMPLETE)
    assert.equals(2, exit.for_reason("not_found"))
    assert.equals(3, exit.for_reason("unreachable"))
    assert.equals(1, exit.for_reason("refused"))
    assert.equals(2, exit.for_reason("exists"))
    assert.has_error(function() exit.for_reason("no rollout 'x'") end)
    assert.equals("0 a, 2 b or c, 3 d",
      exit.describe({ { "UNREACHABLE", "d" }, { "OK", "a" }, { "USAGE", "b" }, { "NOT_FOUND", "c" } }))
    assert.has_error(function() exit.describe({ { "MAYBE", "x" } }) end)
  end)
end)

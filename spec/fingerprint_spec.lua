-- rollout.fingerprint: the resolved playbook's hash that `rollout run` journals and
-- `--resume` compares (spec/safety_resume_spec.lua runs that against HAProxy).
local fingerprint = require("rollout.fingerprint")
local playbook = require("rollout.playbook")
local fs = require("rollout.fs")

local function write(dir, name, hook_body)
  local p = dir .. "/" .. name
  assert(fs.write_atomic(p, 'local pb = include("' .. fs.realpath("spec/fixtures/playbooks/fast-haproxy.lua") .. '")\n'
    .. "pb.hooks = { finalize = function(ctx)\n  " .. hook_body .. "\nend }\nreturn pb\n"))
  return p
end

describe("rollout.fingerprint", function()
  it("is the same for the same playbook read twice or through another path, in another process too", function()
    local dir = assert(fs.mkdtemp("fp"))
    finally(function() fs.rmtree(dir) end)
    local a = fingerprint.of(assert(playbook.load(write(dir, "a.lua", 'ctx.log("x")'))))
    local b = fingerprint.of(assert(playbook.load(write(dir, "b.lua", 'ctx.log("x")'))))
    assert.equals(a.hash, b.hash)
    assert.matches("^fnv1a64:%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x$", a.hash)
    local script = dir .. "/hash.lua"
    assert(fs.write_atomic(script, 'print(require("rollout.fingerprint").of(assert(require("rollout.playbook").load(...))).hash)\n'))
    local r = assert(require("rollout.proc").run({ argv = { rollout.exe, script, dir .. "/a.lua" }, timeout = 30 }))
    assert.equals(0, r.code, r.stderr)
    assert.equals(a.hash .. "\n", r.stdout)
  end)

  it("changes with a --set value and with a hook's text, and names the top-level keys that differ", function()
    local dir = assert(fs.mkdtemp("fp"))
    finally(function() fs.rmtree(dir) end)
    local p = write(dir, "a.lua", 'ctx.log("x")')
    local a = fingerprint.of(assert(playbook.load(p)))
    local set = fingerprint.of(assert(playbook.load(p, { sets = { "stages[2].hold=3s" } })))
    assert.truthy(a.hash ~= set.hash)
    assert.same({ "stages" }, fingerprint.diff(a.keys, set.keys))
    local edited = fingerprint.of(assert(playbook.load(write(dir, "a.lua", 'ctx.log("y")'))))
    assert.truthy(a.hash ~= edited.hash, "a hook's body is part of the playbook")
    assert.same({ "hooks" }, fingerprint.diff(a.keys, edited.keys))
  end)

  it("serialises canonically: key order, integer and float spellings, cycles", function()
    local t = { b = 1, a = { 2.5, "x" } }
    t.self = t
    assert.equals('{"a"={1=2.5,2="x",},"b"=1,"self"=<cycle>,}', fingerprint.canonical(t))
    assert.equals(fingerprint.canonical({ x = 1, y = 2 }), fingerprint.canonical({ y = 2, x = 1 }))
  end)
end)

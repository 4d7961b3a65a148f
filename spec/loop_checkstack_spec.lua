-- The scheduler never pushes values on a task's stack without room for them (issue 15,
-- item 8): rollout.wake to a task whose stack cannot grow raised nothing and wrote past the
-- end of the stack (lua_xmove after an ignored lua_checkstack: an invalid write, then a
-- SEGV). Each case runs as a child process, so a crash is an exit code, not a dead runner.
local proc = require("rollout.proc")
local fs = require("rollout.fs")

local function run_script(text)
  local dir = assert(fs.mkdtemp("checkstack"))
  local p = dir .. "/s.lua"
  assert(fs.write_atomic(p, text))
  local r = assert(proc.run({ argv = { rollout.exe, p }, timeout = 60 }))
  fs.rmtree(dir)
  return r
end

describe("a task's stack that cannot grow", function()
  it("wake of a task suspended 200 frames deep with 999,900 values raises in the waker; the task stays suspended", function()
    local r = run_script([[
local core = require("rollout.core")
local function deep(n)
  if n == 0 then return select("#", core.suspend()) end
  local r = deep(n - 1) -- not a tail call: 200 frames stay on the stack
  return r
end
local t = core.spawn(function() return deep(200) end)
core.sleep(0.05)
local big = {}
for i = 1, 999900 do big[i] = i end
-- a fresh task: its own stack is nearly empty, so it can hold the 999,900 arguments
local w = core.spawn(function() return pcall(core.wake, t, table.unpack(big)) end)
print(w:wait())
print(t:state())
print(core.wake(t, "a", "b"), t:wait())
]])
    assert.equals(0, r.code, r.stderr)
    assert.equals("false\twake: the task's stack cannot take 999900 more values\nwaiting\ntrue\t2\n", r.stdout)
  end)

  it("wake with many values that fit delivers every one", function()
    local r = run_script([[
local core = require("rollout.core")
local t = core.spawn(function() local v = table.pack(core.suspend()); return v.n, v[1], v[v.n] end)
core.sleep(0.01)
local big = {}
for i = 1, 200000 do big[i] = i end
local w = core.spawn(function() return core.wake(t, table.unpack(big)) end)
print(w:wait(), t:wait())
]])
    assert.equals(0, r.code, r.stderr)
    assert.equals("true\t200000\t1\t200000\n", r.stdout)
  end)

  it("a task that overflows its stack fails with the error; the engine goes on", function()
    local r = run_script([[
local core = require("rollout.core")
local function down(n) local x = down(n + 1); return x end
local t = core.spawn(function() return down(1) end)
local ok, err = pcall(t.wait, t)
print(ok, tostring(err):match("stack overflow") ~= nil, t:state())
local t2 = core.spawn(function() return tostring(setmetatable({}, { __tostring = function() return down(1) end })) end)
ok, err = pcall(t2.wait, t2)
print(ok, tostring(err):match("stack overflow") ~= nil or tostring(err):match("C stack") ~= nil)
print(core.spawn(function() core.sleep(0.01); return "alive" end):wait())
]])
    assert.equals(0, r.code, r.stderr)
    assert.equals("false\ttrue\tfailed\nfalse\ttrue\nalive\n", r.stdout)
  end)
end)

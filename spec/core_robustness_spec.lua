-- Regressions from the review of the C core: each of these crashed the engine (ASan
-- use-after-free, a PANIC or a SEGV) or misbehaved before it was fixed.
local proc = require("rollout.proc")
local fs = require("rollout.fs")
local core = require("rollout.core")

local function run_script(text)
  local dir = assert(fs.mkdtemp("robust"))
  local p = dir .. "/s.lua"
  assert(fs.write_atomic(p, text))
  local r = assert(proc.run({ argv = { rollout.exe, p }, timeout = 20 }))
  fs.rmtree(dir)
  return r
end

describe("the scheduler under abuse", function()
  it("a wait where Lua cannot yield is a clear error, and leaves no stale timer", function()
    local r = run_script([[
local core = require("rollout.core")
local ok, err = pcall(table.sort, {3, 2, 1}, function(a, b) core.sleep(0.05) return a < b end)
print(ok, err:match("cannot wait here") ~= nil)
local t = core.spawn(function() return select("#", core.suspend()) end)
core.sleep(0.2)
print(t:state(), core.wake(t, "x"))
print(t:wait())
]])
    assert.equals(0, r.code, r.stderr)
    assert.equals("false\ttrue\nwaiting\ttrue\n1\n", r.stdout)
  end)

  it("a __close handler that waits while its task is cancelled does not take the engine down", function()
    local r = run_script([[
local core = require("rollout.core")
local t = core.spawn(function()
  local x <close> = setmetatable({}, { __close = function() core.sleep(0.05) end })
  core.sleep(10)
end)
core.sleep(0.01)
print(t:cancel())
collectgarbage(); collectgarbage()
core.sleep(0.1)
print(t:state())
]])
    assert.equals(0, r.code, r.stderr)
    assert.equals("true\ncancelled\n", r.stdout)
  end)

  it("many arguments or results are handled, not a crash", function()
    local args = {}
    for i = 1, 5000 do args[i] = i end
    local t = core.spawn(function(...) return select("#", ...) end, table.unpack(args))
    assert.equals(5000, t:wait())
    local big = core.spawn(function() return table.unpack(args) end)
    local ok, err = pcall(big.wait, big)
    if ok then assert.equals(1, err) else assert.matches("too many results", tostring(err)) end
  end)

  it("an error object whose __tostring fails is reported, not a PANIC", function()
    local r = run_script([[
local core = require("rollout.core")
local t = core.spawn(function() error(setmetatable({}, { __tostring = function() error("boom") end })) end)
print((pcall(t.wait, t)))
]])
    assert.equals(0, r.code, r.stderr)
    assert.matches("^false", r.stdout)
  end)

  it("http.encode_query handles long values", function()
    local q = http.encode_query({ a = string.rep("x", 3000), b = "y" })
    assert.equals(3000 + 6, #q)
  end)

  it("fs.kill refuses a pid that would wrap to -1", function()
    assert.has_error(function() fs.kill(4294967295, 0) end, "out of range")
  end)
end)

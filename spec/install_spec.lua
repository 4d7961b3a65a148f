-- `make install PREFIX=...` installs the binary and the Lua library, and the installed
-- binary finds its library without LUA_PATH or ROLLOUT_LUADIR, from any directory.
local fs = require("rollout.fs")
local proc = require("rollout.proc")

describe("make install", function()
  it("installs a binary that finds its Lua library", function()
    local prefix = assert(fs.mkdtemp("install"))
    finally(function() fs.rmtree(prefix) end)
    local r = assert(proc.run({ argv = { "make", "-s", "install", "PREFIX=" .. prefix }, timeout = 300 }))
    assert.equals(0, r.code, r.stderr)
    local bin = prefix .. "/bin/rollout"
    assert.equals("file", fs.stat(bin).type)
    assert.equals("file", fs.stat(prefix .. "/share/rollout/lua/rollout/engine.lua").type)
    local env = { ROLLOUT_LUADIR = false, LUA_PATH = false, LUA_PATH_5_4 = false }
    local v = assert(proc.run({ argv = { bin, "version" }, cwd = "/", env = env, timeout = 10 }))
    assert.equals(0, v.code, v.stderr)
    assert.matches("^rollout %d+%.%d+%.%d+", v.stdout)
    local c = assert(proc.run({ argv = { bin, "check", prefix .. "/share/rollout/playbooks/canary.lua", "--offline" },
      cwd = "/", env = env, timeout = 10 }))
    assert.equals(0, c.code, c.stderr)
  end)
end)

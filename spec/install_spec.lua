-- `make install PREFIX=...` installs the binary, the Lua library, the playbooks, the docs and
-- the man pages; the installed binary finds its library without LUA_PATH or ROLLOUT_LUADIR,
-- from any directory. `make uninstall` removes exactly what install put there. `make dist`
-- makes a tarball that builds on its own and reports the same version.
local fs = require("rollout.fs")
local proc = require("rollout.proc")

local NO_LUA_ENV = { ROLLOUT_LUADIR = false, LUA_PATH = false, LUA_PATH_5_4 = false }

-- Every path under dir (files and directories), relative to it, sorted.
local function walk(dir)
  local out = {}
  local function visit(rel)
    local names = fs.list(dir .. rel) or {}
    for _, n in ipairs(names) do
      local p = rel .. "/" .. n
      out[#out + 1] = p
      if fs.stat(dir .. p).type == "dir" then visit(p) end
    end
  end
  visit("")
  table.sort(out)
  return out
end

local function make(args, opts)
  local argv = { "make", "-s" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = assert(proc.run({ argv = argv, cwd = opts and opts.cwd, timeout = opts and opts.timeout or 300 }))
  assert.equals(0, r.code, table.concat(argv, " ") .. ":\n" .. r.stdout .. r.stderr)
  return r
end

local function version()
  local r = assert(proc.run({ argv = { "sh", "tools/version.sh" }, timeout = 30 }))
  assert.equals(0, r.code, r.stderr)
  return (r.stdout:gsub("%s+$", ""))
end

describe("make install", function()
  it("installs a binary that finds its Lua library", function()
    local prefix = assert(fs.mkdtemp("install"))
    finally(function() fs.rmtree(prefix) end)
    make({ "install", "PREFIX=" .. prefix })
    local bin = prefix .. "/bin/rollout"
    assert.equals("file", fs.stat(bin).type)
    assert.equals("file", fs.stat(prefix .. "/share/rollout/lua/rollout/engine.lua").type)
    local v = assert(proc.run({ argv = { bin, "version" }, cwd = "/", env = NO_LUA_ENV, timeout = 10 }))
    assert.equals(0, v.code, v.stderr)
    assert.equals("rollout " .. version() .. "\n", v.stdout)
    local c = assert(proc.run({ argv = { bin, "check", prefix .. "/share/rollout/playbooks/canary.lua", "--offline" },
      cwd = "/", env = NO_LUA_ENV, timeout = 10 }))
    assert.equals(0, c.code, c.stderr)
  end)

  it("installs docs and man pages into DESTDIR/PREFIX, and uninstall removes exactly that", function()
    local dest = assert(fs.mkdtemp("destdir"))
    finally(function() fs.rmtree(dest) end)
    local prefix = "/opt/rollout-test"
    -- something of someone else's under the prefix: uninstall must leave it alone
    assert(fs.mkdir(dest .. "/opt"))
    assert(fs.mkdir(dest .. prefix))
    assert(fs.mkdir(dest .. prefix .. "/share"))
    assert(fs.write_atomic(dest .. prefix .. "/share/other.txt", "not ours\n"))
    local before = walk(dest)

    make({ "install", "DESTDIR=" .. dest, "PREFIX=" .. prefix })
    local root = dest .. prefix
    assert.equals("file", fs.stat(root .. "/bin/rollout").type)
    assert.equals("file", fs.stat(root .. "/share/rollout/playbooks/canary.lua").type)
    assert.equals("file", fs.stat(root .. "/share/doc/rollout/README.md").type)
    for _, f in ipairs({ "LICENSE", "CHANGELOG.md" }) do
      if fs.stat(f) then assert.equals("file", fs.stat(root .. "/share/doc/rollout/" .. f).type) end
    end
    for _, f in ipairs(fs.list("docs") or {}) do
      assert.equals("file", fs.stat(root .. "/share/doc/rollout/docs/" .. f).type, "docs/" .. f)
    end
    for _, f in ipairs(fs.list("man") or {}) do
      local section = f:match("%.(%d)$")
      if section then assert.equals("file", fs.stat(root .. "/share/man/man" .. section .. "/" .. f).type, f) end
    end
    -- the manifest lists every file install wrote, and nothing else is new
    local manifest = assert(fs.read(root .. "/share/rollout/install-manifest"))
    local listed = {}
    for kind, p in manifest:gmatch("([fd]) ([^\n]+)") do listed[p] = kind end
    local old = {}
    for _, p in ipairs(before) do old[p] = true end
    for _, p in ipairs(walk(dest)) do
      if not old[p] then
        local want = fs.stat(dest .. p).type == "dir" and "d" or "f"
        assert.equals(want, listed[p], p .. " is in the manifest")
      end
    end

    -- installing again over it works and leaves the same tree
    local first = walk(dest)
    make({ "install", "DESTDIR=" .. dest, "PREFIX=" .. prefix })
    assert.same(first, walk(dest))

    make({ "uninstall", "DESTDIR=" .. dest, "PREFIX=" .. prefix })
    assert.same(before, walk(dest))
    assert.equals("not ours\n", fs.read(dest .. prefix .. "/share/other.txt"))
  end)
end)

-- In a git checkout make dist makes the tarball; in a tarball it says it needs a checkout.
local in_git = proc.run({ argv = { "git", "rev-parse", "--show-toplevel" }, timeout = 10 })
in_git = in_git and in_git.code == 0 and fs.realpath(in_git.stdout:gsub("%s+$", "")) == fs.realpath(".")

describe("make dist", function()
  if not in_git then
    it("refuses outside a git checkout (a tarball), saying why", function()
      local r = assert(proc.run({ argv = { "make", "-s", "dist" }, timeout = 60 }))
      assert.equals(2, r.code, r.stderr)
      assert.matches("make dist: needs a git checkout", r.stderr)
    end)
    return
  end
  it("makes a tarball that builds with make and reports the version it was made at", function()
    local tmp = assert(fs.mkdtemp("dist"))
    finally(function() fs.rmtree(tmp) end)
    local want = version()
    local r = make({ "dist" })
    local tarball = "rollout-" .. want .. ".tar.gz"
    assert.truthy(r.stdout:find(tarball, 1, true), r.stdout)
    finally(function() os.remove(tarball) end)
    local x = assert(proc.run({ argv = { "tar", "-xzf", tarball, "-C", tmp }, timeout = 60 }))
    assert.equals(0, x.code, x.stderr)
    local src = tmp .. "/rollout-" .. want
    assert.equals(want .. "\n", fs.read(src .. "/VERSION"))
    assert.is_nil(fs.stat(src .. "/.git"))
    -- `make`, as a user of the tarball types it (unoptimised: the build is what is proven)
    make({ "-j2", "CFLAGS=-O0" }, { cwd = src, timeout = 900 })
    local v = assert(proc.run({ argv = { src .. "/rollout", "version" }, cwd = "/", env = NO_LUA_ENV, timeout = 10 }))
    assert.equals(0, v.code, v.stderr)
    assert.equals("rollout " .. want .. "\n", v.stdout)
  end)
end)

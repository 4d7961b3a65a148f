-- routers.exec: commands as argv lists (never a shell), {baseline} {canary} placeholders,
-- read-back parsed as JSON or "B C". A fake proxy (a script run by this very binary) keeps
-- its weights in a file; a last test drives a real HAProxy through python3 one-liners.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local exec = require("rollout.routers.exec")
local routers = require("rollout.routers")
local support = require("spec.support.routers_support")

-- The fake proxy: `fake.lua set STATE B C [extra...]`, `get STATE [json]`, `fail`, `sleep`,
-- `set-wrong STATE B C` (stores something else). Every call appends its argv to STATE.argv.
local FAKE = [[
local cmd, state = arg[1], arg[2]
if state then
  local f = io.open(state .. ".argv", "a")
  local argv = {}
  for i = 0, #arg do argv[#argv + 1] = arg[i] end
  f:write(require("rollout.json").encode(argv), "\n")
  f:close()
end
local function write(s) local f = assert(io.open(state, "w")); f:write(s); f:close() end
if cmd == "set" then write(arg[3] .. " " .. arg[4])
elseif cmd == "set-wrong" then write("90 10")
elseif cmd == "get" then
  local f = io.open(state); local s = f and f:read("a") or "100 0"; if f then f:close() end
  local b, c = s:match("(%S+) (%S+)")
  if arg[3] == "json" then print(string.format('{"baseline": %s, "canary": %s}', b, c)) else print(b .. " " .. c) end
elseif cmd == "fail" then io.stderr:write("boom: permission denied\n"); return 4
elseif cmd == "sleep" then rollout.sleep(5)
elseif cmd == "garbage" then print("weights are fine")
elseif cmd == "override" then local f = io.open(state .. ".override", "w"); f:write(arg[3] .. "=" .. arg[4]); f:close()
elseif cmd == "override-get" then
  local f = io.open(state .. ".override"); local s = f and f:read("a") or ""; if f then f:close() end
  local n, v = s:match("^(.-)=(.*)$")
  if n and n ~= "" then print(string.format('{"name": "%s", "value": "%s"}', n, v)) end
end
]]

describe("routers.exec", function()
  local dir, fake, state

  local function new(extra, opts)
    local cfg = { type = "exec",
      set = { rollout.exe, fake, "set", state, "{baseline}", "{canary}" },
      get = { rollout.exe, fake, "get", state, "json" } }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return routers.new(cfg, opts)
  end

  local function argv_log()
    local out = {}
    for l in (fs.read(state .. ".argv") or ""):gmatch("[^\n]+") do out[#out + 1] = json.decode(l) end
    return out
  end

  before_each(function()
    dir = assert(fs.mkdtemp("rollout-exec"))
    fake, state = dir .. "/fake.lua", dir .. "/state"
    assert(fs.write_atomic(fake, FAKE))
  end)
  after_each(function() fs.rmtree(dir) end)

  describe("validate", function()
    it("names each bad key by its path", function()
      assert.same({
        "bogus: unknown key",
        "get[2]: expected a string, got integer",
        "override[2]: placeholder {canary} is not available here",
        "set: expected a list of strings (argv), got string",
      }, exec.validate{ set = "kubectl patch {canary}", get = { "x", 3 }, override = { "x", "{canary}" }, bogus = 1 })
      assert.same({ "set[2]: unknown placeholder {weight}" }, exec.validate{ set = { "x", "w={weight}" }, get = { "y" } })
      assert.same({ "get: required argv list", "set: must not be empty" }, exec.validate{ set = {} })
    end)
  end)

  describe("weights", function()
    it("sets, reads back JSON or \"B C\", and confirms", function()
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      assert(r:set_weights{ baseline = 75, canary = 25 })
      assert.same({ baseline = 75, canary = 25 }, (r:get_weights()))
      local plain = new{ get = { rollout.exe, fake, "get", state } }
      assert.same({ baseline = 75, canary = 25 }, (plain:get_weights()))
      assert(plain:set_weights{ baseline = 0, canary = 100 })
      assert.same({ "weight_requested", "weight_confirmed" }, rec.kinds())
    end)

    it("passes values as single arguments, never through a shell", function()
      local nasty = "x; touch " .. dir .. "/pwned $(touch " .. dir .. "/pwned2) `id` 'q' \"d\""
      local r = new{ set = { rollout.exe, fake, "set", state, "{baseline}", "{canary}", "w={canary}%", nasty } }
      assert(r:set_weights{ baseline = 95, canary = 5 })
      local calls = argv_log()
      assert.same({ fake, "set", state, "95", "5", "w=5%", nasty }, calls[1])
      assert.is_nil(fs.stat(dir .. "/pwned"))
      assert.is_nil(fs.stat(dir .. "/pwned2"))
      assert.same({ "a", "{name}" }, exec.expand({ "a", "{name}" }, { canary = 5 }), "no value: left as written")
      assert.same({ "a", "--w=5x", "95" }, exec.expand({ "a", "--w={canary}x", "{baseline}" }, { baseline = 95, canary = 5 }))
    end)

    it("reports a failing command with its exit status and stderr, after the attempts", function()
      local rec = support.recorder()
      local r = new({ set = { rollout.exe, fake, "fail" } }, rec.opts)
      local ok, err = r:set_weights({ baseline = 95, canary = 5 }, { attempts = 3, backoff = 0.01 })
      assert.is_nil(ok)
      assert.matches("exited 4: boom: permission denied", err)
      assert.matches("3 attempts", err)
      assert.equals(3, rec.count("router_error"))
      assert.is_nil(r:confirmed())
    end)

    it("reports a read-back that differs as a mismatch", function()
      local rec = support.recorder()
      local r = new({ set = { rollout.exe, fake, "set-wrong", state, "{baseline}", "{canary}" } }, rec.opts)
      local ok, err = r:set_weights({ baseline = 50, canary = 50 }, { attempts = 2, backoff = 0.01 })
      assert.is_nil(ok)
      assert.matches("read back baseline 90 %% / canary 10 %%, requested baseline 50 %% / canary 50 %%", err)
      assert.equals(2, rec.count("weight_mismatch"))
      assert.same({ baseline = 90, canary = 10 }, rec.last("weight_mismatch").observed)
    end)

    it("reports unparsable output, a timeout and a missing program", function()
      local ok, err = new{ get = { rollout.exe, fake, "garbage" } }:get_weights()
      assert.is_nil(ok)
      assert.matches("expected {\"baseline\":N,\"canary\":N} or \"B C\", got 'weights are fine'", err)
      ok, err = new{ set = { rollout.exe, fake, "sleep" }, timeout = 0.3 }:set_weights({ canary = 5 }, { attempts = 1 })
      assert.is_nil(ok)
      assert.matches("timed out", err)
      ok, err = new{ set = { dir .. "/no-such-program" } }:set_weights({ canary = 5 }, { attempts = 1 })
      assert.is_nil(ok)
      assert.matches("no%-such%-program", err)
    end)

    it("parses both read-back formats", function()
      assert.same({ baseline = 75, canary = 25 }, exec.parse_weights('{"baseline": 75, "canary": 25}\n'))
      assert.same({ baseline = 75, canary = 25 }, exec.parse_weights("75 25\n"))
      assert.same({ baseline = 80, canary = 20 }, exec.parse_weights("100 25"), "absolute weights become shares")
      assert.is_nil((exec.parse_weights("75")))
    end)
  end)

  describe("header override", function()
    it("runs the override command with {name} {value} and reads it back", function()
      local r = new{ override = { rollout.exe, fake, "override", state, "{name}", "{value}" },
        override_get = { rollout.exe, fake, "override-get", state } }
      assert(r:header_override{ name = "canary", value = "true" })
      assert.equals("canary=true", fs.read(state .. ".override"))
      assert(r:header_override(false))
      assert.equals("=", fs.read(state .. ".override"))
      local blind = new{ override = { rollout.exe, fake, "override", state, "{name}", "{value}" } }
      assert(blind:header_override{ name = "x-canary", value = "1" }, "no override_get: the exit status decides")
      local none = new()
      local ok, err = none:header_override({ name = "canary", value = "true" }, { attempts = 1 })
      assert.is_nil(ok)
      assert.matches("no `override` command", err)
    end)
  end)

  describe("check", function()
    it("resolves the programs and runs get, moving nothing", function()
      assert(new():set_weights{ baseline = 95, canary = 5 })
      local before = #argv_log()
      local items = new{ check = { rollout.exe, fake, "get", state } }:check()
      for _, i in ipairs(items) do assert.is_true(i.ok, i.name .. ": " .. tostring(i.detail)) end
      for _, c in ipairs(argv_log()) do assert.truthy(c[1] ~= "set") end
      assert.equals(before + 2, #argv_log(), "check and get ran once each")
      local bad = new{ set = { "no-such-program-xyz", "{canary}" } }:check()
      assert.is_false(bad[1].ok)
      assert.matches("not found on PATH", bad[1].detail)
    end)
  end)

  describe("against HAProxy", function()
    local backends, hx
    setup(function()
      backends = support.backends()
      hx = support.haproxy(backends)
    end)
    teardown(function()
      support.cleanup(hx)
      backends.stop()
    end)

    it("drives a real proxy through commands", function()
      local talk = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
        .. "s.sendall(sys.argv[2].encode()+b'\\n')\nout=s.makefile().read()\n"
        .. "sys.stderr.write(out.strip())\nsys.exit(1 if out.strip() else 0)\n"
      local read = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
        .. "s.sendall(b'get weight be/baseline; get weight be/canary\\n')\n"
        .. "print(' '.join(l.split()[0] for l in s.makefile().read().splitlines() if l.strip()))\n"
      local r = routers.new{ type = "exec",
        set = { "/usr/bin/python3", "-c", talk, hx.socket, "set weight be/canary {canary}; set weight be/baseline {baseline}" },
        get = { "/usr/bin/python3", "-c", read, hx.socket } }
      assert(r:set_weights{ baseline = 75, canary = 25 })
      local s = support.load(hx.url .. "/", { rps = 2000, duration = 1 })
      local got = 100 * (s.by_body.v2 or 0) / s.ok
      print(string.format("      exec -> haproxy 25 %%: canary share %.2f %% of %d", got, s.ok))
      assert.near(25, got, 2)
    end, { timeout = 60 })
  end)
end)

-- fuzz/control_harness.lua: what fuzz_control runs each input through.
--
-- The control socket's protocols are Lua (rollout.control: line mode, and the machine mode's
-- 4-byte big-endian frames), so the input is the byte stream a client sends on one
-- connection, and the server's own handler, C:handle, reads it from a stand-in connection
-- with the semantics of rollout.net's (receive(n) and receive("l") give nil, "closed",
-- partial at the end). The engine behind it is real, with a stand-in router and a source
-- of fixed signals; REPL evaluations run under a small budget.
--
-- Checked: the handler never raises; in machine mode everything sent is whole frames, each a
-- JSON object {ok = boolean, text = string, error = string when not ok}; in line mode the
-- greeting comes first and every answer ends with a prompt unless the client quit.
--
-- The REPL evaluates Lua by design (an operator's tool), so what the fuzzer may reach is
-- fenced: no files written, no processes, no network, no tasks that outlive an evaluation,
-- no debug hooks, text chunks only.
-- luacheck: globals os io debug load loadfile dofile loadstring collectgarbage require rollout
local fs = require("rollout.fs")
local json = require("rollout.json")
local control = require("rollout.control")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
require("rollout.proc")
require("rollout.http")

local BUDGET = { instructions = 2e5, seconds = 0.5 }

local pb = assert(playbook.validate({
  name = "fuzz", service = "fuzz",
  versions = { baseline = { version = "v1" }, canary = { version = "v2" } },
  stages = { { weight = 10, hold = "1m" }, { weight = 100, hold = "1m" } },
  triggers = { errors = { condition = "error_rate > 5%", duration = "1m" } },
}, { file = "fuzz" }))

local router = {
  get_weights = function() return { baseline = 90, canary = 10 } end,
  set_weights = function() return true end,
}
local SIG = {
  baseline = { requests = 1000, rps = 10, error_rate = 0.001, p50 = 0.01, p95 = 0.02, p99 = 0.05, health = 1 },
  canary = { requests = 100, rps = 1, error_rate = 0.002, p50 = 0.011, p95 = 0.021, p99 = 0.06, health = 1 },
}
local source = { signals = function() return SIG end }

local function fresh_engine()
  return engine.new(pb, { router = router, sources = { source }, emit = function() end, who = "fuzz" })
end

-- The server object, made once: serve() binds a socket, which is closed at once (the handler
-- is driven directly).
local ctl
local function server()
  if ctl then return ctl end
  local dir = assert(fs.mkdtemp("fuzzctl"))
  local err
  ctl, err = control.serve(fresh_engine(), { path = dir .. "/fuzz.sock", budget = BUDGET })
  assert(ctl, err)
  ctl.srv:close()
  os.remove(dir .. "/fuzz.sock")
  fs.rmtree(dir)
  return ctl
end

-- ---- the fence ---------------------------------------------------------------------------

local function disabled(name) return function() error(name .. " is disabled in the fuzz harness", 2) end end
local function fence_module(mod, name, keep)
  for k, v in pairs(mod) do
    if type(v) == "function" and not (keep and keep[k]) then mod[k] = disabled(name .. "." .. k) end
  end
end

local fenced = false
local function fence()
  if fenced then return end
  fenced = true
  for _, k in ipairs({ "execute", "remove", "rename", "exit", "tmpname", "setlocale" }) do os[k] = disabled("os." .. k) end
  local open = io.open
  io.open = function(path, mode)
    if mode and mode ~= "r" and mode ~= "rb" then error("io.open for writing is disabled in the fuzz harness", 2) end
    return open(path, mode)
  end
  for _, k in ipairs({ "popen", "lines", "output", "input", "write", "read", "close", "tmpfile" }) do io[k] = disabled("io." .. k) end
  fence_module(package.loaded["rollout.fs"], "fs", { getuid = true, getpid = true, stat = true, read = true, isatty = true, realpath = true, list = true })
  fence_module(package.loaded["rollout.proc"], "proc")
  fence_module(package.loaded["rollout.net"], "net")
  fence_module(package.loaded["rollout.http"], "http")
  for _, m in ipairs({ "rollout.journal.core", "rollout.edit" }) do
    local ok, mod = pcall(require, m)
    if ok and type(mod) == "table" then fence_module(mod, m) end
  end
  local alloc = require("rollout.alloc")
  alloc.limit = disabled("alloc.limit")
  -- repl.lua spawns each evaluation with the real rollout.spawn; the code evaluated sees
  -- `rollout` (and require("rollout"), "rollout.core") without spawn, every, watch_signal
  local proxies = {}
  for _, name in ipairs({ "rollout", "rollout.core" }) do
    local p = {}
    for k, v in pairs(package.loaded[name]) do p[k] = v end
    for _, k in ipairs({ "spawn", "every", "watch_signal" }) do p[k] = disabled("rollout." .. k) end
    proxies[name] = p
  end
  _G.rollout = proxies.rollout
  local traceback = debug.traceback
  _G.debug = { traceback = traceback }
  local load = load
  _G.load = function(chunk, name, _, env) return load(chunk, name, "t", env) end
  _G.loadfile, _G.dofile, _G.loadstring = nil, nil, nil
  local gc = collectgarbage
  _G.collectgarbage = function(opt, ...)
    if opt == nil or opt == "collect" or opt == "count" or opt == "step" then return gc(opt, ...) end
    error("collectgarbage('" .. tostring(opt) .. "') is disabled in the fuzz harness", 2)
  end
  _G.require = function(name)
    local m = proxies[name] or package.loaded[name]
    if m == nil then error("require is disabled in the fuzz harness", 2) end
    return m
  end
end

-- ---- one connection ----------------------------------------------------------------------

local function stand_in(bytes)
  local pos, sent = 1, {}
  local conn = {}
  function conn.peer_uid() return fs.getuid(), 0, 4242 end
  function conn.receive(_, what)
    if pos > #bytes then return nil, "closed", "" end
    if what == "l" then
      local nl = bytes:find("\n", pos, true)
      if not nl then
        local partial = bytes:sub(pos)
        pos = #bytes + 1
        return nil, "closed", partial
      end
      local line = bytes:sub(pos, nl - 1)
      pos = nl + 1
      return line
    end
    assert(math.type(what) == "integer" and what > 0, "receive: bad count")
    local s = bytes:sub(pos, pos + what - 1)
    pos = pos + #s
    if #s < what then return nil, "closed", s end
    return s
  end
  function conn.send(_, s)
    assert(type(s) == "string", "send: not a string")
    sent[#sent + 1] = s
    return true
  end
  function conn.close() end
  return conn, sent
end

local function check_machine(out)
  local pos = 1
  while pos <= #out do
    assert(#out - pos + 1 >= 4, "machine mode: a torn frame header")
    local n = string.unpack(">I4", out, pos)
    assert(n <= control.MAX_FRAME, "machine mode: a frame over the maximum")
    local payload = out:sub(pos + 4, pos + 3 + n)
    assert(#payload == n, "machine mode: a torn frame")
    local v, err = json.decode(payload)
    assert(type(v) == "table", "machine mode: a response that is not a JSON object: " .. tostring(err))
    assert(type(v.ok) == "boolean", "machine mode: a response without ok")
    assert(type(v.text) == "string", "machine mode: a response without text")
    assert(v.ok or type(v.error) == "string", "machine mode: a failure without an error")
    pos = pos + 4 + n
  end
end

local function check_line(out, sent)
  assert(out:find("^rollout control: "), "line mode: no greeting")
  local last = sent[#sent]
  assert(last:find("> $") or last:find("bye\n$") or last == "", "line mode: an answer without a prompt: " .. ("%q"):format(last:sub(-40)))
end

return function(bytes)
  local c = server()
  fence()
  c.engine = fresh_engine()
  c.recent = {}
  local conn, sent = stand_in(bytes)
  local ok, err = pcall(c.handle, c, conn)
  assert(ok, "control handler raised: " .. tostring(err))
  local out = table.concat(sent)
  if bytes:sub(1, 1) == "\0" then check_machine(out) elseif #sent > 0 then check_line(out, sent) end
end

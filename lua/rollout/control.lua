-- rollout.control: the control socket of a running rollout.
--
-- One Unix socket per rollout, <run dir>/<service>.sock, mode 0600 in a 0700 directory; a
-- peer whose uid is neither ours nor root's is refused as well (SO_PEERCRED). Two modes on
-- the same socket, sharing one code path (rollout.repl: commands, then Lua):
--
-- Line mode, for people (socat, `rollout attach`'s fallback, tmux): the server greets, then
-- answers each line with its output followed by a prompt: "> ", or ">> " while a statement
-- is incomplete. Anything that is not a command is Lua, evaluated inside the running engine
-- (`engine`, `router`, `sources`, `pb`, `status()`, `signals()`, `weights()` are there).
--
-- Machine mode, for programs (`rollout ctl`, `rollout attach`): the client's first byte is
-- 0. Every request and every response is a frame: a 4-byte big-endian length, then that many
-- bytes (at most 16 MiB - 1, so a frame's first byte is always 0). A request is one command
-- or one line of Lua, as typed in line mode. A response is a JSON object:
--   {"ok": true|false, "text": "what line mode would print", "value": <JSON value>,
--    "error": "message" (when not ok), "incomplete": true (a statement continues)}
--
-- Commands (both modes): status, pause [reason], resume, promote, promote --full,
-- abort [reason], retry, set weight N, signals, events [N], watch [SEQ [TIMEOUT]], help, quit.
--
-- A runaway expression is stopped by its budget (repl.lua) and yields to the loop meanwhile,
-- so other connections and the engine's triggers are served while it spins. Lua runs in the
-- playbook sandbox (rollout.sandbox: no io, os.execute, os.exit) plus the engine's objects;
-- every chunk is journaled before it runs (event control_eval, with who: the peer's user
-- from SO_PEERCRED), and `router:set_weights{...}` (also engine.router's) is the engine's
-- `set weight N`: requested, confirmed and journaled like any shift.
--
-- Error policy: serve() returns nil, err when the socket cannot be made; a connection's
-- problems end that connection only. The client side (connect) returns nil, err, reason:
-- "not_found" when nothing is at the path (no such rollout), "unreachable" otherwise.
local rollout = require("rollout")
local net = require("rollout.net")
local fs = require("rollout.fs")
local repl = require("rollout.repl")
local journal = require("rollout.journal")
local json = require("rollout.json")
local output = require("rollout.output")
local engine_mod = require("rollout.engine")
local sandbox = require("rollout.sandbox")
local playbook = require("rollout.playbook")

local M = {}
local C = {}
C.__index = C

M.MAX_FRAME = 16 * 1024 * 1024 - 1
M.PROMPT, M.PROMPT2 = "> ", ">> "
M.BUDGET = { instructions = 1e8, seconds = 10 }

-- ---- framing (shared with the clients) --------------------------------------------------

--- frame(payload) -> bytes: 4-byte big-endian length, then the payload.
function M.frame(payload)
  assert(#payload <= M.MAX_FRAME, "control: frame too large")
  return string.pack(">s4", payload)
end

--- read_frame(conn [, timeout] [, have]) -> payload | nil, err. `have`: header bytes read already.
function M.read_frame(conn, timeout, have)
  local hdr = have or ""
  if #hdr < 4 then
    local more, err = conn:receive(4 - #hdr, timeout)
    if not more then return nil, err end
    hdr = hdr .. more
  end
  local n = string.unpack(">I4", hdr)
  if n > M.MAX_FRAME then return nil, "frame too large (" .. n .. " bytes)" end
  if n == 0 then return "" end
  return conn:receive(n, timeout)
end

-- ---- where ------------------------------------------------------------------------------

--- The run directory: $XDG_RUNTIME_DIR/rollout, else /run/rollout for root, else ./.rollout/run.
function M.default_run_dir()
  local x = os.getenv("XDG_RUNTIME_DIR")
  if x and x ~= "" then return x .. "/rollout" end
  if fs.getuid() == 0 then return "/run/rollout" end
  return ".rollout/run"
end

function M.socket_path(run_dir, service)
  return run_dir .. "/" .. (tostring(service or "rollout"):gsub("[^%w%._%-]", "_")) .. ".sock"
end

--- A private directory: created 0700, or tightened to 0700 when it is ours.
function M.private_dir(dir)
  local ok, err = fs.mkdir(dir, 448, true)
  if not ok then return nil, err end
  local st = fs.stat(dir)
  if st and st.mode & 63 ~= 0 then
    if st.uid ~= fs.getuid() then return nil, dir .. ": not private (mode " .. string.format("%o", st.mode) .. ") and not ours" end
    local cok, cerr = fs.chmod(dir, 448)
    if not cok then return nil, cerr end
  end
  return true
end

-- ---- who ----------------------------------------------------------------------------------

local function user_name(uid)
  local f = io.open("/etc/passwd")
  if f then
    for line in f:lines() do
      local name, id = line:match("^([^:]*):[^:]*:(%d+):")
      if id and tonumber(id) == uid then f:close(); return name end
    end
    f:close()
  end
  return "uid " .. tostring(uid)
end

-- ---- the text of a status -----------------------------------------------------------------

local function pct(v) return v and string.format("%.2f%%", v * 100) or "-" end
local function ms(v) return v and string.format("%.0fms", v * 1000) or "-" end

function M.signals_text(sig)
  if not sig then return "no signals yet" end
  local lines = { string.format("%-9s %9s %9s %9s %9s %9s %8s", "version", "requests", "rps", "errors", "p50", "p99", "health") }
  for _, v in ipairs({ "baseline", "canary" }) do
    local s = sig[v] or {}
    lines[#lines + 1] = string.format("%-9s %9s %9s %9s %9s %9s %8s", v, tostring(s.requests or "-"),
      s.rps and string.format("%.1f", s.rps) or "-", pct(s.error_rate), ms(s.p50), ms(s.p99), pct(s.health))
  end
  return table.concat(lines, "\n")
end

function M.status_text(st)
  local lines = {}
  lines[#lines + 1] = string.format("%s: %s -> %s, %s%s", tostring(st.service), tostring(st.baseline), tostring(st.canary),
    tostring(st.state), st.reason and (" (" .. tostring(st.reason) .. ")") or "")
  if st.stage then
    lines[#lines + 1] = string.format("stage %s (%s of %s)%s", st.stage, tostring(st.stage_index), tostring(st.stages),
      st.hold and string.format(", held %s of %s, %s left", output.clock(st.held), output.clock(st.hold), output.clock(st.hold_left)) or "")
  end
  lines[#lines + 1] = string.format("weights: baseline %s%% / canary %s%%, elapsed %s", tostring(st.weights.baseline),
    tostring(st.weights.canary), output.clock(st.elapsed))
  local trig = {}
  local names = {}
  for name in pairs(st.triggers or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do trig[#trig + 1] = name .. " " .. tostring(st.triggers[name].state) end
  if #trig > 0 then lines[#lines + 1] = "triggers: " .. table.concat(trig, ", ") end
  if st.journal_error then lines[#lines + 1] = "JOURNAL UNWRITABLE: " .. st.journal_error end
  if st.outcome then
    local o = st.outcome
    lines[#lines + 1] = "outcome: " .. tostring(o.outcome) .. (o.reason and (" (" .. o.reason .. ")") or "")
  end
  if st.signals then lines[#lines + 1] = M.signals_text(st.signals) end
  return table.concat(lines, "\n")
end

local HELP = [[
commands:
  status                 state, stage, weights, time left, triggers, last signals
  signals                current signals per version (trigger window)
  pause [reason]         hold the current stage (triggers keep watching)
  resume                 continue the hold with the time that was left
  promote                end this stage's hold now (the next stage follows)
  promote --full         skip the remaining stages: 100 % and the promote hooks
  abort [reason]         roll back now (reason manual)
  retry                  run the current stage again from its start
  set weight N           an operator's canary weight N % (journaled; until the next stage)
  events [N]             the last N events (default 20)
  watch [SEQ] [TIMEOUT]  the events after number SEQ, waiting up to TIMEOUT s (rollout watch)
  help, quit
anything else is Lua, evaluated in the engine: engine, router, sources, pb, status(),
signals(), weights() are there; expressions print their value.]]

-- ---- the server ---------------------------------------------------------------------------

--- serve(engine, {path=, budget=, env=, journal=}) -> control | nil, err
function M.serve(engine, opts)
  opts = opts or {}
  assert(opts.path, "control.serve: path is required")
  local dir = opts.path:match("^(.*)/[^/]*$") or "."
  local ok, err = M.private_dir(dir)
  if not ok then return nil, err end
  local srv, lerr = net.listen_unix(opts.path, "0600")
  if not srv then return nil, lerr end
  local self = setmetatable({ engine = engine, path = opts.path, srv = srv, conns = {}, recent = {},
    budget = opts.budget or M.BUDGET, extra_env = opts.env, journal = opts.journal }, C)
  self.task = rollout.spawn(function() self:accept_loop() end)
  return self
end

--- Keep the last events for `events` (run.lua's sink calls this).
function C:record(ev)
  local r = self.recent
  r[#r + 1] = ev
  if #r > 400 then table.remove(r, 1) end
  self.seq = (self.seq or 0) + 1 -- recent[i] is event number seq - #recent + i
  self:wake_watchers()
end

-- ---- watch: a long poll for live views (rollout watch) -----------------------------------

--- Wake every connection waiting in watch(): an event arrived, or the server closes.
function C:wake_watchers()
  local w = self.watchers
  if not w then return end
  self.watchers = nil
  for task in pairs(w) do rollout.wake(task) end
end

--- watch(cursor, timeout) -> value: the events after number `cursor` (at most 400, the ones
--- kept), waiting up to `timeout` seconds for one when there are none; with the engine's
--- status, its stages and the journal's path. A client repeats it with the returned `seq`.
--- {seq=, events = {...}, missed = n (events no longer kept), status=, stages = {{name=,
--- weight=, hold=}...}, triggers = {{name=, ["for"]=, condition=}...}, journal=}
function C:watch(cursor, timeout)
  cursor = math.max(0, math.floor(tonumber(cursor) or 0))
  local e = self.engine
  if (self.seq or 0) <= cursor and not e.outcome and not self.closed then
    local me = rollout.current()
    self.watchers = self.watchers or {}
    self.watchers[me] = true
    rollout.suspend(math.min(math.max(tonumber(timeout) or 1, 0), 5)) -- an evaluation's budget is 10 s
    if self.watchers then self.watchers[me] = nil end
  end
  local seq, r = self.seq or 0, self.recent
  local first = seq - #r + 1 -- the number of recent[1]
  local from = math.max(cursor + 1, first)
  local events = {}
  for n = from, seq do events[#events + 1] = r[n - first + 1] end
  local stages, triggers = {}, {}
  for i, st in ipairs(e.pb.stages or {}) do stages[i] = { name = st.name, weight = st.weight, hold = st.hold, max_hold = st.max_hold } end
  for i, tr in ipairs(e.pb.triggers or {}) do
    triggers[i] = { name = tr.name, ["for"] = tr.duration, kind = tr.kind, condition = tr.condition and tr.condition.text }
  end
  return { seq = seq, events = events, missed = math.max(0, from - cursor - 1), status = e:status(), stages = stages,
    triggers = triggers, journal = self.journal }
end

function C:accept_loop()
  while true do
    local conn, err = self.srv:accept()
    if not conn then
      if err == "closed" then return end
      rollout.sleep(0.05) -- EMFILE and friends: do not spin
    else
      self.conns[conn] = true
      rollout.spawn(function()
        local ok, e = pcall(self.handle, self, conn)
        if not ok and not self.closed then io.stderr:write("rollout: control connection: ", tostring(e), "\n") end
        self.conns[conn] = nil
        conn:close()
      end)
    end
  end
end

function C:close()
  if self.closed then return end
  self.closed = true
  self:wake_watchers()
  self.srv:close()
  for conn in pairs(self.conns) do conn:close() end
end

function C:signals()
  local e = self.engine
  local win = e.pb.trigger_window
  local sig = e:signals(rollout.now(), win)
  sig = sig or e.last_signals
  if not sig then return nil, "no signals yet" end
  return { window = win, baseline = engine_mod.compact(sig.baseline), canary = engine_mod.compact(sig.canary) }
end

local function unquote(s)
  return (s:gsub('^"(.*)"$', "%1"):gsub("^'(.*)'$", "%1"))
end

function C:commands(session)
  local e = self.engine
  local function cmd(name, arg)
    local ok, err = e:command(name, arg, session.who)
    if not ok then return nil, err end
    return { command = name, accepted = true }, name:gsub("_", " --") .. " requested"
  end
  local K = {}
  K.help = function() return HELP end
  K.status = function()
    local st = e:status()
    st.journal = self.journal -- where a client (playbooks/rollback.lua) reads the outcome
    return st, M.status_text(st)
  end
  K.signals = function()
    local sig, err = self:signals()
    if not sig then return nil, err end
    return sig, M.signals_text(sig)
  end
  K.pause = function(args) return cmd("pause", args ~= "" and unquote(args) or nil) end
  K.resume = function(args)
    if args ~= "" then return nil, "resume takes no arguments" end
    return cmd("resume")
  end
  K.promote = function(args)
    if args == "--full" or args == "full" then return cmd("promote_full") end
    if args ~= "" then return nil, "promote: unknown argument '" .. args .. "' (promote, promote --full)" end
    return cmd("promote")
  end
  K.abort = function(args) return cmd("abort", args ~= "" and unquote(args) or nil) end
  K.retry = function(args)
    if args ~= "" then return nil, "retry takes no arguments" end
    return cmd("retry")
  end
  K.set = function(args)
    local n = args:match("^weight%s+(%S+)$")
    if not n then return nil, "usage: set weight N (the canary's percent)" end
    local ok, err = e:command("set_weight", n, session.who)
    if not ok then return nil, err end
    return { baseline = e.weights.baseline, canary = e.weights.canary },
      string.format("weights confirmed: baseline %s%% / canary %s%%", tostring(e.weights.baseline), tostring(e.weights.canary))
  end
  K.events = function(args)
    local n = tonumber(args) or 20
    local list, lines = {}, {}
    for i = math.max(1, #self.recent - n + 1), #self.recent do
      list[#list + 1] = self.recent[i]
      lines[#lines + 1] = journal.encode(self.recent[i])
    end
    return list, table.concat(lines, "\n")
  end
  K.watch = function(args) -- watch [SEQ [TIMEOUT]]: rollout watch's long poll (C:watch)
    local cur, t = args:match("^(%d*)%s*([%d%.]*)$")
    if not cur then return nil, "usage: watch [SEQ [TIMEOUT]]" end
    local v = self:watch(tonumber(cur) or 0, tonumber(t) or 1)
    return v, string.format("%d events after %s (up to %d)", #v.events, cur ~= "" and cur or "0", v.seq)
  end
  K.quit = function()
    session.quit = true
    return "bye"
  end
  K.exit = K.quit
  return K
end

-- The router as the REPL sees it: reads pass through; set_weights goes through the engine
-- (E:command "set_weight": requested, confirmed and journaled with who, status stays true).
local function router_view(e, who)
  local real = e.router
  local view = {}
  return setmetatable(view, {
    __index = function(_, k)
      if k == "set_weights" then
        return function(_, w)
          if type(w) ~= "table" then return nil, "set_weights: expected {baseline=, canary=}" end
          local canary = w.canary or (w.baseline and 100 - w.baseline)
          return e:command("set_weight", canary, who)
        end
      end
      local v = real and real[k]
      if type(v) ~= "function" then return v end
      return function(self_, ...)
        if self_ == view then self_ = real end
        return v(self_, ...)
      end
    end,
    __newindex = function() error("router is read-only from the control socket", 2) end,
  })
end

-- The engine as the REPL sees it: the same object for reads and writes, except that its
-- router is router_view (so engine.router:set_weights goes through the engine too).
local function engine_view(e, rv)
  return setmetatable({}, {
    __index = function(_, k) if k == "router" then return rv end return e[k] end,
    __newindex = function(_, k, v)
      if k == "router" then error("engine.router cannot be replaced from the control socket", 2) end
      e[k] = v
    end,
  })
end

--- The REPL's environment: the playbook sandbox (rollout.sandbox: no io, os.execute or
--- os.exit; the host API) plus the engine's objects.
function C:env(who)
  local e = self.engine
  local env = sandbox.new(e.pb and e.pb.file and e.pb.file:match("^(.*)/[^/]*$") or ".", playbook.HOST)
  local rv = router_view(e, who)
  local ev = engine_view(e, rv)
  local fields = {
    engine = ev, e = ev, pb = e.pb, router = rv, sources = e.sources, journal = self.journal,
    status = function() return e:status() end,
    signals = function() return self:signals() end,
    weights = function() return e.router:get_weights() end,
  }
  for k, v in pairs(fields) do env[k] = v end
  for k, v in pairs(self.extra_env or {}) do env[k] = v end
  return env
end

function C:session(conn)
  local uid, _, pid = conn:peer_uid()
  local who = uid and string.format("%s (pid %s) via control socket", user_name(uid), tostring(pid)) or "control socket"
  local s = repl.new({ env = self:env(who), budget = self.budget, chunkname = "=control", isolated = true })
  s.who = who
  s.commands = self:commands(s)
  -- every line of Lua is journaled with the peer's user (SO_PEERCRED), before it runs
  local engine = self.engine
  s.on_lua = function(chunk)
    engine:emit("control_eval", { who = who, code = chunk })
  end
  return s, uid
end

local function response_json(res)
  local out = { ok = res.ok and true or false, text = res.text or "", incomplete = res.incomplete or nil,
    error = res.error }
  if res.value ~= nil then out.value = res.value end
  local ok, text = pcall(journal.encode, out)
  if ok then return text end
  out.value = nil -- not even clean() made it encodable: the text says it all
  return journal.encode(out)
end

function C:handle(conn)
  local session, uid = self:session(conn)
  if uid and uid ~= 0 and uid ~= fs.getuid() then
    conn:send("refused: " .. user_name(uid) .. " does not own this rollout\n")
    return
  end
  local first = conn:receive(1, 0.2)
  if first == "\0" then return self:machine(conn, session, first) end
  local st = self.engine:status()
  conn:send(string.format("rollout control: %s %s -> %s, %s. `help` lists the commands; anything else is Lua.\n%s",
    tostring(st.service), tostring(st.baseline), tostring(st.canary), tostring(st.state), M.PROMPT))
  local carry = first
  while not session.quit and not self.closed do
    local line
    if carry == "\n" then line = ""
    else
      local rest = conn:receive("l")
      if not rest then return end
      line = (carry or "") .. rest
    end
    carry = nil
    line = line:gsub("\r$", "")
    local res = session:eval(line)
    local text = res.text or ""
    if text ~= "" then text = text .. "\n" end
    if not conn:send(text .. (session.quit and "" or (res.incomplete and M.PROMPT2 or M.PROMPT))) then return end
  end
end

function C:machine(conn, session, have)
  while not session.quit and not self.closed do
    local req, err = M.read_frame(conn, nil, have)
    have = nil
    if not req then
      if err ~= "closed" then conn:send(M.frame(journal.encode({ ok = false, error = err, text = err }))) end
      return
    end
    local res = session:eval(req)
    if not conn:send(M.frame(response_json(res))) then return end
  end
end

-- ---- the client side (ctl, attach) -------------------------------------------------------

--- connect(path [, timeout]) -> client | nil, err, reason: a machine-mode connection. The
-- reason (rollout.exit.REASON) is "not_found" when nothing is at the path (no rollout runs
-- there), "unreachable" when something is but does not answer (a stale socket, no rights).
function M.connect(path, timeout)
  local conn, err = net.connect_unix(path, timeout or 5)
  if not conn then return nil, err, fs.stat(path) and "unreachable" or "not_found" end
  return { conn = conn,
    --- request(text [, timeout]) -> response table | nil, err
    request = function(self, text, t)
      local ok, serr = self.conn:send(M.frame(text))
      if not ok then return nil, serr end
      local payload, rerr = M.read_frame(self.conn, t)
      if not payload then
        if rerr == "closed" then return nil, "the rollout closed the connection (refused, or it ended)" end
        return nil, rerr
      end
      local res, jerr = json.decode(payload)
      if type(res) ~= "table" then return nil, "bad response: " .. tostring(jerr) end
      return res
    end,
    close = function(self) self.conn:close() end,
  }
end

--- Find a socket: a path, or a service name looked up in the default run directory.
function M.resolve(target)
  if target:find("/") or fs.stat(target) then return target end
  return M.socket_path(M.default_run_dir(), target)
end

return M

-- rollout.fleet: many rollouts, many engines, coordinated through etcd (fleet mode).
--
-- Like Patroni for PostgreSQL, no consensus of our own: etcd (3.4, JSON gateway, through
-- rollout.etcd) holds every rollout, decides who drives it, and keeps its journal, so a
-- rollout outlives the machine that drove it.
--
-- Keys, under a prefix (default /rollout/):
--   rollouts/<id>/spec            the bundle: playbook file + the .lua files of its directory,
--                                 --set list, optional config and scenario, submitted_by/at
--   rollouts/<id>/owner           {agent, lease, host, pid, since}, bound to the owner's lease;
--                                 its create-revision is the owner's fencing token
--   rollouts/<id>/events/<seq>    the journal, one engine event per key (12-digit seq)
--   rollouts/<id>/status          a summary (state, stage, weights, owner), with every event
--   rollouts/<id>/done            the outcome, written with the outcome event
--   rollouts/<id>/commands/<key>  operator commands (rollout ctl); acks/<key> their answers
--   agents/<name>                 a live agent, bound to its lease
-- and three small indexes, so that an agent's periodic work is a few range calls, whatever
-- the number of rollouts:
--   active/<id>   from submit until the outcome (deleted in the outcome's transaction)
--   owners/<id>   a mirror of the owner key (same transaction, same lease)
--   index/<id>    every rollout ever submitted ({service, submitted_at}), for `rollout list`
--   inbox/<id>    a doorbell: a command is waiting (written with the command)
--
-- Ownership: an agent holds one lease (TTL, kept alive every TTL/3) for itself and every
-- rollout it drives. It takes an unowned active rollout with a create-revision-0
-- transaction on rollouts/<id>/owner; the revision of that transaction is its fencing
-- token. Every event it replicates is a transaction guarded by "owner's create-revision ==
-- token", and so is the check (rollout.etcd holds()) it makes before every router action:
-- a deposed owner can neither move traffic nor write the journal. Its lease ending (etcd
-- says so, or no keepalive answered for a whole TTL) cancels all its rollout tasks at once.
-- When etcd cannot be reached the owner pauses its rollouts (traffic stays where it is: no
-- router action can prove ownership), says so, keeps the events in a local backlog, and
-- resumes when etcd answers again with the lease still valid.
--
-- Takeover: the new owner reads the events from etcd, replays them with
-- rollout.journal.replay, and starts the engine with env.resume: the same stage, weights
-- re-verified on the router, the hold's remaining time, as a local resume does.
--
-- Error policy: bad arguments raise; etcd and file-system failures return nil, err; inside
-- a rollout's task, losing ownership raises "fleet: ... not the owner" to stop the engine
-- where it stands.
local rollout = require("rollout")
local json = require("rollout.json")
local codec = require("rollout.codec")
local etcd = require("rollout.etcd")
local fs = require("rollout.fs")
local journal = require("rollout.journal")

local M = {}

M.PREFIX = "/rollout/"
M.TERMINAL = journal.TERMINAL
M.MAX_BUNDLE = 1024 * 1024 -- etcd refuses requests above 1.5 MiB by default

-- ---- keys --------------------------------------------------------------------------------

--- keys(prefix) -> the key layout under prefix (see the header).
function M.keys(prefix)
  prefix = prefix or M.PREFIX
  if prefix:sub(-1) ~= "/" then prefix = prefix .. "/" end
  local K = { prefix = prefix, agents = prefix .. "agents/", active = prefix .. "active/",
    owners = prefix .. "owners/", index = prefix .. "index/", inbox = prefix .. "inbox/" }
  local function r(id) return prefix .. "rollouts/" .. id .. "/" end
  function K.rollout(id) return r(id) end
  function K.spec(id) return r(id) .. "spec" end
  function K.owner(id) return r(id) .. "owner" end
  function K.status(id) return r(id) .. "status" end
  function K.done(id) return r(id) .. "done" end
  function K.events(id) return r(id) .. "events/" end
  function K.event(id, seq) return string.format("%sevents/%012d", r(id), seq) end
  function K.commands(id) return r(id) .. "commands/" end
  function K.acks(id) return r(id) .. "acks/" end
  return K
end

function M.valid_id(id)
  return type(id) == "string" and #id <= 128 and id:match("^[%w][%w%._%-]*$") ~= nil
end

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("l")
  if f then f:close() end
  return h or "localhost"
end
M.hostname = hostname

local function decode(s)
  local ok, v = pcall(json.decode, s)
  if ok and type(v) == "table" then return v end
  return nil
end

-- range over a prefix with options the client does not expose (keys_only, limit)
local function range(c, prefix, extra)
  local body = { key = codec.base64(prefix), range_end = codec.base64(etcd.prefix_end(prefix)),
    sort_order = "ASCEND", sort_target = "KEY" }
  for k, v in pairs(extra or {}) do body[k] = v end
  local v, err = c:call("/v3/kv/range", body)
  if not v then return nil, err end
  local out = {}
  for i, raw in ipairs(v.kvs or {}) do
    out[i] = { key = codec.unbase64(raw.key), value = raw.value and codec.unbase64(raw.value) or "",
      mod_revision = raw.mod_revision, create_revision = raw.create_revision, lease = raw.lease }
  end
  return out
end
M.range = range

local function ids_under(c, prefix, values)
  local kvs, err = range(c, prefix, not values and { keys_only = true } or nil)
  if not kvs then return nil, err end
  local out = {}
  for _, kv in ipairs(kvs) do out[kv.key:sub(#prefix + 1)] = kv end
  return out
end

--- events(client, K, id) -> list of decoded events (in seq order), last seq | nil, err
function M.read_events(c, K, id)
  local kvs, err = range(c, K.events(id))
  if not kvs then return nil, err end
  local out, last = {}, 0
  for _, kv in ipairs(kvs) do
    local ev = decode(kv.value)
    if ev then out[#out + 1] = ev end
    last = tonumber(kv.key:match("(%d+)$")) or last
  end
  return out, last
end

-- ---- encoding events --------------------------------------------------------------------------

-- Events are redacted (rollout.redact) before they leave the process, as journal.encode
-- does. redact.text runs some thirty patterns over every key and string, and an agent
-- encodes the same few strings (event kinds, field and stage names) a thousand times a
-- second, so it remembers the answers. The memo is dropped whenever a rollout is built
-- (that is when a playbook registers its secrets with rollout.redact) and when it grows.
local redact = require("rollout.redact")
local memo, memo_n, secret_memo = {}, 0, {}

function M.forget_redactions() memo, memo_n, secret_memo = {}, 0, {} end

local function redacted_text(s)
  local r = memo[s]
  if r == nil then
    r = redact.text(s)
    if memo_n >= 50000 then memo, memo_n = {}, 0 end
    memo[s], memo_n = r, memo_n + 1
  end
  return r
end

local function secret_key(k)
  local v = secret_memo[k]
  if v == nil then v = redact.secret_key(k); secret_memo[k] = v end
  return v
end

local function scrub(v, under_secret, depth)
  local t = type(v)
  if t == "string" then return under_secret and redact.MASK or redacted_text(v) end
  if t ~= "table" then return v end
  if depth > 16 then return "<too deep>" end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" then out[redacted_text(k)] = scrub(x, secret_key(k), depth + 1)
    else out[k] = scrub(x, false, depth + 1) end
  end
  local mt = getmetatable(v)
  if mt then setmetatable(out, mt) end
  return out
end

local ENCODE = { sort = true, non_finite = "null", invalid_utf8 = "replace" }

--- encode(ev) -> one JSON line, redacted (what journal.encode writes, for less CPU).
function M.encode(ev)
  local ok, line = pcall(json.encode, scrub(ev, false, 0), ENCODE)
  if ok then return line end
  return journal.encode(ev) -- functions, userdata, cycles: journal's cleaner handles them
end

-- ---- bundles -------------------------------------------------------------------------------

local function basename(p) return p:match("([^/]+)$") end
local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end

--- bundle(playbook_path, {sets=, config=, scenario=, simulated_router=, who=}) -> bundle | nil, err
--- The playbook file and every .lua file of its directory travel, so include() works on
--- any agent; a config or scenario file travels under its own name.
function M.bundle(path, opts)
  opts = opts or {}
  local files = {}
  local total = 0
  local function add(name, p)
    local data, err = fs.read(p)
    if not data then return nil, err end
    files[name] = data
    total = total + #data
    return true
  end
  local ok, err = add(basename(path), path)
  if not ok then return nil, err end
  local dir = dirname(path)
  for _, n in ipairs(fs.list(dir) or {}) do
    if n:match("%.lua$") and not files[n] then
      local st = fs.stat(dir .. "/" .. n)
      if st and st.type == "file" then add(n, dir .. "/" .. n) end
    end
  end
  local b = { playbook = basename(path), files = files, sets = json.array(opts.sets or {}),
    submitted_by = opts.who, submitted_at = rollout.time(), simulated_router = opts.simulated_router or nil }
  for _, k in ipairs({ "config", "scenario" }) do
    if opts[k] then
      local data, rerr = fs.read(opts[k])
      if not data then return nil, rerr end
      b[k] = { name = basename(opts[k]), content = data }
      total = total + #data
    end
  end
  if total > M.MAX_BUNDLE then
    return nil, string.format("the playbook's directory holds %d bytes of .lua files; fleet mode stores at most %d per rollout",
      total, M.MAX_BUNDLE)
  end
  return b
end

--- materialize(bundle, dir) -> playbook path, config path|nil, scenario path|nil | nil, err
function M.materialize(b, dir)
  local ok, err = fs.mkdir(dir, 448, true)
  if not ok and not fs.stat(dir) then return nil, err end
  for name, data in pairs(b.files or {}) do
    if name:find("/", 1, true) or name:sub(1, 1) == "." then return nil, "bundle: bad file name '" .. name .. "'" end
    local wok, werr = fs.write_atomic(dir .. "/" .. name, data, 384)
    if not wok then return nil, werr end
  end
  local extra = {}
  for _, k in ipairs({ "config", "scenario" }) do
    if b[k] then
      local p = dir .. "/_" .. k .. "." .. (b[k].name:match("%.([%w]+)$") or "txt")
      local wok, werr = fs.write_atomic(p, b[k].content, 384)
      if not wok then return nil, werr end
      extra[k] = p
    end
  end
  return dir .. "/" .. b.playbook, extra.config, extra.scenario
end

-- ---- one owned rollout -------------------------------------------------------------------

local R = {}
R.__index = R

local function new_runner(agent, id, token)
  return setmetatable({ agent = agent, id = id, token = token, K = agent.K, c = agent.c,
    seq = 0, queue = {}, waiters = {}, applied = {}, weight_sinks = {} }, R)
end
M.new_runner = new_runner

function R:fence()
  return { key = self.K.owner(self.id), target = "CREATE", result = "EQUAL", create_revision = self.token }
end

function R:status_value(rec)
  local e = self.engine
  local st = e and e:status() or {}
  local out = st.outcome
  return json.encode({ id = self.id, service = st.service, state = st.state or "starting", stage = st.stage,
    stage_index = st.stage_index, stages = st.stages, weights = st.weights, hold = st.hold, held = st.held,
    outcome = out and out.outcome, reason = out and out.reason, agent = self.agent.name, fence = self.token,
    updated = rollout.time(), event = rec.event, seq = rec.seq,
    etcd_paused = self.etcd_paused or nil }, { non_finite = "null" })
end

--- record(ev [, ops]): number, journal (locally and to etcd, fenced) and print one event.
--- ops: extra etcd requests that must land in the same transaction. Returns true |
--- false, err (not replicated yet: kept in the backlog) and raises when ownership is lost.
function R:record(ev, ops)
  if self.lost then error("fleet: " .. self.id .. ": not the owner any more (" .. self.lost .. ")", 0) end
  self.seq = self.seq + 1
  ev.seq, ev.rollout, ev.agent = self.seq, self.id, self.agent.name
  local line = M.encode(ev)
  -- the local copy of the journal: the same line (the same seq as in etcd), appended and synced
  if self.writer and self.writer.file then self.writer.file:append(line .. "\n") end
  self.agent:print(ev, line)
  if not self.c then return true end
  local item = { seq = self.seq, line = line, ops = ops or {}, status = self:status_value(ev) }
  self.queue[#self.queue + 1] = item
  if self.agent.unreachable then return false, "etcd unreachable" end
  local ok, err = self:flush()
  if ok == false then error("fleet: " .. self.id .. ": not the owner any more (" .. tostring(self.lost) .. ")", 0) end
  return ok, err
end

--- The engine's emit: every event through record(), in order, before the engine goes on.
function R:sink(ev)
  local rec = {}
  for k, v in pairs(ev) do rec[k] = v end
  local ops
  if ev.event == "weight_confirmed" then
    for _, s in ipairs(self.weight_sinks) do s:record_weight(ev.t or 0, ev.canary) end
  elseif ev.event == "command" and self.consuming and not self.consuming.used then
    local c = self.consuming
    c.used = true
    ops = { { request_delete_range = { key = c.key } },
      { request_put = { key = c.ack,
        value = json.encode({ ok = true, agent = self.agent.name, command = ev.command, time = rollout.time() }) } } }
  elseif ev.event == "outcome" and M.TERMINAL[ev.outcome] then
    ops = { { request_put = { key = self.K.done(self.id), value = json.encode({ outcome = ev.outcome, reason = ev.reason,
        at = ev.at, stage = ev.stage, agent = self.agent.name, time = rollout.time() }) } },
      { request_delete_range = { key = self.K.active .. self.id } } }
  end
  return self:record(rec, ops)
end

-- Send the backlog, in order, in transactions guarded by the fencing token. One flusher at
-- a time; others wait for it. true | false, why (fenced out: ownership lost) | nil, err.
function R:flush()
  while self.flushing do
    self.waiters[#self.waiters + 1] = rollout.current()
    rollout.suspend(5)
  end
  if self.lost then return false, self.lost end
  if #self.queue == 0 then return true end
  self.flushing = true
  local ok, err = true, nil
  while #self.queue > 0 and not self.lost do
    local n = math.min(#self.queue, 32)
    local success = {}
    for i = 1, n do
      local it = self.queue[i]
      success[#success + 1] = { request_put = { key = self.K.event(self.id, it.seq), value = it.line } }
      for _, op in ipairs(it.ops) do success[#success + 1] = op end
    end
    success[#success + 1] = { request_put = { key = self.K.status(self.id), value = self.queue[n].status } }
    local res, resp = self.c:txn({ compare = { self:fence() }, success = success })
    if res == true then
      local q, rest = self.queue, #self.queue - n
      table.move(q, n + 1, n + rest, 1)
      for i = rest + 1, rest + n do q[i] = nil end
    elseif res == false then
      ok, err = false, "fencing token " .. self.token .. " no longer holds"
      self.flushing = false
      self:mark_lost(err)
      break
    else
      ok, err = nil, resp
      break
    end
  end
  self.flushing = false
  local w = self.waiters
  self.waiters = {}
  for _, t in ipairs(w) do rollout.wake(t) end
  return ok, err
end

--- Before a router action: the journal is in etcd and we still hold the rollout. While
--- etcd cannot be reached, wait (traffic stays where it is); raise once ownership is lost.
function R:guard(action)
  local said
  while true do
    if self.lost then
      error("fleet: " .. self.id .. ": not the owner any more (" .. self.lost .. "): refusing " .. action, 0)
    end
    local err = "etcd unreachable"
    if not self.agent.unreachable then
      local ok, ferr = self:flush()
      if ok then
        local held, herr = self.c:holds(self.K.owner(self.id), self.token)
        if held == true then
          if said then self.agent:say(self.id .. ": ownership proven again; " .. action .. " goes ahead") end
          return true
        elseif held == false then
          self:mark_lost("fencing check failed before " .. action)
        else
          err = herr
        end
      elseif ok == nil then
        err = ferr
      end
    end
    if not self.lost then
      if not said then
        said = true
        self.agent:say(self.id .. ": cannot prove ownership before " .. action .. " (" .. tostring(err)
          .. "): traffic stays where it is until etcd answers")
      end
      rollout.sleep(0.2)
    end
  end
end

--- The router the engine gets: actions that move traffic pass the fence first.
function R:fenced(inner)
  local runner = self
  local F = setmetatable({ inner = inner }, { __index = function(_, k)
    local v = inner[k]
    if type(v) == "function" then return function(_, ...) return v(inner, ...) end end
    return v
  end })
  for _, m in ipairs({ "set_weights", "verify", "header_override", "rollback" }) do
    if inner[m] then
      F[m] = function(_, ...)
        runner:guard(m)
        return inner[m](inner, ...)
      end
    end
  end
  return F
end

function R:mark_lost(why)
  if self.lost then return end
  self.lost = why
  if self.agent.owned[self.id] == self then self.agent.owned[self.id] = nil end
  local ev = { event = "ownership_lost", rollout = self.id, agent = self.agent.name, fence = self.token,
    why = why, time = rollout.time(), unreplicated = #self.queue }
  if self.writer and self.writer.file then self.writer.file:append(M.encode(ev) .. "\n") end
  self.agent:print(ev)
  self.queue = {}
  if self.task and self.task ~= rollout.current() then self.task:cancel("ownership lost: " .. why) end
  local w = self.waiters
  self.waiters = {}
  for _, t in ipairs(w) do rollout.wake(t) end
  self:close()
end

function R:close()
  for _, s in ipairs(self.sources or {}) do if s.close then pcall(s.close, s) end end
  self.sources = {}
  if self.writer then self.writer:close(); self.writer = nil end
end

-- Retry fn until it returns a value, ownership is lost, or etcd says no.
function R:persist(what, fn)
  local said
  while not self.lost do
    local a, b, c = fn()
    if a ~= nil then return a, b, c end
    if not said then said = true; self.agent:say(self.id .. ": " .. what .. ": " .. tostring(b) .. " (retrying)") end
    rollout.sleep(0.5)
  end
  error("fleet: " .. self.id .. ": not the owner any more (" .. tostring(self.lost) .. ")", 0)
end

function R:fleet_event(kind, fields, ops)
  local ev = { event = kind, time = rollout.time() } -- `time`, not `ts`: replay's clock is the engine's
  for k, v in pairs(fields or {}) do ev[k] = v end
  return self:record(ev, ops)
end

-- Write an event and make sure it reached etcd (waiting through an outage).
function R:fleet_event_sync(kind, fields, ops)
  self:fleet_event(kind, fields, ops)
  self:persist("replicating " .. kind, function()
    if self.agent.unreachable then return nil, "etcd unreachable" end
    local ok, err = self:flush()
    if ok then return true end
    return nil, err
  end)
end

-- Build the router and sources: the playbook's own, or the bundle's synthetic ones.
function R:build(pb, b, scenario_path)
  local function emitter(kind)
    return function(k, fields)
      local ev = {}
      for x, v in pairs(fields or {}) do ev[x] = v end
      ev.kind = k
      if self.engine then self.engine:emit(kind, ev) end
    end
  end
  local router, sources
  if scenario_path then
    local sc, errs = require("rollout.sim.scenario").load(scenario_path)
    if not sc then return nil, "scenario: " .. require("rollout.playbook").format_error(errs[1]) end
    local src = require("rollout.fleet_sim").source(sc, { clock = function() return self.engine and self.engine:elapsed() or 0 end })
    sources = { src }
    self.weight_sinks = { src }
  end
  if b.simulated_router then
    router = require("rollout.fleet_sim").router()
  elseif pb.router then
    local ok, r = pcall(require("rollout.routers").new, pb.router, { emit = emitter("router") })
    if not ok then return nil, tostring(r) end
    router = r
  else
    return nil, "the playbook names no router (router = {type = ...})"
  end
  if not sources then
    local r2, s2 = require("rollout.cmd.run").build(pb, function(kind, fields)
      if self.engine then self.engine:emit(kind, fields) end
    end)
    if not r2 then return nil, s2 end
    sources = s2
  end
  return router, sources
end

-- After a takeover or a fresh take: load, replay, run; then let go of the rollout.
function R:start()
  local c, K, id, agent = self.c, self.K, self.id, self.agent
  local spec = self:persist("reading the spec", function()
    local v, kv = c:get(K.spec(id))
    if v == nil and kv == nil then return false, "no spec" end
    if v == nil then return nil, kv end
    return v
  end)
  local events, last = self:persist("reading the journal", function() return M.read_events(c, K, id) end)
  self.seq = last
  local b = spec and decode(spec)
  local fail
  local pb, router, sources, resume, why
  if not b then fail = "error:spec" else
    local path, config, scenario = M.materialize(b, agent.dir .. "/bundles/" .. id)
    if not path then fail = "error:bundle"; why = config
    else
      local errs
      -- the bundle is code from whoever can write the prefix: it loads in the playbook
      -- sandbox under its load budget, while this agent's loop (leases, other rollouts) goes
      -- on; a playbook that fails or exceeds it is rejected, the agent carries on
      pb, errs = require("rollout.playbook").load(path, { sets = b.sets, config = config })
      if not pb then fail = "rejected:playbook"; why = require("rollout.playbook").format_error(errs[1])
      else
        router, sources = self:build(pb, b, scenario)
        M.forget_redactions() -- secrets this playbook registered apply from now on
        if not router then fail = "error:build"; why = sources end
      end
    end
  end
  if agent.journal_dir then self.writer = journal.open(agent.journal_dir .. "/" .. id .. ".jsonl") end
  local previous
  for i = #events, 1, -1 do if events[i].agent then previous = events[i].agent; break end end
  if fail then
    self:fleet_event_sync("outcome", { outcome = "failed", reason = fail, detail = why }, {
      { request_put = { key = K.done(id), value = json.encode({ outcome = "failed", reason = fail, detail = why, agent = agent.name }) } },
      { request_delete_range = { key = K.active .. id } } })
    return self:release("failed")
  end
  resume, why = journal.replay(events)
  if not resume and why ~= "start" then
    -- finished (the outcome is in the journal): only the bookkeeping is left
    local s = journal.summary(events)
    self:fleet_event_sync("done_recorded", { outcome = s.outcome }, {
      { request_put = { key = K.done(id), value = json.encode({ outcome = s.outcome, reason = s.reason, agent = agent.name }) } },
      { request_delete_range = { key = K.active .. id } } })
    return self:release(s.outcome)
  end
  for _, ev in ipairs(events) do
    if ev.event == "weight_confirmed" then
      for _, s in ipairs(self.weight_sinks) do s:record_weight(ev.t or 0, ev.canary) end
    end
  end
  self.sources = sources
  self.router = self:fenced(router)
  local e = require("rollout.engine").new(pb, { router = self.router, sources = sources, interactive = true,
    who = agent.name, resume = resume, emit = function(ev) return self:sink(ev) end })
  self.engine = e
  self:fleet_event_sync("owner_acquired", { fence = self.token, lease = agent.session and agent.session.lease,
    previous = previous, events = #events,
    resume = resume and { phase = resume.phase, stage_index = resume.stage_index, held = resume.held, paused = resume.paused } or nil })
  if resume and resume.paused == "manual" then
    e:interrupt({ action = "pause", reason = "manual", who = "operator (before takeover)" })
  end
  if agent.unreachable then self:pause_for_etcd("etcd unreachable") end
  local ok, res = pcall(e.run, e)
  if self.lost then return end
  if not ok then
    agent:say(id .. ": the engine stopped with an error: " .. tostring(res))
    pcall(self.fleet_event, self, "fleet_error", { error = tostring(res) })
    agent:quarantine(id)
    return self:release("error")
  end
  return self:release(res.outcome)
end

--- Let go of the rollout: the journal first, then the owner keys, fenced.
function R:release(why)
  if self.lost then return end
  self:close_sources_only()
  self:fleet_event_sync("owner_released", { why = why }, {
    { request_delete_range = { key = self.K.owner(self.id) } },
    { request_delete_range = { key = self.K.owners .. self.id } } })
  if self.agent.owned[self.id] == self then self.agent.owned[self.id] = nil end
  self.lost = "released"
  self:close()
end

function R:close_sources_only()
  for _, s in ipairs(self.sources or {}) do if s.close then pcall(s.close, s) end end
  self.sources = {}
end

-- ---- etcd outages and commands ---------------------------------------------------------------

function R:pause_for_etcd(err)
  local e = self.engine
  if not e or e.outcome or self.lost then return end
  pcall(self.fleet_event, self, "etcd_unreachable", { error = tostring(err) })
  if e.state ~= "paused" and not self.etcd_paused then
    self.etcd_paused = true
    e:interrupt({ action = "pause", reason = "etcd unreachable", who = "fleet:" .. self.agent.name })
  end
end

function R:reconnect()
  if self.lost then return end
  local ok = self:flush()
  if not ok or self.lost then return end
  if self.etcd_paused then
    self.etcd_paused = nil
    local e = self.engine
    pcall(self.fleet_event, self, "etcd_reachable", { detail = "the lease held: resuming" })
    if e and not e.outcome then e:interrupt({ action = "resume", who = "fleet:" .. self.agent.name }) end
  end
end

--- Apply the commands waiting in etcd, each exactly once: its "command" event, its
--- deletion and its ack land in one fenced transaction.
function R:take_commands(inbox_rev)
  local K, id = self.K, self.id
  local kvs = range(self.c, K.commands(id))
  if not kvs then return end
  for _, kv in ipairs(kvs) do
    if self.lost or not self.engine then return end
    if not self.applied[kv.key] then
      self.applied[kv.key] = true
      local cmd = decode(kv.value) or {}
      local ack = K.acks(id) .. kv.key:match("([^/]+)$")
      self.consuming = { key = kv.key, ack = ack }
      local ok, res, err
      if cmd.command == "status" then
        ok, res = true, nil
        err = "status"
      else
        ok, res, err = pcall(self.engine.command, self.engine, cmd.command, cmd.arg, cmd.who or "ctl")
      end
      local used = self.consuming.used
      self.consuming = nil
      if not used and not self.lost then
        local answer = { ok = false, agent = self.agent.name, command = cmd.command, time = rollout.time() }
        if err == "status" then answer.ok, answer.status = true, decode(self:status_value({ event = "status" }))
        else answer.error = ok and tostring(err) or tostring(res) end
        pcall(self.fleet_event, self, "command_answered", { command = cmd.command, ok = answer.ok, error = answer.error }, {
          { request_delete_range = { key = kv.key } },
          { request_put = { key = ack, value = json.encode(answer, { non_finite = "null" }) } } })
      end
    end
  end
  if inbox_rev and not self.lost then
    self.c:txn({ compare = { { key = K.inbox .. id, target = "MOD", result = "EQUAL", mod_revision = inbox_rev } },
      success = { { request_delete_range = { key = K.inbox .. id } } } })
  end
end

-- ---- the agent -------------------------------------------------------------------------------

local A = {}
A.__index = A

--- agent{etcd = url, name=, prefix=, ttl = 10, scan = ttl/4, poll = 1, dir=, journal = true,
---       json = false, verbose = false, max = n, out = io.stdout} -> agent
function M.agent(opts)
  local ttl = math.max(2, math.floor((opts.ttl or 10) + 0.5))
  local name = opts.name or (hostname() .. "-" .. fs.getpid())
  local self = setmetatable({
    name = name, K = M.keys(opts.prefix), ttl = ttl,
    c = opts.client or etcd.new({ url = opts.etcd, timeout = math.max(0.5, math.min(3, ttl / 4)) }),
    scan_every = opts.scan or math.max(0.1, ttl / 8), poll_every = opts.poll or 0.5,
    margin = math.min(1, 0.1 * ttl + 0.1), dir = opts.dir or (".rollout/fleet/" .. name),
    json = opts.json, verbose = opts.verbose, max = opts.max, out = opts.out or io.stdout,
    owned = {}, quarantined = {}, unreachable = false,
  }, A)
  if opts.journal ~= false then self.journal_dir = self.dir .. "/journal" end
  return self
end

function A:say(msg)
  io.stderr:write(string.format("rollout agent %s: %s\n", self.name, msg))
end

local QUIET = { evaluation = true, router = true, source = true, weights_read_back = true }

function A:print(ev, line)
  if self.json then
    self.out:write(line or M.encode(ev), "\n")
  elseif self.verbose or not QUIET[ev.event] then
    local parts = {}
    for _, k in ipairs({ "stage", "outcome", "reason", "canary", "command", "why", "error", "fence", "previous" }) do
      if ev[k] ~= nil and type(ev[k]) ~= "table" then parts[#parts + 1] = k .. "=" .. tostring(ev[k]) end
    end
    self.out:write(string.format("%s %s %s %s\n", os.date("!%H:%M:%S", math.floor(ev.ts or ev.time or rollout.time())),
      ev.rollout or "-", ev.event, table.concat(parts, " ")))
  end
end

function A:count()
  local n = 0
  for _ in pairs(self.owned) do n = n + 1 end
  return n
end

function A:quarantine(id, seconds)
  self.quarantined[id] = rollout.now() + (seconds or 30)
end

function A:take(id)
  local K, sess = self.K, self.session
  local val = json.encode({ agent = self.name, lease = sess.lease, host = hostname(), pid = fs.getpid(), since = rollout.time() })
  local ok, _, rev = self.c:txn({
    compare = { { key = K.owner(id), target = "CREATE", result = "EQUAL", create_revision = "0" },
                { key = K.active .. id, target = "CREATE", result = "GREATER", create_revision = "0" } },
    success = { { request_put = { key = K.owner(id), value = val, lease = sess.lease } },
                { request_put = { key = K.owners .. id, value = val, lease = sess.lease } } },
  })
  if not ok or sess.over then return false end
  local r = new_runner(self, id, rev)
  self.owned[id] = r
  r.task = rollout.spawn(function()
    local ok2, err = pcall(r.start, r)
    if not ok2 and not r.lost then
      self:say(id .. ": " .. tostring(err))
      self:quarantine(id)
      r.lost = "error"
      if self.owned[id] == r then self.owned[id] = nil end
      r:close()
    end
  end)
  return true
end

function A:scan_once()
  local sess = self.session
  local active = ids_under(self.c, self.K.active)
  if not active or sess.over then return end
  local owners = ids_under(self.c, self.K.owners) or {}
  local agents = ids_under(self.c, self.K.agents) or {}
  local total, live = 0, 0
  for _ in pairs(active) do total = total + 1 end
  for _ in pairs(agents) do live = live + 1 end
  local fair = math.ceil(total / math.max(1, live))
  if self.max then fair = math.min(fair, self.max) end
  local now, cands = rollout.now(), {}
  for id in pairs(active) do
    local q = self.quarantined[id]
    if not owners[id] and not self.owned[id] and not (q and q > now) then cands[#cands + 1] = id end
  end
  for i = #cands, 2, -1 do local j = math.random(i); cands[i], cands[j] = cands[j], cands[i] end
  local mine = self:count()
  for _, id in ipairs(cands) do
    if mine >= fair or sess.over then break end
    if self:take(id) then mine = mine + 1 end
  end
end

function A:poll_once()
  local inbox = ids_under(self.c, self.K.inbox, true)
  if not inbox then return end
  for id, kv in pairs(inbox) do
    local r = self.owned[id]
    if r and r.engine and not r.lost and not r.taking then
      r.taking = true -- one reader per rollout; a set_weight may wait for its engine
      rollout.spawn(function()
        pcall(r.take_commands, r, kv.mod_revision)
        r.taking = nil
      end)
    end
  end
end

function A:on_unreachable(err)
  self.unreachable = true
  local n = self:count()
  local left = self.session and (self.session.deadline - self.margin - rollout.now()) or 0
  self:say(string.format("etcd unreachable (%s): pausing %d rollout(s), traffic stays where it is; "
    .. "they stop for good in %.1f s unless etcd answers", tostring(err), n, math.max(0, left)))
  for _, r in pairs(self.owned) do r:pause_for_etcd(err) end
end

function A:on_reachable()
  self.unreachable = false
  self:say("etcd reachable again and the lease held: resuming " .. self:count() .. " rollout(s)")
  for _, r in pairs(self.owned) do rollout.spawn(function() r:reconnect() end) end
end

function A:end_session(sess, why)
  if sess.over then return end
  sess.over = true
  local n = self:count()
  if n > 0 or not self.stopping then self:say("lease lost (" .. why .. "): stopping " .. n .. " rollout(s) at once") end
  local list = {}
  for _, r in pairs(self.owned) do list[#list + 1] = r end
  for _, r in ipairs(list) do r:mark_lost("lease: " .. why) end
  self.unreachable = false
  local me = rollout.current()
  for _, t in ipairs(sess.tasks) do if t ~= me then t:cancel("session over") end end
  if self.session == sess then self.session = nil end
  if self.main then rollout.wake(self.main) end
end

local function loop_task(period, fn)
  return rollout.spawn(function()
    while true do
      local ok, err = pcall(fn)
      if not ok then io.stderr:write("rollout agent: ", tostring(err), "\n") end
      rollout.sleep(period)
    end
  end)
end

function A:begin_session()
  local sent = rollout.now()
  local lease, err = self.c:grant(self.ttl)
  if not lease then return nil, err end
  local sess = { lease = lease, deadline = sent + self.ttl, tasks = {} }
  self.session = sess
  local ok, perr = self.c:put(self.K.agents .. self.name, json.encode({ name = self.name, host = hostname(), pid = fs.getpid(),
    since = rollout.time(), ttl = self.ttl, lease = lease }), lease)
  if not ok then self.session = nil; return nil, perr end
  self:say(string.format("joined: lease %s (TTL %d s), %s", lease, self.ttl, self.c.url))
  sess.tasks[#sess.tasks + 1] = rollout.spawn(function() self:keepalive_loop(sess) end)
  sess.tasks[#sess.tasks + 1] = rollout.spawn(function() self:watchdog(sess) end)
  sess.tasks[#sess.tasks + 1] = loop_task(self.scan_every, function() if not self.unreachable then self:scan_once() end end)
  sess.tasks[#sess.tasks + 1] = loop_task(self.poll_every, function() if not self.unreachable then self:poll_once() end end)
  return sess
end

function A:keepalive_loop(sess)
  while not sess.over do
    local sent = rollout.now()
    local ttl, err = self.c:keepalive(sess.lease)
    if sess.over then return end
    if ttl then
      sess.deadline = sent + self.ttl
      if self.unreachable then self:on_reachable() end
      rollout.sleep(math.max(0, sent + self.ttl / 3 - rollout.now()))
    elseif err == "lease expired" then
      return self:end_session(sess, "etcd says the lease expired")
    else
      if not self.unreachable then self:on_unreachable(err) end
      rollout.sleep(math.max(0.05, sent + math.min(self.ttl / 6, 0.5) - rollout.now()))
    end
  end
end

-- Without a keepalive answer for a whole TTL the lease may be gone: stop before anybody
-- else can take over (the deadline counts from when the last answered keepalive was sent).
function A:watchdog(sess)
  while not sess.over do
    local left = sess.deadline - self.margin - rollout.now()
    if left <= 0 then return self:end_session(sess, "no keepalive answered within the TTL") end
    rollout.sleep(left)
  end
end

--- Stop: hand every rollout back (journal, then the owner keys) so other agents take
--- them at once, and leave.
function A:stop(why)
  if self.stopping then return end
  self.stopping = true
  self:say("stopping (" .. tostring(why) .. "): handing back " .. self:count() .. " rollout(s)")
  local list = {}
  for _, r in pairs(self.owned) do list[#list + 1] = r end
  for _, r in ipairs(list) do
    if r.task and r.task ~= rollout.current() then r.task:cancel("agent stopping") end
    r.flushing = false
    if not self.unreachable then pcall(function()
      r:fleet_event("owner_released", { why = "agent stopping" }, {
        { request_delete_range = { key = self.K.owner(r.id) } },
        { request_delete_range = { key = self.K.owners .. r.id } } })
    end) end
    r.lost = "agent stopping"
    r:close()
    self.owned[r.id] = nil
  end
  local sess = self.session
  if sess then
    if not self.unreachable then
      self.c:delete(self.K.agents .. self.name)
      self.c:revoke(sess.lease)
    end
    self:end_session(sess, "agent stopping")
  end
  if self.main then rollout.wake(self.main) end
end

--- run(): join, drive rollouts until SIGINT/SIGTERM (or stop()), leave. Returns 0.
function A:run()
  self.main = rollout.current()
  if self.journal_dir then journal.mkdirs(self.journal_dir) end
  journal.mkdirs(self.dir .. "/bundles")
  local sig = rollout.spawn(function()
    local s = rollout.wait_signal("INT", "TERM")
    self:stop("SIG" .. s)
  end)
  local said
  while not self.stopping do
    if not self.session then
      local sess, err = self:begin_session()
      if not sess then
        if not said then said = true; self:say("cannot join (" .. tostring(err) .. "); retrying every second") end
        rollout.sleep(1)
      else
        said = false
      end
    else
      rollout.suspend(1)
    end
  end
  sig:cancel()
  return 0
end

-- ---- submit, list, ctl -------------------------------------------------------------------------

local function new_id(service)
  local s = tostring(service or "rollout"):gsub("[^%w%._%-]", "-")
  return string.format("%s-%s-%04x", s, os.date("!%Y%m%dT%H%M%S"), math.random(0, 0xffff))
end

--- submit(client, K, bundle, {id=, service=}) -> id | nil, err
function M.submit(c, K, b, opts)
  opts = opts or {}
  local id = opts.id or new_id(opts.service)
  if not M.valid_id(id) then return nil, "invalid rollout id '" .. tostring(id) .. "' (letters, digits, . _ -)" end
  local now = rollout.time()
  local ok, resp = c:txn({
    compare = { { key = K.spec(id), target = "CREATE", result = "EQUAL", create_revision = "0" } },
    success = {
      { request_put = { key = K.spec(id), value = json.encode(b) } },
      { request_put = { key = K.status(id), value = json.encode({ id = id, service = opts.service, state = "pending", updated = now }) } },
      { request_put = { key = K.active .. id, value = json.encode({ submitted_at = now }) } },
      { request_put = { key = K.index .. id,
        value = json.encode({ service = opts.service, submitted_at = now, submitted_by = b.submitted_by }) } },
    },
  })
  if ok == nil then return nil, resp end
  if not ok then return nil, "rollout '" .. id .. "' exists already" end
  return id
end

-- Read several single keys in one transaction (at most 64 per call).
local function get_many(c, keys)
  local out = {}
  for i = 1, #keys, 64 do
    local reqs = {}
    for j = i, math.min(#keys, i + 63) do reqs[#reqs + 1] = { request_range = { key = keys[j] } } end
    local ok, resp = c:txn({ success = reqs })
    if ok == nil then return nil, resp end
    for j, r in ipairs(resp) do
      local kv = r.kvs and r.kvs[1]
      if kv then out[keys[i + j - 1]] = kv.value end
    end
  end
  return out
end

--- list(client, K) -> {{id=, service=, owner=, state=, stage=, weights=, outcome=, ...}}, agents | nil, err
function M.list(c, K)
  local index, err = ids_under(c, K.index, true)
  if not index then return nil, err end
  local owners = ids_under(c, K.owners, true) or {}
  local agents = ids_under(c, K.agents, true) or {}
  local ids = {}
  for id in pairs(index) do ids[#ids + 1] = id end
  table.sort(ids)
  local keys = {}
  for _, id in ipairs(ids) do keys[#keys + 1] = K.status(id); keys[#keys + 1] = K.done(id) end
  local vals, gerr = get_many(c, keys)
  if not vals then return nil, gerr end
  local rows = {}
  for _, id in ipairs(ids) do
    local st = decode(vals[K.status(id)] or "") or {}
    local done = decode(vals[K.done(id)] or "")
    local own = owners[id] and decode(owners[id].value)
    local ix = decode(index[id].value) or {}
    rows[#rows + 1] = { id = id, service = st.service or ix.service, owner = own and own.agent, last_owner = st.agent,
      state = done and done.outcome or st.state, stage = st.stage, stage_index = st.stage_index, stages = st.stages,
      weights = st.weights, reason = done and done.reason or st.reason, updated = st.updated, submitted_at = ix.submitted_at,
      etcd_paused = st.etcd_paused }
  end
  local alist = {}
  for name, kv in pairs(agents) do
    local a = decode(kv.value) or {}
    local n = 0
    for _, o in pairs(owners) do local ov = decode(o.value); if ov and ov.agent == name then n = n + 1 end end
    alist[#alist + 1] = { name = name, host = a.host, pid = a.pid, since = a.since, rollouts = n }
  end
  table.sort(alist, function(x, y) return x.name < y.name end)
  return rows, alist
end

--- command(client, K, id, name, arg, who) -> ack key | nil, err   (queues it in etcd)
function M.command(c, K, id, name, arg, who)
  local key = string.format("%016d-%04x", math.floor(rollout.time() * 1000), math.random(0, 0xffff))
  local ok, resp = c:txn({
    compare = { { key = K.spec(id), target = "CREATE", result = "GREATER", create_revision = "0" } },
    success = {
      { request_put = { key = K.commands(id) .. key,
        value = json.encode({ command = name, arg = arg, who = who, time = rollout.time() }) } },
      { request_put = { key = K.inbox .. id, value = key } },
    },
  })
  if ok == nil then return nil, resp end
  if not ok then return nil, "no rollout '" .. id .. "'" end
  return K.acks(id) .. key
end

--- status(client, K, id) -> {status=, owner=, done=} | nil, err
function M.status(c, K, id)
  local vals, err = get_many(c, { K.spec(id), K.status(id), K.owner(id), K.done(id) })
  if not vals then return nil, err end
  if not vals[K.spec(id)] then return nil, "no rollout '" .. id .. "'" end
  return { status = decode(vals[K.status(id)] or "") or {}, owner = decode(vals[K.owner(id)] or ""),
    done = decode(vals[K.done(id)] or "") }
end

local CTL_USAGE = "rollout ctl --etcd URL [--prefix P] [--wait 10s] [--json] ROLLOUT "
  .. "status|pause|resume|promote|promote_full|abort [REASON]|retry|set_weight N"
local CTL_COMMANDS = { status = true, pause = true, resume = true, promote = true, promote_full = true, abort = true,
  retry = true, set_weight = true }

local function status_line(id, s)
  local st = s.status
  local w = st.weights and string.format("%d/%d", st.weights.baseline or 0, st.weights.canary or 0) or "-"
  local owner = s.owner and s.owner.agent or ("none" .. (st.agent and (" (last: " .. st.agent .. ")") or ""))
  local state = s.done and s.done.outcome or st.state or "?"
  local reason = (s.done and s.done.reason) or st.reason
  return string.format("%s: %s%s, stage %s (%s/%s), weights baseline/canary %s, owner %s", id, state,
    reason and (" (" .. tostring(reason) .. ")") or "", tostring(st.stage or "-"), tostring(st.stage_index or "-"),
    tostring(st.stages or "-"), w, owner)
end

--- ctl_main(args) -> exit code: `rollout ctl --etcd URL ROLLOUT COMMAND [ARG]`.
--- status reads etcd; the others are queued for the owner, which applies each exactly once
--- and acknowledges it. Exit 0 acknowledged (or status shown), 3 refused by the engine or
--- not acknowledged within --wait (it stays queued for the owner), 2 usage, 1 etcd error.
function M.ctl_main(argv)
  local args = require("rollout.args")
  local opts, pos = args.parse(argv, { etcd = "value", prefix = "value", wait = "value", json = "flag", who = "value" })
  if not opts then return args.usage_error("ctl", pos, CTL_USAGE) end
  if not opts.etcd then return args.usage_error("ctl", "--etcd URL is required in fleet mode", CTL_USAGE) end
  local id, name, arg = pos[1], pos[2], pos[3]
  if not id or not name or #pos > 3 then return args.usage_error("ctl", "expected ROLLOUT COMMAND [ARG]", CTL_USAGE) end
  if not CTL_COMMANDS[name] then return args.usage_error("ctl", "unknown command '" .. name .. "'", CTL_USAGE) end
  local c = etcd.new({ url = opts.etcd, timeout = 5 })
  local K = M.keys(opts.prefix)
  local s, err = M.status(c, K, id)
  if not s then io.stderr:write("rollout ctl: ", err, "\n"); return err:match("^no rollout") and 2 or 1 end
  if name == "status" then
    if opts.json then print(json.encode(s, { non_finite = "null" })) else print(status_line(id, s)) end
    return 0
  end
  if s.done then
    io.stderr:write("rollout ctl: ", id, " has ended (", tostring(s.done.outcome), ")\n")
    return 3
  end
  local who = opts.who or os.getenv("SUDO_USER") or os.getenv("USER") or "operator"
  local ack_key, cerr = M.command(c, K, id, name, arg, who)
  if not ack_key then io.stderr:write("rollout ctl: ", cerr, "\n"); return 1 end
  local wait = require("rollout.units").duration(opts.wait or 10)
  local deadline = rollout.now() + wait
  while rollout.now() < deadline do
    local v = c:get(ack_key)
    if v then
      local ack = decode(v) or {}
      if opts.json then print(json.encode(ack, { non_finite = "null" })) end
      if ack.ok then
        if not opts.json then print(string.format("%s: %s acknowledged by %s", id, name, tostring(ack.agent))) end
        return 0
      end
      io.stderr:write(string.format("rollout ctl: %s: %s refused by %s: %s\n", id, name, tostring(ack.agent), tostring(ack.error)))
      return 3
    end
    rollout.sleep(0.1)
  end
  io.stderr:write(string.format("rollout ctl: %s: %s queued, not acknowledged within %s s (owner: %s); "
    .. "the owner applies it when it reads it\n",
    id, name, tostring(wait), s.owner and s.owner.agent or "none"))
  return 3
end

return M

-- rollout.fleet.runner: one rollout an agent owns — build it from its bundle, replay its
-- journal from etcd, run the engine with every router action fenced by the owner's token,
-- replicate each event in a guarded transaction, send the playbook's notifications
-- (rollout.assemble's sinks, as `rollout run` does), and let go of it at the end.
-- Error policy: etcd failures inside a rollout pause it (traffic stays where it is) and are
-- retried; losing ownership raises "fleet: ... not the owner" to stop the engine where it
-- stands; a bundle that does not load or build ends the rollout as failed, journaled.
local rollout = require("rollout")
local json = require("rollout.json")
local journal = require("rollout.journal")
local keys = require("rollout.fleet.keys")
local wire = require("rollout.fleet.wire")
local bundle = require("rollout.fleet.bundle")
local assemble = require("rollout.assemble")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local scenarios = require("rollout.sim.scenario")
local fleet_sim = require("rollout.fleet_sim")

local M = {}

local R = {}
R.__index = R

local function new_runner(agent, id, token)
  return setmetatable({ agent = agent, id = id, token = token, K = agent.K, c = agent.c,
    seq = 0, queue = {}, waiters = {}, applied = {}, weight_sinks = {} }, R)
end
M.new = new_runner

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
  local line = wire.encode(ev)
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
  elseif ev.event == "outcome" and journal.TERMINAL[ev.outcome] then
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
  if self.writer and self.writer.file then self.writer.file:append(wire.encode(ev) .. "\n") end
  self.agent:print(ev)
  self.queue = {}
  if self.task and self.task ~= rollout.current() then self.task:cancel("ownership lost: " .. why) end
  local w = self.waiters
  self.waiters = {}
  for _, t in ipairs(w) do rollout.wake(t) end
  self:close()
end

-- Let go of everything. Notifications still queued are dropped, with no event: only a
-- rollout that ended and is released drains them (R:release), while it is still ours.
function R:close()
  assemble.close(self.sources)
  self.sources = {}
  if self.sinks then
    local dropped = self.sinks:drop()
    if dropped > 0 then self.agent:say(self.id .. ": " .. dropped .. " notification(s) not sent (" .. tostring(self.lost) .. ")") end
    self.sinks:close()
    self.sinks = nil
  end
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
  local function forward(kind, fields) if self.engine then self.engine:emit(kind, fields) end end
  local parts = {}
  if scenario_path then
    local sc, errs = scenarios.load(scenario_path)
    if not sc then return nil, "scenario: " .. playbook.format_error(errs[1]) end
    local src = fleet_sim.source(sc, { clock = function() return self.engine and self.engine:elapsed() or 0 end })
    parts.sources = { src }
    self.weight_sinks = { src }
  end
  if b.simulated_router then parts.router = fleet_sim.router() end
  return assemble.build(pb, forward, parts)
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
  local events, last = self:persist("reading the journal", function() return keys.read_events(c, K, id) end)
  self.seq = last
  local b = spec and keys.decode(spec)
  local fail
  local pb, router, sources, resume, why
  if not b then fail = "error:spec" else
    local path, config, scenario = bundle.materialize(b, agent.dir .. "/bundles/" .. id)
    if not path then fail = "error:bundle"; why = config
    else
      local errs
      -- the bundle is code from whoever can write the prefix: it loads in the playbook
      -- sandbox under its load budget, while this agent's loop (leases, other rollouts) goes
      -- on; a playbook that fails or exceeds it is rejected, the agent carries on
      pb, errs = playbook.load(path, { sets = b.sets, config = config })
      if not pb then fail = "rejected:playbook"; why = playbook.format_error(errs[1])
      else
        router, sources = self:build(pb, b, scenario)
        wire.forget_redactions() -- secrets this playbook registered apply from now on
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
  -- every event recorded (locally and to etcd) first, then to the playbook's notifications
  local sinks = assemble.sinks(pb, { who = agent.name, journal = function(after)
    return function(ev, eng)
      local ok, err = self:sink(ev)
      after(ev, eng)
      return ok, err
    end
  end })
  self.sinks = sinks
  for _, w in ipairs(sinks.warnings) do agent:say(id .. ": warning: " .. w) end
  local e = engine.new(pb, { router = self.router, sources = sources, interactive = true,
    who = agent.name, resume = resume, emit = sinks.emit })
  self.engine = e
  sinks:bind(e)
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
  -- queued notifications get their time, their notification_sent/failed events journaled
  if self.sinks then self.sinks:drain(10) end
  if self.lost then return end
  self:fleet_event_sync("owner_released", { why = why }, {
    { request_delete_range = { key = self.K.owner(self.id) } },
    { request_delete_range = { key = self.K.owners .. self.id } } })
  if self.agent.owned[self.id] == self then self.agent.owned[self.id] = nil end
  self.lost = "released"
  self:close()
end

function R:close_sources_only()
  assemble.close(self.sources)
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
  local kvs = keys.range(self.c, K.commands(id))
  if not kvs then return end
  for _, kv in ipairs(kvs) do
    if self.lost or not self.engine then return end
    if not self.applied[kv.key] then
      self.applied[kv.key] = true
      local cmd = keys.decode(kv.value) or {}
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
        if err == "status" then answer.ok, answer.status = true, keys.decode(self:status_value({ event = "status" }))
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

return M

-- rollout.fleet.agent: `rollout agent` — one lease for itself and every rollout it drives,
-- taking unowned rollouts, taking over those of agents that died, applying commands, and
-- pausing its rollouts while etcd cannot be reached.
-- Error policy: bad options raise; etcd failures are survived (retried, rollouts paused);
-- a rollout that fails to start is quarantined and the agent carries on.
local rollout = require("rollout")
local json = require("rollout.json")
local etcd = require("rollout.etcd")
local fs = require("rollout.fs")
local journal = require("rollout.journal")
local keys = require("rollout.fleet.keys")
local wire = require("rollout.fleet.wire")
local runner = require("rollout.fleet.runner")

local M = {}

local A = {}
A.__index = A

--- agent{etcd = url, name=, prefix=, ttl = 10, scan = ttl/4, poll = 1, dir=, journal = true,
---       json = false, verbose = false, max = n, out = io.stdout} -> agent
function M.agent(opts)
  local ttl = math.max(2, math.floor((opts.ttl or 10) + 0.5))
  local name = opts.name or (keys.hostname() .. "-" .. fs.getpid())
  local self = setmetatable({
    name = name, K = keys.keys(opts.prefix), ttl = ttl,
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
    self.out:write(line or wire.encode(ev), "\n")
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
  local val = json.encode({ agent = self.name, lease = sess.lease, host = keys.hostname(), pid = fs.getpid(), since = rollout.time() })
  local ok, _, rev = self.c:txn({
    compare = { { key = K.owner(id), target = "CREATE", result = "EQUAL", create_revision = "0" },
                { key = K.active .. id, target = "CREATE", result = "GREATER", create_revision = "0" } },
    success = { { request_put = { key = K.owner(id), value = val, lease = sess.lease } },
                { request_put = { key = K.owners .. id, value = val, lease = sess.lease } } },
  })
  if not ok or sess.over then return false end
  local r = runner.new(self, id, rev)
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
  local active = keys.ids_under(self.c, self.K.active)
  if not active or sess.over then return end
  local owners = keys.ids_under(self.c, self.K.owners) or {}
  local agents = keys.ids_under(self.c, self.K.agents) or {}
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
  local inbox = keys.ids_under(self.c, self.K.inbox, true)
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
  local ok, perr = self.c:put(self.K.agents .. self.name, json.encode({ name = self.name, host = keys.hostname(), pid = fs.getpid(),
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

return M

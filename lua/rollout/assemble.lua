-- rollout.assemble: build what a validated playbook names — its router, its metric
-- sources, and the sinks its events go to (notifications, /metrics) — with the adapters'
-- events forwarded to the engine's emit(kind, fields), and close them again. One place for
-- `rollout run`, `check`, `simulate`, `repl` and fleet agents, so they cannot drift apart.
--   router(pb, emit) -> router | nil, err
--   source(pb, i, emit) -> source | nil, err   pb.sources[i] alone (`rollout check` asks each)
--   sources(pb, emit) -> {source, ...} | nil, err   (at least one with signals)
--   build(pb, emit, parts) -> router, sources | nil, err
--     parts (optional) = {router =, sources = {...}, extra_sources = {...}}: parts built
--     elsewhere (the simulator's router and synthetic source, a fleet bundle's) used instead
--     of the playbook's; extra_sources are appended to the sources either way
--   close(sources)   stop every source's background work (the probe's tasks); the one
--                    place a command lets go of what build made
--   sinks(pb, opts) -> sinks | nil, err   where a rollout's events go, after its journal:
--     opts = {who =, journal = fn(after) -> emit (wraps the rest: the event is recorded
--     first, as writer:sink(after) does), before = {fn(ev, engine), ...} (the printer, a
--     control socket's record: called first, in order), metrics_listen = "HOST:PORT"}
--     sinks.emit(ev, engine)   the engine's env.emit: journal, before..., /metrics, notifier
--     sinks:bind(engine)       after engine.new (the /metrics collector reads the playbook)
--     sinks.warnings           {"notifications: ...", ...}: secrets that cannot be read now
--     sinks.metrics_url        the /metrics URL when metrics_listen was given
--     sinks:drain(timeout)     queued notifications get `timeout` s (default 10) to go out;
--                              their notification_sent/failed events still reach emit, so
--                              call it while the journal is open
--     sinks:drop()             let queued notifications go at once, with no event (the
--                              rollout is no longer ours to journal: a fleet agent that
--                              lost it); returns how many
--     sinks:close(linger, say) drain, then keep /metrics up `linger` s (say(msg) tells
--                              why), then close it; after the journal closes and the lock
--                              is released, so a lingering endpoint holds nobody up
-- emit(kind, fields): kind is "router" or "source"; fields carry the adapter's own `kind`.
-- Error policy: a router or source that cannot be constructed (bad options the validator
-- could not see, a missing socket path) returns nil, err naming it, and what was already
-- built is closed; a /metrics address that cannot be bound returns nil, err; nothing
-- raises. close() ignores a source's error on closing; the sinks' drain and close ignore
-- a notifier's or endpoint's error.
local routers = require("rollout.routers")
local sources_mod = require("rollout.sources")
local notify = require("rollout.notify")
local metrics_endpoint = require("rollout.metrics_endpoint")

local M = {}

-- An adapter's (kind, fields) as the fields of one engine event: fields + {kind = kind}.
local function as_event(kind, fields)
  local ev = {}
  for k, v in pairs(fields or {}) do ev[k] = v end
  ev.kind = kind
  return ev
end

function M.router(pb, emit)
  if not pb.router then return nil, "the playbook names no router (router = {type = ...})" end
  local ok, router = pcall(routers.new, pb.router, { emit = function(kind, fields) if emit then emit("router", as_event(kind, fields)) end end })
  if not ok then return nil, tostring(router) end
  return router
end

local function source_ctx(pb, emit)
  return { versions = pb.versions, service = pb.service, emit = function(kind, fields)
    if emit then emit("source", as_event(kind, fields)) end
  end }
end

local function new_source(cfg, ctx)
  local ok, src = pcall(sources_mod.new, cfg, ctx)
  if not ok then return nil, tostring(src) end
  return src
end

function M.source(pb, i, emit)
  return new_source((pb.sources or {})[i], source_ctx(pb, emit))
end

function M.close(sources)
  for _, s in ipairs(sources or {}) do if s.close then pcall(s.close, s) end end
end

function M.sources(pb, emit)
  local list = {}
  local ctx = source_ctx(pb, emit)
  for i, cfg in ipairs(pb.sources or {}) do
    local src, err = new_source(cfg, ctx)
    if not src then
      M.close(list)
      return nil, "sources[" .. i .. "]: " .. err
    end
    list[#list + 1] = src
  end
  for _, s in ipairs(list) do if s.signals then return list end end
  M.close(list)
  return nil, "the playbook has no metric source with signals (scrape, prometheus or probe)"
end

function M.build(pb, emit, parts)
  parts = parts or {}
  local router = parts.router
  if not router then
    local err
    router, err = M.router(pb, emit)
    if not router then return nil, err end
  end
  local list = parts.sources
  if list then
    list = { table.unpack(list) }
  else
    local serr
    list, serr = M.sources(pb, emit)
    if not list then return nil, serr end
  end
  for _, extra in ipairs(parts.extra_sources or {}) do list[#list + 1] = extra end
  return router, list
end

-- ---- sinks ----------------------------------------------------------------------------

local Sinks = {}
Sinks.__index = Sinks

function M.sinks(pb, opts)
  opts = opts or {}
  local self = setmetatable({ notifier = notify.new(pb, { who = opts.who }), warnings = {} }, Sinks)
  if opts.metrics_listen then
    local ep, err = metrics_endpoint.start(opts.metrics_listen)
    if not ep then return nil, err end
    self.metrics, self.metrics_url = ep, ep.url
  end
  for _, p in ipairs(self.notifier:problems()) do self.warnings[#self.warnings + 1] = "notifications: " .. p end
  local before, metrics, notifier = opts.before or {}, self.metrics, self.notifier
  local function fanout(ev, engine)
    for _, f in ipairs(before) do f(ev, engine) end
    if metrics then metrics.emit(ev, engine) end
    notifier.emit(ev, engine)
  end
  self.emit = opts.journal and opts.journal(fanout) or fanout
  return self
end

function Sinks:bind(engine)
  if self.metrics then self.metrics:bind(engine) end
  return self
end

function Sinks:drain(timeout)
  if self.drained then return end
  self.drained = true
  pcall(self.notifier.close, self.notifier, timeout or 10)
end

function Sinks:drop() -- also while a drain waits (the rollout was lost meanwhile): the drain ends
  self.drained = true
  local ok, n = pcall(self.notifier.drop, self.notifier)
  return ok and n or 0
end

function Sinks:close(linger, say)
  self:drain()
  local ep = self.metrics
  if not ep then return end
  self.metrics = nil
  if linger and linger > 0 then -- after an outcome: one more scrape sees it
    if say then say(string.format("/metrics stays up %gs for a last scrape", linger)) end
    pcall(ep.linger, ep, linger)
  end
  pcall(ep.close, ep)
end

return M

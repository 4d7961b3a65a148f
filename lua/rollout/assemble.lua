-- rollout.assemble: build what a validated playbook names — its router and its metric
-- sources — with their events forwarded to the engine's emit(kind, fields), and close them
-- again. One place for `rollout run`, `check`, `simulate`, `repl` and fleet agents, so
-- they cannot drift apart.
--   router(pb, emit) -> router | nil, err
--   source(pb, i, emit) -> source | nil, err   pb.sources[i] alone (`rollout check` asks each)
--   sources(pb, emit) -> {source, ...} | nil, err   (at least one with signals)
--   build(pb, emit, parts) -> router, sources | nil, err
--     parts (optional) = {router =, sources = {...}, extra_sources = {...}}: parts built
--     elsewhere (the simulator's router and synthetic source, a fleet bundle's) used instead
--     of the playbook's; extra_sources are appended to the sources either way
--   close(sources)   stop every source's background work (the probe's tasks); the one
--                    place a command lets go of what build made
-- emit(kind, fields): kind is "router" or "source"; fields carry the adapter's own `kind`.
-- Error policy: a router or source that cannot be constructed (bad options the validator
-- could not see, a missing socket path) returns nil, err naming it, and what was already
-- built is closed; nothing raises. close() ignores a source's error on closing.
local routers = require("rollout.routers")
local sources_mod = require("rollout.sources")

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

return M

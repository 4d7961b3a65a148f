-- rollout.assemble: build what a validated playbook names — its router and its metric
-- sources — with their events forwarded to the engine's emit(kind, fields). One place for
-- `rollout run`, `repl` and fleet agents, so they cannot drift apart.
--   router(pb, emit) -> router | nil, err
--   sources(pb, emit) -> {source, ...} | nil, err   (at least one with signals)
--   build(pb, emit) -> router, sources | nil, err
-- emit(kind, fields): kind is "router" or "source"; fields carry the adapter's own `kind`.
-- Error policy: a router or source that cannot be constructed (bad options the validator
-- could not see, a missing socket path) returns nil, err naming it; nothing raises.
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

function M.sources(pb, emit)
  local list = {}
  local ctx = { versions = pb.versions, service = pb.service, emit = function(kind, fields)
    if emit then emit("source", as_event(kind, fields)) end
  end }
  for i, cfg in ipairs(pb.sources or {}) do
    local ok, src = pcall(sources_mod.new, cfg, ctx)
    if not ok then return nil, "sources[" .. i .. "]: " .. tostring(src) end
    list[#list + 1] = src
  end
  for _, s in ipairs(list) do if s.signals then return list end end
  return nil, "the playbook has no metric source with signals (scrape, prometheus or probe)"
end

function M.build(pb, emit)
  local router, err = M.router(pb, emit)
  if not router then return nil, err end
  local list, serr = M.sources(pb, emit)
  if not list then return nil, serr end
  return router, list
end

return M

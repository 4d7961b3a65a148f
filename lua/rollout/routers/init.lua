-- rollout.routers: pick a router by cfg.type and build it.
--
--   local routers = require("rollout.routers")
--   local errs = routers.validate(cfg)            -- {"backend: required string", ...}
--   local errs = routers.check(cfg)               -- {{path = {"backend"}, message = "required string"}, ...}
--   local r = routers.new(cfg, {emit = function(kind, fields) ... end})
--
-- Every router has the same methods (see common.lua and docs/routers.md):
--   r:set_weights{baseline=, canary=} [, {attempts=, deadline=, backoff=}] -> true | nil, err
--   r:get_weights() -> {baseline=, canary=}, detail | nil, err
--   r:header_override{name=, value=} | false -> true | nil, err
--   r:verify() -> true | nil, err          re-applies the last confirmed weights if lost
--   r:rollback([deadline=300]) -> true | nil, err   baseline 100 %, retried until the deadline
--   r:check() -> {{name=, ok=, detail=}, ...}   moves no traffic
--   r:describe() -> table
-- Events through opts.emit(kind, fields): weight_requested, weight_confirmed,
-- weight_mismatch, router_error, weights_reapplied, reload, header_override.
--
-- Error policy: check() and validate() report config errors ({path, message} or "key:
-- message") and never raise; new() raises listing them all (a config error); a router's
-- operational failures return nil, err.
local schema = require("rollout.schema")

local M = {}

M.types = { haproxy = true, nginx = true, istio = true, exec = true }

local function type_names()
  local t = {}
  for k in pairs(M.types) do t[#t + 1] = k end
  table.sort(t)
  return table.concat(t, ", ")
end

--- The module for a router type: rollout.routers.<type>.
function M.module(kind)
  if not M.types[kind] then
    return nil, "type: unknown router type '" .. tostring(kind) .. "' (one of " .. type_names() .. ")"
  end
  return require("rollout.routers." .. kind) -- lazy: only the router type a playbook names is loaded
end

--- Problems with a router table as rollout.schema errors {path = {...}, message =}, the
--- paths relative to it. No side effects.
function M.check(cfg)
  local function one(path, message) return { { path = path, message = message } } end
  if type(cfg) ~= "table" then return one({}, "router: expected a table, got " .. type(cfg)) end
  if cfg.type == nil then return one({ "type" }, "required string (one of " .. type_names() .. ")") end
  if type(cfg.type) ~= "string" then return one({ "type" }, "expected a string, got " .. type(cfg.type)) end
  if not M.types[cfg.type] then
    return one({ "type" }, "unknown router type '" .. cfg.type .. "' (one of " .. type_names() .. ")")
  end
  return M.module(cfg.type).check(cfg)
end

--- Problems with a router table, each "key: message" relative to it. No side effects.
function M.validate(cfg) return schema.strings(M.check(cfg), true) end

--- Build the router cfg.type names. Raises on an invalid config (listing every problem).
function M.new(cfg, opts)
  local errs = M.validate(cfg)
  if #errs > 0 then error("routers: invalid config:\n  " .. table.concat(errs, "\n  "), 2) end
  return M.module(cfg.type).new(cfg, opts)
end

return M

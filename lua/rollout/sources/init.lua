-- rollout.sources: where signals and alerts come from. One module per type:
--   scrape        GET each version's /metrics (or HAProxy's exporter); counter deltas
--   prometheus    PromQL instant queries per version and window
--   probe         synthetic requests at a fixed rate, and health checks
--   alertmanager  active alerts (alerts() only; no signals)
--   kubernetes    pod restarts per version from the Kubernetes API (restarts only)
--
-- The engine's interface, the same for every type:
--   sources.validate(cfg) -> {"key: message", ...}    no side effects
--   sources.check(cfg) -> {{path = {...}, message =}, ...}   the same, structured (rollout.schema)
--   sources.new(cfg, ctx) -> src                       raises on a bad config
--     ctx = {versions = {baseline = {name=, version=, url=, metrics=, health=}, canary = {...}},
--            service = "name", emit = function(kind, fields) end}
--   src:tick(now) -> true | nil, err      once per interval: collect (a failure is a source
--                                         error of that interval, never a value)
--   src:signals(now, window) -> {baseline = S, canary = S} | nil, err
--     S = {requests=, rps=, error_rate=, p50=, p95=, p99=, health=, cpu=, memory=, disk=,
--          restarts=}; nil means no data, never 0
--   src:alerts() -> {{name=, severity=, labels=}, ...} | nil, err   (alertmanager only)
--   src:close()                           stop background work (the probe's tasks)
--   src.provides = {error_rate = true, p99 = true, ...}: the signals it can answer; the
--   others are left out of its sets (nil), so merged sources never shadow each other
--   src.name                              cfg.name, else the type
--   src.synthetic = true                  its requests are its own (the probe): it adds
--                                         evidence, never replaces a real source's traffic
--                                         signals (rollout.safety)
--   src:check_targets() -> true | nil, err   optional: what `rollout check` and the
--                                         pre-flight ask beyond a tick (the probe's URLs)
-- The alertmanager source has alerts() and no signals method.
--
-- Error policy: check() and validate() report config errors ({path, message} or "key:
-- message") and never raise; new() raises listing them all (a config error); a source's
-- operational failures (tick, signals, alerts) return nil, err: no data, never a value.
local schema = require("rollout.schema")

local M = {}

M.TYPES = { "scrape", "prometheus", "probe", "alertmanager", "kubernetes" }

-- The module for cfg.type, or nil, path, message.
local function module_for(cfg)
  if type(cfg) ~= "table" then return nil, {}, "source: expected a table, got " .. type(cfg) end
  if cfg.type == nil then return nil, { "type" }, "required string (" .. table.concat(M.TYPES, ", ") .. ")" end
  for _, t in ipairs(M.TYPES) do
    -- lazy: only the source types a playbook names are loaded
    if cfg.type == t then return require("rollout.sources." .. t) end
  end
  return nil, { "type" }, "unknown source type \"" .. tostring(cfg.type) .. "\" (" .. table.concat(M.TYPES, ", ") .. ")"
end

--- Problems with a source config as rollout.schema errors {path = {...}, message =}
--- (paths relative to the source table); empty when fine.
function M.check(cfg)
  local mod, path, msg = module_for(cfg)
  if not mod then return { { path = path, message = msg } } end
  return mod.check(cfg)
end

--- Problems with a source config as "key: message" strings; empty when fine.
function M.validate(cfg) return schema.strings(M.check(cfg)) end

--- A source object for cfg. Raises (a configuration error) listing every problem.
function M.new(cfg, ctx)
  local mod, path, msg = module_for(cfg)
  if not mod then error("source: " .. schema.strings({ { path = path, message = msg } })[1], 2) end
  return mod.new(cfg, ctx)
end

return M

-- rollout.notify_options: the options of a playbook's `notifications` list, declared for
-- rollout.schema: the three notifier types (webhook, slack, deployment_api), their fields,
-- and the events each sends by default. rollout.playbook checks a playbook's list with it;
-- rollout.notify (which delivers) re-exports check, validate and DEFAULT_EVENTS. It sits
-- in the policy-input layer (docs/architecture.md) with the playbook's other option
-- declarations, below the notifier that delivers.
--
-- Error policy: check() and validate() return the configuration errors they find (never
-- raise); nothing here acts.
local schema = require("rollout.schema")

local M = {}

-- Events each type sends unless `events` says otherwise. "*" means every event.
M.DEFAULT_EVENTS = {
  webhook = { "rollout_started", "stage_entered", "gate", "trigger_fired", "rollback_started", "rolled_back",
    "paused", "resumed", "promoting", "outcome", "hook_failed", "weight_failed", "rollback_unconfirmed" },
  slack = { "rollout_started", "gate", "trigger_fired", "rollback_started", "paused", "resumed", "outcome",
    "hook_failed", "rollback_unconfirmed" },
  deployment_api = { "rollout_started", "rolled_back", "outcome" },
}

-- rollout.schema's base kinds (durations > 0, `headers` refuse CR/LF); counts are
-- integers >= 0; `events` is the notifiers' own kind.
local KINDS = schema.kinds()
function KINDS.events(v)
  if type(v) ~= "table" then return "expected a list of event names, got " .. type(v) end
  for i, x in pairs(v) do
    if math.type(i) ~= "integer" or type(x) ~= "string" then return "expected a list of event names" end
  end
end

local function http_url(v) if not v:match("^https?://") then return "must start with http:// or https://" end end

local COMMON = {
  type = { kind = "string" }, name = { kind = "string" }, events = { kind = "events" },
  timeout = { kind = "duration" }, retries = { kind = "integer", min = 0 }, backoff = { kind = "duration" },
  max_backoff = { kind = "duration" }, headers = { kind = "headers" }, queue_limit = { kind = "integer", min = 0 },
  url = { kind = "string", check = http_url }, url_env = { kind = "string" }, url_file = { kind = "string" },
  token = { kind = "string" }, token_env = { kind = "string" }, token_file = { kind = "string" },
}
local EXTRA = {
  webhook = { method = { kind = "string", enum = { "POST", "PUT" } } },
  slack = { channel = { kind = "string" }, username = { kind = "string" }, icon_emoji = { kind = "string" } },
  deployment_api = {},
}
for _, k in ipairs({ "rollback_url", "rollback_url_env", "rollback_url_file", "finish_url", "finish_url_env",
  "finish_url_file", "deployment_type", "started_by" }) do
  EXTRA.deployment_api[k] = { kind = "string" }
end
-- each type's fields: the common ones and its own
local FIELDS = {}
for t, extra in pairs(EXTRA) do
  FIELDS[t] = {}
  for k, r in pairs(COMMON) do FIELDS[t][k] = r end
  for k, r in pairs(extra) do FIELDS[t][k] = r end
end

local function secret_count(cfg, base)
  local n = 0
  for _, suffix in ipairs({ "", "_env", "_file" }) do if cfg[base .. suffix] ~= nil then n = n + 1 end end
  return n
end

--- check(v) -> list of rollout.schema errors {path = {...}, message = "..."} (paths
--- relative to `notifications`; empty when v is a valid notifications list)
function M.check(v)
  local errs = {}
  local function err(path, msg) errs[#errs + 1] = { path = path, message = msg } end
  if type(v) ~= "table" then err({}, "expected a list of notifiers, got " .. type(v)); return errs end
  if v.type ~= nil then v = { v } end
  local names = {}
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then err({ k }, "expected a list (1..n); this key does not belong") end
  end
  for i, cfg in ipairs(v) do
    if type(cfg) ~= "table" then
      err({ i }, "expected a table, got " .. type(cfg))
    elseif type(cfg.type) ~= "string" or not EXTRA[cfg.type] then
      err({ i, "type" }, "must be one of webhook, slack, deployment_api (got " .. tostring(cfg.type) .. ")")
    else
      schema.check(cfg, FIELDS[cfg.type], { path = { i }, kinds = KINDS, known = true, errs = errs })
      local n = secret_count(cfg, "url")
      if n == 0 then err({ i, "url" }, "required (or url_env / url_file)")
      elseif n > 1 then err({ i, "url" }, "give one of url, url_env, url_file") end
      if secret_count(cfg, "token") > 1 then err({ i, "token" }, "give one of token, token_env, token_file") end
      if cfg.type == "deployment_api" and secret_count(cfg, "rollback_url") > 1 then
        err({ i, "rollback_url" }, "give one of rollback_url, rollback_url_env, rollback_url_file")
      end
      local name = type(cfg.name) == "string" and cfg.name or nil
      if name then
        if names[name] then err({ i, "name" }, "duplicate notifier name '" .. name .. "'") end
        names[name] = true
      end
    end
  end
  return errs
end

--- validate(v) -> list of "key: message" strings (key relative to `notifications`, e.g. "2.url")
function M.validate(v)
  local out = {}
  for _, e in ipairs(M.check(v)) do
    local parts = {}
    for _, p in ipairs(e.path) do parts[#parts + 1] = tostring(p) end
    out[#out + 1] = (#parts > 0 and table.concat(parts, ".") .. ": " or "") .. e.message
  end
  return out
end

return M

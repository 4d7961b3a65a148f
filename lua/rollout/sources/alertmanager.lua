-- rollout.sources.alertmanager: active alerts from Alertmanager's v2 API, for triggers
-- such as the runbook's "critical alert fired".
--
--   GET /api/v2/alerts?active=true&silenced=false&inhibited=false&filter=<m>&filter=<m>
-- with one `filter` per matcher (they AND), by default severity="critical" and
-- service="{{service}}". alerts() answers the alerts whose status.state is "active" as
-- {name = labels.alertname, severity = labels.severity, labels = {...}, starts_at = "...",
-- fingerprint = "..."}, sorted by name then fingerprint; resolved, silenced and inhibited
-- alerts are not in it.
--
-- Config (keys relative to the source table):
--   type = "alertmanager", name =
--   url = "http://127.0.0.1:9093"
--   matchers = {'severity="critical"', 'service="{{service}}"'}  Alertmanager filter syntax;
--              {{service}} is ctx.service; an empty list matches every active alert
--   timeout = "5s", headers = {...}, bearer = "..."
--
-- This source has no signals (and no signals method). tick(now) fetches the alerts (so an
-- unreachable Alertmanager is a source error of that interval) and keeps them as
-- src.last_alerts; alerts(now) with the same `now` answers that list without a second GET.
--
-- Error policy: bad config raises from new(); transport failures, non-2xx statuses and
-- malformed JSON return nil, err.
local http = require("rollout.http")
local json = require("rollout.json")
local units = require("rollout.units")
local common = require("rollout.sources.common")
local schema = require("rollout.schema")

local M = {}

local function check_matchers(v)
  for i, m in ipairs(v) do
    if type(m) ~= "string" then return schema.at(i, "expected a string such as 'severity=\"critical\"'") end
    local e = common.check_template(m, { service = true })
    if e then return schema.at(i, e) end
    if not m:match("^%s*[%a_][%w_]*%s*[=!][=~]?%s*.+$") then
      return schema.at(i, "expected label=\"value\" (or !=, =~, !~), got \"" .. m .. "\"")
    end
  end
  for k in pairs(v) do
    if math.type(k) ~= "integer" then return "expected a list of matcher strings" end
  end
end

local SCHEMA = common.base_schema("alertmanager")
for k, rule in pairs({
  url = { kind = "url", required = true, what = "URL of Alertmanager (http://host:9093)" },
  matchers = { kind = "table", check = check_matchers },
  timeout = { kind = "duration" },
  headers = { kind = "headers" },
  bearer = { kind = "string", nonempty = true },
}) do SCHEMA[k] = rule end

--- Problems with cfg as "key: message" strings; empty when fine. No side effects.
function M.check(cfg) return common.check(cfg, SCHEMA) end
function M.validate(cfg) return common.strings(M.check(cfg)) end

local A = {}
A.__index = A

--- new(cfg, ctx) -> source. Raises on a bad config (every problem listed).
function M.new(cfg, ctx)
  common.assert_valid("alertmanager", M.validate(cfg), 2)
  local self = setmetatable({
    cfg = cfg, ctx = ctx or {}, name = cfg.name or "alertmanager", provides = {},
    base = cfg.url:gsub("/+$", ""),
    timeout = units.duration(cfg.timeout or 5),
    matchers = {},
  }, A)
  local vars = { service = self.ctx.service or "" }
  for i, m in ipairs(cfg.matchers or { 'severity="critical"', 'service="{{service}}"' }) do
    self.matchers[i] = common.expand(m, vars)
  end
  return self
end

--- The request URL (for messages and tests).
function A:url()
  return self.base .. "/api/v2/alerts?" .. http.encode_query {
    active = "true", silenced = "false", inhibited = "false",
    filter = #self.matchers > 0 and self.matchers or nil,
  }
end

--- alerts([now]) -> list of active alerts {name=, severity=, labels=, starts_at=,
--- fingerprint=} | nil, err. With the `now` of this interval's tick, the list tick fetched.
function A:alerts(now)
  if now ~= nil and self.fetched_at == now and self.last_alerts then return self.last_alerts end
  local url = self:url()
  local resp, err = http.get(url, { timeout = self.timeout, headers = self.cfg.headers, bearer = self.cfg.bearer })
  if not resp then return nil, "alertmanager: " .. err end
  if resp.status < 200 or resp.status > 299 then
    return nil, string.format("alertmanager: HTTP %d from %s: %s", resp.status, self.base,
      (resp.body:sub(1, 120):gsub("%s+", " ")))
  end
  local doc, jerr = json.decode(resp.body)
  if type(doc) ~= "table" then
    return nil, "alertmanager: malformed response from " .. self.base .. ": " .. tostring(jerr or "not a list")
  end
  local out = {}
  for _, a in ipairs(doc) do
    local state = type(a) == "table" and (type(a.status) == "table" and a.status.state or "active")
    if state == "active" and type(a.labels) == "table" then
      out[#out + 1] = { name = a.labels.alertname, severity = a.labels.severity, labels = a.labels,
        starts_at = a.startsAt, fingerprint = a.fingerprint }
    end
  end
  table.sort(out, function(x, y)
    if (x.name or "") ~= (y.name or "") then return (x.name or "") < (y.name or "") end
    return (x.fingerprint or "") < (y.fingerprint or "")
  end)
  return out
end

--- tick(now) -> true | nil, err: fetch the alerts into src.last_alerts.
function A:tick(now)
  local list, err = self:alerts()
  if not list then self.last_alerts = nil; return nil, err end
  self.last_alerts, self.fetched_at = list, now
  return true
end

function A.close() end

M.Source = A
return M

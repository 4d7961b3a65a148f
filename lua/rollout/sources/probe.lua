-- rollout.sources.probe: synthetic traffic for services with little real traffic (the role
-- Flagger's load tester plays), plus the health checks that give `health`.
--
-- Once started (by start() or the first tick), one background task per version issues
-- `rate` requests per second to the version's URL, each in its own task, so a slow answer
-- never lowers the rate; their latency (curl's total time) and status are accumulated and
-- each tick moves them into a rollout.window record for the interval. A status matching
-- `errors` is an error; a transport failure (refused, timeout) is an error with no latency.
-- Another task GETs each version's health URL every `health_interval`; a check succeeds on a
-- 2xx within `health_timeout`. A request is counted in the interval it completes in.
--
-- Config (keys relative to the source table):
--   type = "probe", name =
--   rate = 1                   requests per second per version (spread evenly)
--   path = "/"                 appended to each version's ctx.versions[v].url
--   urls = {baseline = URL, canary = URL}    full URLs instead
--   method = "GET", headers = {...}, body = "..."
--   timeout = "5s"             per synthetic request
--   errors = 'code=~"5.."'     which statuses are errors (PromQL matcher syntax on `code`)
--   health = {baseline = URL, canary = URL}  health URLs (default: ctx.versions[v].health,
--                              else the version's url .. health_path)
--   health_path = "/health", health_timeout = "2s", health_interval = "10s"
--   keep = "1h"
-- Call close() to stop the background tasks. src.sent counts the requests started,
-- src.inflight those not answered yet.
--
-- Error policy: bad config raises from new(). The probe itself never fails a tick: what
-- the service does (errors, timeouts, refusals) is data; only a missing URL is an error.
local rollout = require("rollout")
local http = require("rollout.http")
local histogram = require("rollout.histogram")
local units = require("rollout.units")
local window = require("rollout.window")
local common = require("rollout.sources.common")
local schema = require("rollout.schema")

local M = {}

local function each_url(v)
  for k, u in pairs(v) do
    local e = common.KINDS.url(u)
    if e then return schema.at(k, e) end
  end
end

local SCHEMA = common.base_schema("probe")
for k, rule in pairs({
  rate = { kind = "positive" },
  path = { kind = "string", nonempty = true, check = function(v) if v:sub(1, 1) ~= "/" then return "must start with /" end end },
  urls = { kind = "versions", check = each_url },
  method = { kind = "string", nonempty = true },
  headers = { kind = "headers" },
  body = { kind = "string", nonempty = true },
  timeout = { kind = "duration" },
  errors = { kind = "matchers" },
  health = { kind = "versions", check = each_url },
  health_path = { kind = "string", nonempty = true },
  health_timeout = { kind = "duration" },
  health_interval = { kind = "duration" },
  keep = { kind = "duration" },
}) do SCHEMA[k] = rule end

--- Problems with cfg as "key: message" strings; empty when fine. No side effects.
function M.check(cfg)
  local errs = common.check(cfg, SCHEMA)
  if type(cfg) == "table" and cfg.errors ~= nil then
    local m = common.parse_matchers(cfg.errors)
    if m then
      local _, err = common.matcher_fn(m)
      if err then errs[#errs + 1] = common.err("errors", err) end
    end
  end
  return errs
end
function M.validate(cfg) return common.strings(M.check(cfg)) end

local P = {}
P.__index = P

local function fresh()
  return { requests = 0, errors = 0, latency = histogram.new(), health_ok = 0, health_total = 0 }
end

--- new(cfg, ctx) -> source. Raises on a bad config (every problem listed).
function M.new(cfg, ctx)
  common.assert_valid("probe", M.validate(cfg), 2)
  local self = setmetatable({
    cfg = cfg, ctx = ctx or {}, name = cfg.name or "probe",
    synthetic = true, -- its requests add evidence, never replace a real source's (rollout.safety)
    provides = common.set { "requests", "rps", "error_rate", "p50", "p95", "p99", "health" },
    rate = cfg.rate or 1,
    timeout = units.duration(cfg.timeout or 5),
    health_timeout = units.duration(cfg.health_timeout or 2),
    health_interval = units.duration(cfg.health_interval or 10),
    window = window.new { keep = units.duration(cfg.keep or 3600) },
    is_error = assert(common.matcher_fn(assert(common.parse_matchers(cfg.errors or 'code=~"5.."')))),
    urls = {}, health_urls = {}, pending = {}, tasks = {}, sent = 0, inflight = 0,
  }, P)
  local missing = {}
  for _, v in ipairs(common.VERSIONS) do
    local info = common.version_info(ctx, v)
    local base = info.url and info.url:gsub("/+$", "")
    self.urls[v] = (cfg.urls and cfg.urls[v]) or (base and base .. (cfg.path or "/"))
    self.health_urls[v] = (cfg.health and cfg.health[v]) or info.health
      or (base and base .. (cfg.health_path or "/health"))
    if not self.urls[v] then missing[#missing + 1] = "versions." .. v .. ".url: required (or the source's urls)" end
    self.pending[v] = fresh()
  end
  common.assert_valid("probe", missing, 2)
  return self
end

function P:_request(v)
  local cfg = self.cfg
  local ok, resp = pcall(http.request, { url = self.urls[v], method = cfg.method or "GET", headers = cfg.headers,
    body = cfg.body, timeout = self.timeout })
  self.inflight = self.inflight - 1
  if not ok then resp = nil end
  local acc = self.pending[v]
  acc.requests = acc.requests + 1
  if not resp then
    acc.errors = acc.errors + 1
    return
  end
  if self.is_error({ code = tostring(resp.status) }) then acc.errors = acc.errors + 1 end
  acc.latency:record(math.max(resp.time or 0, 0))
end

function P:_check(v)
  local resp = http.get(self.health_urls[v], { timeout = self.health_timeout })
  local acc = self.pending[v]
  acc.health_total = acc.health_total + 1
  if resp and resp.status >= 200 and resp.status <= 299 and (resp.time or 0) <= self.health_timeout then
    acc.health_ok = acc.health_ok + 1
  end
end

--- check_targets() -> true | nil, err: every version's URL and health URL answers (any
--- HTTP status: what the service says is data; a refused or timed-out request is not).
function P:check_targets()
  for _, v in ipairs(common.VERSIONS) do
    for _, url in ipairs({ self.urls[v], self.health_urls[v] }) do
      local resp, err = http.get(url, { timeout = self.timeout })
      if not resp then return nil, v .. ": " .. tostring(err) end
    end
  end
  return true
end

--- start(): begin the synthetic traffic and health checks (idempotent).
function P:start()
  if self.started then return end
  self.closed = false
  self.started = true
  for _, v in ipairs(common.VERSIONS) do
    self.tasks[#self.tasks + 1] = rollout.every(1 / self.rate, function()
      self.sent, self.inflight = self.sent + 1, self.inflight + 1 -- from the spawn, not its first run
      rollout.spawn(self._request, self, v)
    end)
  end
  self.tasks[#self.tasks + 1] = rollout.every(self.health_interval, function()
    for _, v in ipairs(common.VERSIONS) do rollout.spawn(self._check, self, v) end
  end)
end

--- tick(now) -> true: move what completed since the last tick into the window.
function P:tick(now)
  if not self.started and not self.closed then self:start() end
  for _, v in ipairs(common.VERSIONS) do
    local acc = self.pending[v]
    self.pending[v] = fresh()
    if acc.latency:count() == 0 then acc.latency = nil end
    acc.restarts = nil
    self.window:add(v, now, acc)
  end
  return true
end

--- signals(now, window) -> {baseline = S, canary = S} (rollout.window's signals).
function P:signals(now, span)
  return {
    baseline = common.only(self.provides, self.window:signals("baseline", now, span)),
    canary = common.only(self.provides, self.window:signals("canary", now, span)),
  }
end

function P:latency(version, now, span)
  return self.window:latency(version, now, span)
end

--- close(): stop the background tasks (a later tick does not restart them; start() does).
--- In-flight requests finish on their own.
function P:close()
  for _, t in ipairs(self.tasks) do t:cancel("closed") end
  self.tasks, self.started, self.closed = {}, false, true
end

M.Source = P
return M

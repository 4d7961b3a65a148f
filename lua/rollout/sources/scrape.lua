-- rollout.sources.scrape: signals from scraping /metrics directly, no Prometheus needed.
--
-- Each tick GETs every version's metrics endpoint (or one shared endpoint, such as HAProxy's
-- exporter, where a label tells the versions apart), sums the configured series with
-- promtext.select (no Lua table per sample), and turns counter deltas into one
-- rollout.window record per version per interval:
--   requests, errors   deltas of the `requests` counter, all series / the `errors` series
--   latency            the deltas of the `latency` histogram's buckets, as a histogram
--   cpu                rate of process_cpu_seconds_total / cpu_limit (cores, default 1)
--   memory             process_resident_memory_bytes / memory_limit (only with a limit)
--   disk               a named gauge / disk_limit (as is without a limit: a fraction)
--   restarts           1 when process_start_time_seconds changed or any counter went down
--                      (not from a shared endpoint without start_time: a load balancer's
--                      counters reset when it restarts, not when a version does)
-- A counter that goes backwards was reset by a restart: the increment of that interval is
-- the new counter value, never a negative rate. The first scrape of a version only sets
-- its baseline (no increments yet); a failed scrape records nothing for that version and
-- the next successful one carries the whole gap.
--
-- Resolution: an exposition's histogram says only how many requests fell in each bucket,
-- so quantiles are no finer than its buckets. Counts are spread evenly across their bucket
-- (lower bound exclusive, upper inclusive), which is the linear interpolation Prometheus's
-- histogram_quantile does, so both sources agree; the +Inf bucket is read as the highest
-- finite bound. With sample-service's ~10 buckets per decade a quantile is within ~12 %.
--
-- Config (keys relative to the source table):
--   type = "scrape", name =
--   url = "http://lb:8404/metrics"  one endpoint for every version; needs version_label
--   targets = {baseline = URL, canary = {URL, URL}}   per-version endpoints; a list is the
--                                    version's replicas: counts add up, histograms merge,
--                                    cpu/memory/disk are the most saturated replica's
--                                    (default: each version's ctx.versions[v].metrics)
--   version_label = "server"         with url: the label naming the version's series
--   version_values = {baseline = "blue", canary = "green"}   its values (default: each
--                                    version's name, else "baseline"/"canary")
--   labels = 'proxy="be"'            matchers every traffic series must meet
--   requests = "http_requests_total" errors = 'code=~"5.."'
--   latency = "http_request_duration_seconds" | false
--   cpu = "process_cpu_seconds_total" | false, cpu_limit = cores
--   memory = "process_resident_memory_bytes" | false, memory_limit = "4Gi"
--   disk = gauge name, disk_limit = bytes
--   start_time = "process_start_time_seconds" | false
--   preset = "haproxy"  with backend = "be": haproxy_server_http_responses_total per server,
--                       errors code="5xx", no latency or process metrics (HAProxy's own).
--   timeout = "5s", keep = "1h", headers = {...}
--
-- Error policy: bad config raises from new() (validate() lists the problems); a failed
-- scrape (refused, timeout, non-2xx, malformed exposition) makes tick return nil, err
-- naming the version, URL and reason.
local histogram = require("rollout.histogram")
local http = require("rollout.http")
local promtext = require("rollout.promtext")
local units = require("rollout.units")
local window = require("rollout.window")
local common = require("rollout.sources.common")
local schema = require("rollout.schema")

local M = {}

local PRESETS = {
  haproxy = {
    requests = "haproxy_server_http_responses_total",
    errors = 'code="5xx"',
    version_label = "server",
    latency = false, cpu = false, memory = false, start_time = false,
  },
}

local DEFAULTS = {
  requests = "http_requests_total",
  errors = 'code=~"5.."',
  latency = "http_request_duration_seconds",
  cpu = "process_cpu_seconds_total",
  memory = "process_resident_memory_bytes",
  start_time = "process_start_time_seconds",
  timeout = 5,
  keep = 3600,
}

-- {baseline = URL | {URL, ...}, canary = ...}: a list is a version's replicas.
local function each_url(v)
  for k, u in pairs(v) do
    if type(u) == "table" then
      if #u == 0 then return schema.at(k, "expected a URL or a non-empty list of URLs") end
      for i, x in ipairs(u) do
        local e = common.KINDS.url(x)
        if e then return schema.at({ k, i }, e) end
      end
    else
      local e = common.KINDS.url(u)
      if e then return schema.at(k, e) end
    end
  end
end

local function each_string(v)
  for k, s in pairs(v) do
    local e = common.KINDS.nonempty(s)
    if e then return schema.at(k, e) end
  end
end

local SCHEMA = common.base_schema("scrape")
for k, rule in pairs({
  url = { kind = "url" },
  targets = { kind = "versions", check = each_url },
  version_label = { kind = "string", nonempty = true },
  version_values = { kind = "versions", check = each_string },
  labels = { kind = "matchers" },
  preset = { kind = "string", nonempty = true, check = function(v)
    if not PRESETS[v] then return "unknown preset \"" .. v .. "\" (haproxy)" end
  end },
  backend = { kind = "string", nonempty = true },
  requests = { kind = "metric" },
  errors = { kind = "matchers" },
  latency = { kind = "metric" },
  cpu = { kind = "metric" },
  cpu_limit = { kind = "positive" },
  memory = { kind = "metric" },
  memory_limit = { kind = "bytes" },
  disk = { kind = "metric" },
  disk_limit = { kind = "bytes" },
  start_time = { kind = "metric" },
  timeout = { kind = "duration" },
  keep = { kind = "duration" },
  headers = { kind = "headers" },
}) do SCHEMA[k] = rule end

--- Problems with cfg as "key: message" strings; empty when fine. No side effects.
function M.check(cfg)
  local errs = common.check(cfg, SCHEMA)
  if type(cfg) ~= "table" then return errs end
  local function err(key, message) errs[#errs + 1] = common.err(key, message) end
  if cfg.url and not cfg.version_label and cfg.preset == nil then
    err("version_label", "required with url (the label that tells the versions apart)")
  end
  if cfg.version_label and not cfg.url then err("url", "required with version_label") end
  if cfg.preset == "haproxy" and not cfg.url then err("url", "required with preset \"haproxy\" (the exporter's /metrics)") end
  if cfg.backend and cfg.preset ~= "haproxy" then err("backend", "only with preset = \"haproxy\"") end
  if cfg.requests == false then err("requests", "cannot be switched off") end
  return errs
end
function M.validate(cfg) return common.strings(M.check(cfg)) end

-- ---- counters to increments ---------------------------------------------------------

local SPREAD = 32 -- points per bucket: finer than any histogram_quantile interpolation needs

local function spread(h, lo, hi, n)
  local k = math.min(n, SPREAD)
  for j = 1, k do -- point j carries the counts of ranks (n(j-1)/k, nj/k]: an even spread
    local c = n * j // k - n * (j - 1) // k
    if c > 0 then h:record(lo + (hi - lo) * (j - 0.5) / k, c) end
  end
end

--- A histogram from cumulative bucket counts {{le=, count=}, ...} sorted by le (here: the
--- deltas of one interval), or nil when they hold no observation (a histogram is ~40 KB:
--- idle intervals should not cost one). See the header for how counts are placed.
function M.histogram_from_buckets(buckets)
  local total = 0
  for _, b in ipairs(buckets) do total = math.max(total, b.count) end
  if total < 0.5 then return nil end
  local h = histogram.new()
  local lo, cum = 0, 0
  for _, b in ipairs(buckets) do
    local n = math.floor(b.count - cum + 0.5)
    if n > 0 then
      if b.le == math.huge then h:record(lo, n)
      else spread(h, lo, math.max(b.le, 0), n) end
    end
    if b.le ~= math.huge then lo = math.max(b.le, 0) end
    cum = math.max(cum, b.count)
  end
  return h
end

local function bucket_deltas(cur, base)
  local before = {}
  for _, b in ipairs(base or {}) do before[b.le] = b.count end
  local out = {}
  for i, b in ipairs(cur) do out[i] = { le = b.le, count = b.count - (before[b.le] or 0) } end
  return out
end

-- The histogram's total is its last cumulative bucket (+Inf).
local function total(buckets)
  local last = buckets and buckets[#buckets]
  return last and last.count or 0
end

local function went_down(cur, prev)
  if cur.requests < prev.requests or cur.errors < prev.errors or total(cur.buckets) < total(prev.buckets)
    or (cur.cpu and prev.cpu and cur.cpu < prev.cpu) then
    return "counter reset"
  end
end

local ZERO = { requests = 0, errors = 0, cpu = 0 }

local S = {}
S.__index = S

-- One interval's record from two snapshots (prev nil: the first scrape).
function S:_record(cur, prev, now)
  local rec = { restarts = 0 }
  if cur.memory and self.memory_limit then rec.memory = cur.memory / self.memory_limit end
  if cur.disk then rec.disk = cur.disk / (self.disk_limit or 1) end
  if not prev then return rec end
  local why = (cur.start and prev.start and cur.start ~= prev.start and "process_start_time_seconds changed")
    or went_down(cur, prev)
  local base = prev
  if why then rec.restarts, base = 1, ZERO end
  rec.requests = cur.requests - base.requests
  rec.errors = math.min(cur.errors - base.errors, rec.requests)
  if total(cur.buckets) > total(base.buckets) then
    rec.latency = M.histogram_from_buckets(bucket_deltas(cur.buckets, base.buckets))
  end
  local dt = now - prev.t
  if cur.cpu and (why or prev.cpu) and dt > 0 then
    rec.cpu = (cur.cpu - (base.cpu or 0)) / dt / self.cpu_limit
  end
  return rec, why
end

-- ---- scraping ----------------------------------------------------------------------

--- new(cfg, ctx) -> source. Raises on a bad config (every problem listed).
function M.new(cfg, ctx)
  common.assert_valid("scrape", M.validate(cfg), 2)
  local c = {}
  for k, v in pairs(DEFAULTS) do c[k] = v end
  for k, v in pairs(PRESETS[cfg.preset] or {}) do c[k] = v end
  for k, v in pairs(cfg) do c[k] = v end
  local self = setmetatable({
    cfg = c, ctx = ctx or {}, name = cfg.name or "scrape",
    timeout = units.duration(c.timeout),
    window = window.new { keep = units.duration(c.keep) },
    cpu_limit = c.cpu_limit or 1,
    memory_limit = c.memory_limit and units.bytes(c.memory_limit),
    disk_limit = c.disk_limit and units.bytes(c.disk_limit),
    prev = {}, urls = {}, last = {}, match = {}, selectors = {}, index = {},
  }, S)
  local base = assert(common.parse_matchers(c.labels))
  if cfg.preset == "haproxy" and cfg.backend then base.proxy = base.proxy or cfg.backend end
  self.errors = assert(common.parse_matchers(c.errors))
  local missing = {}
  for _, v in ipairs(common.VERSIONS) do
    local info = common.version_info(ctx, v)
    local url = (c.targets and c.targets[v]) or c.url or info.metrics
    if not url then
      missing[#missing + 1] = "versions." .. v .. ".metrics: required (or the source's url or targets)"
    end
    self.urls[v] = type(url) == "table" and url or { url }
    self.prev[v] = {}
    local own = {}
    if c.version_label and url == c.url then
      own[c.version_label] = (c.version_values and c.version_values[v]) or info.name or v
    end
    self.match[v] = { traffic = common.merge_matchers(base, own), own = own }
  end
  common.assert_valid("scrape", missing, 2)
  self.provides = common.set { "requests", "rps", "error_rate", "restarts" }
  if c.latency then self.provides.p50, self.provides.p95, self.provides.p99 = true, true, true end
  if c.cpu then self.provides.cpu = true end
  if c.memory and self.memory_limit then self.provides.memory = true end
  if c.disk then self.provides.disk = true end
  -- A shared endpoint (a load balancer's exporter) resets its counters when the balancer
  -- restarts, which says nothing about the versions: no restarts from it.
  if c.url and not (c.targets and c.targets.baseline and c.targets.canary) and not cfg.start_time then
    self.provides.restarts = nil
  end
  return self
end

-- The promtext.select selectors for one version: requests, errors, latency, gauges.
function S:_selectors(v)
  if self.selectors[v] then return self.selectors[v], self.index[v] end
  local c, m = self.cfg, self.match[v]
  local list, index = {}, {}
  local function add(key, sel) list[#list + 1] = sel; index[key] = #list end
  add("requests", { name = c.requests, labels = m.traffic })
  add("errors", { name = c.requests, labels = common.merge_matchers(m.traffic, self.errors) })
  if c.latency then add("latency", { histogram = c.latency, labels = m.traffic }) end
  for _, g in ipairs({ "cpu", "memory", "disk", "start_time" }) do
    if c[g] and (g ~= "memory" or self.memory_limit) then add(g, { name = c[g], labels = m.own }) end
  end
  self.selectors[v], self.index[v] = list, index
  return list, index
end

--- Snapshot of one version from an exposition's text -> {requests=, errors=, buckets=,
--- cpu=, memory=, disk=, start=} | nil, "line N: ...". A missing counter is 0 (a labelled
--- counter has no series before its first event); a missing gauge is nil.
function S:snapshot(v, text)
  local sels, at = self:_selectors(v)
  local r, err = promtext.select(text, sels)
  if not r then return nil, err end
  local function value(k) return at[k] and r[at[k]].value end
  local snap = { requests = value("requests") or 0, errors = value("errors") or 0,
    cpu = value("cpu"), memory = value("memory"), disk = value("disk"), start = value("start_time") }
  if at.latency and r[at.latency].samples > 0 then snap.buckets = r[at.latency].buckets end
  return snap
end

local function fetch(self, url)
  local resp, err = http.get(url, { timeout = self.timeout, headers = self.cfg.headers })
  if not resp then
    if not err:find(url, 1, true) then err = err .. " (" .. url .. ")" end
    return nil, err
  end
  if resp.status < 200 or resp.status > 299 then
    return nil, "HTTP " .. resp.status .. " from " .. url
  end
  return resp.body
end

-- One record of a version from its replicas' records: counts add up, latencies merge,
-- saturation is the most saturated replica's (a gate on cpu should see the hot one).
local function combine(recs)
  if #recs == 1 then return recs[1] end
  local out, hists = { restarts = 0 }, {}
  for _, r in ipairs(recs) do
    out.restarts = out.restarts + r.restarts
    if r.requests then out.requests, out.errors = (out.requests or 0) + r.requests, (out.errors or 0) + r.errors end
    if r.latency then hists[#hists + 1] = r.latency end
    for _, g in ipairs({ "cpu", "memory", "disk" }) do
      if r[g] and (out[g] == nil or r[g] > out[g]) then out[g] = r[g] end
    end
  end
  if #hists == 1 then out.latency = hists[1]
  elseif #hists > 1 then
    out.latency = histogram.new()
    for _, h in ipairs(hists) do out.latency:merge(h) end
  end
  return out
end

--- tick(now) -> true | nil, err: scrape every version once and record the interval. A
--- version whose replicas partly failed records the ones that answered; the tick fails.
function S:tick(now)
  local fns, bodies = {}, {}
  for _, v in ipairs(common.VERSIONS) do
    for _, url in ipairs(self.urls[v]) do
      fns[url] = fns[url] or function() return fetch(self, url) end
    end
  end
  for url, r in pairs(common.parallel(fns)) do bodies[url] = r end
  local errs = {}
  for _, v in ipairs(common.VERSIONS) do
    local recs = {}
    for _, url in ipairs(self.urls[v]) do
      local body, err = bodies[url][1], bodies[url][2]
      local snap
      if body then
        snap, err = self:snapshot(v, body)
        if not snap then err = url .. ": " .. err end
      end
      if snap then
        snap.t = now
        local rec, why = self:_record(snap, self.prev[v][url], now)
        if why then
          common.emit(self.ctx, "restart", { source = self.name, version = v, target = url, reason = why })
        end
        recs[#recs + 1] = rec
        self.prev[v][url] = snap
      else
        errs[#errs + 1] = "scrape " .. v .. ": " .. err
      end
    end
    if #recs > 0 then
      local rec = combine(recs)
      self.window:add(v, now, rec)
      self.last[v] = rec
    end
  end
  if #errs > 0 then return nil, table.concat(errs, "; ") end
  return true
end

--- signals(now, window) -> {baseline = S, canary = S} (rollout.window's signals).
function S:signals(now, span)
  return {
    baseline = common.only(self.provides, self.window:signals("baseline", now, span)),
    canary = common.only(self.provides, self.window:signals("canary", now, span)),
  }
end

--- The merged latency histogram of a version over the window (for the judge).
function S:latency(version, now, span)
  return self.window:latency(version, now, span)
end

function S.close() end

M.Source = S
return M

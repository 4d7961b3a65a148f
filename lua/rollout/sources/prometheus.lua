-- rollout.sources.prometheus: signals from PromQL instant queries against Prometheus's
-- HTTP API, one query per signal per version, templated like the runbook's queries.
--
-- Template variables: {{version}} the version's version (ctx.versions[v].version, else its
-- name, else "baseline"/"canary"), {{name}} its name, {{role}} "baseline"|"canary",
-- {{service}} ctx.service, {{window}} the trailing window as a PromQL duration ("5m",
-- "45s"), {{selector}} the expanded `selector` setting, {{errors}} the `errors` matchers.
--
-- Default queries (requests = http_requests_total, latency = http_request_duration_seconds,
-- selector = version="{{version}}", errors = code=~"5.."):
--   requests   sum(increase(http_requests_total{version="v1"}[5m]))
--   rps        sum(rate(http_requests_total{version="v1"}[5m]))
--   error_rate (sum(rate(http_requests_total{version="v1",code=~"5.."}[5m])) or vector(0))
--              / sum(rate(http_requests_total{version="v1"}[5m]))
--   p50/p95/p99 histogram_quantile(0.99, sum by (le) (rate(
--              http_request_duration_seconds_bucket{version="v1"}[5m])))
--   health     avg(avg_over_time(up{version="v1"}[5m]))      (share of successful scrapes)
--   cpu        sum(rate(process_cpu_seconds_total{version="v1"}[5m]))   / cpu_limit
--   memory     sum(process_resident_memory_bytes{version="v1"})         / memory_limit
--              (only with memory_limit)
--   restarts   sum(changes(process_start_time_seconds{version="v1"}[5m]))
-- cfg.queries overrides any of them (false drops one) and may add disk; cpu_limit,
-- memory_limit and disk_limit divide whatever the cpu/memory/disk query returns.
-- Saturation as a share of the limit (M.SATURATION), `saturation` = "auto" (default: the
-- first tick asks which exporters Prometheus has), "kubernetes" (cAdvisor CPU seconds per
-- second over kube-state-metrics' CPU limit, working set over the memory limit, pods
-- matched by `pods`), "node" (node_exporter: busy CPU share, memory and root filesystem
-- in use) or "process" (the process queries above). A signal the config sets itself
-- (queries, *_limit) keeps its own query.
--
-- No data: an empty vector, NaN (0/0 when nothing was requested; histogram_quantile of
-- no observations) is nil, never 0. A query that returns more than one series is an error
-- (aggregate it), not a value picked at random.
--
-- For the statistical judge: src:samples(now, window, opts) (per-interval series from range
-- queries, raw latencies from the histogram's buckets: see samples() below).
--
-- Also: src:query(q [, vars]) -> {type=, value=|series=} and
-- src:query_range(q, start, end, step [, vars]) -> list of {labels=, values={{t, v}, ...}}
-- (start/end are Unix seconds, step seconds or "15s"), for replay.
--
-- Error policy: bad config raises from new(); transport failures, non-2xx statuses (with
-- Prometheus's errorType and error when it sent its error envelope), malformed JSON and
-- unexpected result types return nil, err naming the query.
local rollout = require("rollout")
local http = require("rollout.http")
local json = require("rollout.json")
local units = require("rollout.units")
local common = require("rollout.sources.common")
local schema = require("rollout.schema")

local M = {}

local SIGNALS = { "requests", "rps", "error_rate", "p50", "p95", "p99", "health", "cpu", "memory", "disk", "restarts" }
local KNOWN_VARS = { version = true, name = true, role = true, service = true, window = true, selector = true,
  errors = true, pods = true }

local function check_queries(q)
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = q[k]
    local known = false
    for _, s in ipairs(SIGNALS) do known = known or s == k end
    if not known then return schema.at(k, "unknown signal (" .. table.concat(SIGNALS, ", ") .. ")") end
    if v ~= false and type(v) ~= "string" then return schema.at(k, "expected a PromQL string or false") end
    if v then
      local e = common.check_template(v, KNOWN_VARS)
      if e then return schema.at(k, e) end
    end
  end
end

local SCHEMA = common.base_schema("prometheus")
for k, rule in pairs({
  url = { kind = "url", required = true, what = "URL of Prometheus (http://host:9090)" },
  queries = { kind = "table", check = check_queries },
  selector = { kind = "string", nonempty = true, check = function(v) return common.check_template(v, KNOWN_VARS) end },
  errors = { kind = "string", nonempty = true },
  requests = { kind = "metric" },
  latency = { kind = "metric" },
  saturation = { kind = "string", nonempty = true, check = function(v)
    if v ~= "auto" and v ~= "kubernetes" and v ~= "node" and v ~= "process" then
      return "expected \"auto\", \"kubernetes\", \"node\" or \"process\", got \"" .. tostring(v) .. "\""
    end
  end },
  pods = { kind = "string", nonempty = true, check = function(v) return common.check_template(v, KNOWN_VARS) end },
  cpu_limit = { kind = "positive" },
  memory_limit = { kind = "bytes" },
  disk_limit = { kind = "positive" },
  timeout = { kind = "duration" },
  headers = { kind = "headers" },
  bearer = { kind = "string", nonempty = true },
}) do SCHEMA[k] = rule end

--- Problems with cfg as "key: message" strings; empty when fine. No side effects.
function M.check(cfg)
  local errs = common.check(cfg, SCHEMA)
  if type(cfg) == "table" and type(cfg.queries) == "table" then
    for k in pairs(cfg.queries) do
      if type(k) ~= "string" then errs[#errs + 1] = common.err("queries", "keys must be signal names") break end
    end
  end
  return errs
end
function M.validate(cfg) return common.strings(M.check(cfg)) end

--- The default queries for a config (before template expansion).
function M.default_queries(cfg)
  local req = cfg.requests or "http_requests_total"
  local lat = cfg.latency or "http_request_duration_seconds"
  local all = "{{{selector}}}"
  local bad = "{{{selector}},{{errors}}}"
  local q = {
    requests = "sum(increase(" .. req .. all .. "[{{window}}]))",
    rps = "sum(rate(" .. req .. all .. "[{{window}}]))",
    error_rate = "(sum(rate(" .. req .. bad .. "[{{window}}])) or vector(0)) / sum(rate(" .. req .. all
      .. "[{{window}}]))",
    health = "avg(avg_over_time(up" .. all .. "[{{window}}]))",
    cpu = "sum(rate(process_cpu_seconds_total" .. all .. "[{{window}}]))",
    restarts = "sum(changes(process_start_time_seconds" .. all .. "[{{window}}]))",
  }
  if cfg.requests == false then q.requests, q.rps, q.error_rate = nil, nil, nil end
  if cfg.latency ~= false then
    for name, p in pairs({ p50 = "0.5", p95 = "0.95", p99 = "0.99" }) do
      q[name] = "histogram_quantile(" .. p .. ", sum by (le) (rate(" .. lat .. "_bucket" .. all .. "[{{window}}])))"
    end
  end
  if cfg.memory_limit then q.memory = "sum(process_resident_memory_bytes" .. all .. ")" end
  for k, v in pairs(cfg.queries or {}) do q[k] = v or nil end
  return q
end

-- Saturation as a share of the limit, from the standard exporters (cAdvisor and
-- kube-state-metrics on Kubernetes, node_exporter on machines). {{pods}} is the `pods`
-- setting (default pod=~"{{service}}-{{name}}-.*"), {{selector}} the version's selector.
M.SATURATION = {
  kubernetes = {
    cpu = 'sum(rate(container_cpu_usage_seconds_total{container!="",{{pods}}}[{{window}}]))'
      .. ' / sum(kube_pod_container_resource_limits{resource="cpu",{{pods}}})',
    memory = 'sum(container_memory_working_set_bytes{container!="",{{pods}}})'
      .. ' / sum(kube_pod_container_resource_limits{resource="memory",{{pods}}})',
  },
  node = {
    cpu = '1 - avg(rate(node_cpu_seconds_total{mode="idle",{{selector}}}[{{window}}]))',
    memory = '1 - sum(node_memory_MemAvailable_bytes{{{selector}}}) / sum(node_memory_MemTotal_bytes{{{selector}}})',
    disk = '1 - sum(node_filesystem_avail_bytes{mountpoint="/",{{selector}}})'
      .. ' / sum(node_filesystem_size_bytes{mountpoint="/",{{selector}}})',
  },
}
-- which exporter answers, asked once (saturation = "auto")
M.DETECT = {
  { "kubernetes", 'count(kube_pod_container_resource_limits{resource="cpu"}) and count(container_cpu_usage_seconds_total{container!=""})' },
  { "node", "count(node_cpu_seconds_total)" },
}

local P = {}
P.__index = P

--- new(cfg, ctx) -> source. Raises on a bad config (every problem listed).
function M.new(cfg, ctx)
  common.assert_valid("prometheus", M.validate(cfg), 2)
  local self = setmetatable({
    cfg = cfg, ctx = ctx or {}, name = cfg.name or "prometheus",
    base = cfg.url:gsub("/+$", ""),
    timeout = units.duration(cfg.timeout or 10),
    queries = M.default_queries(cfg),
    divisors = { cpu = cfg.cpu_limit, memory = cfg.memory_limit and units.bytes(cfg.memory_limit),
      disk = cfg.disk_limit },
    cache = nil,
  }, P)
  self.provides = {}
  for sig in pairs(self.queries) do self.provides[sig] = true end
  self.saturation = cfg.saturation or "auto"
  if self.saturation ~= "auto" then self:use_saturation(self.saturation) end
  return self
end

--- use_saturation(family): saturation queries of "kubernetes" or "node" for every signal
--- the config does not set itself (cfg.queries, or a *_limit that divides a process query).
function P:use_saturation(family)
  self.saturation = family
  for sig, q in pairs(M.SATURATION[family] or {}) do
    local own = (self.cfg.queries and self.cfg.queries[sig] ~= nil) or self.cfg[sig .. "_limit"] ~= nil
    if not own then
      self.queries[sig], self.divisors[sig], self.provides[sig] = q, nil, true
    end
  end
end

-- saturation = "auto": the first exporter family Prometheus has series of, asked once.
function P:detect_saturation()
  for _, d in ipairs(M.DETECT) do
    local ok, v = self:value(d[2])
    if not ok then return nil, v end
    if v and v > 0 then self:use_saturation(d[1]); return true end
  end
  self.saturation = "process"
  return true
end

--- Template variables of a version for a window (seconds).
function P:vars(v, span)
  local info = common.version_info(self.ctx, v)
  local vars = {
    version = info.version or info.name or v, name = info.name or v, role = v,
    service = self.ctx.service or "", window = span and common.format_window(span) or "5m",
    errors = self.cfg.errors or 'code=~"5.."',
  }
  vars.selector = common.expand(self.cfg.selector or 'version="{{version}}"', vars)
  vars.pods = common.expand(self.cfg.pods or 'pod=~"{{service}}-{{name}}-.*"', vars)
  return vars
end

-- GET an API path; the decoded `data` of a success envelope, or nil, err.
function P:_api(path, params, what)
  local url = self.base .. path .. "?" .. http.encode_query(params)
  local resp, err = http.get(url, { timeout = self.timeout, headers = self.cfg.headers, bearer = self.cfg.bearer })
  if not resp then return nil, "prometheus: " .. err .. " for " .. what end
  local doc = json.decode(resp.body)
  if type(doc) == "table" and doc.status == "error" then
    return nil, string.format("prometheus: %s: %s (HTTP %d) for %s", tostring(doc.errorType),
      tostring(doc.error), resp.status, what)
  end
  if resp.status < 200 or resp.status > 299 then
    return nil, string.format("prometheus: HTTP %d from %s for %s", resp.status, self.base, what)
  end
  if type(doc) ~= "table" or doc.status ~= "success" or type(doc.data) ~= "table" then
    local head = resp.body:sub(1, 60):gsub("%s+", " ")
    return nil, "prometheus: not a Prometheus API response (" .. head .. ") for " .. what
  end
  return doc.data
end

local function sample(pair) -- [ts, "value"] -> ts, value|nil
  if type(pair) ~= "table" then return nil end
  return tonumber(pair[1]), common.parse_value(pair[2])
end

--- query(q [, vars]) -> {type = "vector"|"matrix"|"scalar"|"string", value = (scalar,
--- string), series = {{labels=, value=} | {labels=, values={{t, v}...}}}} | nil, err.
--- q is expanded with vars when given.
function P:query(q, vars)
  if vars then q = common.expand(q, vars) end
  -- replay evaluates at a recorded time instead of now (rollout replay sets time_of)
  local data, err = self:_api("/api/v1/query", { query = q, time = self.eval_time and string.format("%.3f", self.eval_time) or nil },
    "query " .. q)
  if not data then return nil, err end
  local out, result = { type = data.resultType }, data.result
  if data.resultType == "scalar" then
    local _, v = sample(result)
    out.value = v
  elseif data.resultType == "string" then
    out.value = type(result) == "table" and result[2] or nil
  elseif data.resultType == "vector" then
    out.series = {}
    for i, s in ipairs(result or {}) do
      local t, v = sample(s.value)
      out.series[i] = { labels = s.metric or {}, value = v, t = t }
    end
  elseif data.resultType == "matrix" then
    out.series = {}
    for i, s in ipairs(result or {}) do
      local values = {}
      for _, p in ipairs(s.values or {}) do
        local t, v = sample(p)
        values[#values + 1] = { t, v }
      end
      out.series[i] = { labels = s.metric or {}, values = values }
    end
  else
    return nil, "prometheus: unknown resultType " .. tostring(data.resultType) .. " for query " .. q
  end
  return out
end

--- value(q [, vars]) -> true, number|nil (nil: no data) | nil, err. One series at most.
function P:value(q, vars)
  local r, err = self:query(q, vars)
  if not r then return nil, err end
  if r.type == "scalar" then return true, r.value end
  if r.type == "string" then
    local v = common.parse_value(r.value)
    if r.value ~= nil and v == nil and r.value:lower() ~= "nan" then
      return nil, "prometheus: query returned a string that is not a number for " .. q
    end
    return true, v
  end
  if r.type == "matrix" then return nil, "prometheus: query returned a range vector (use rate() or similar): " .. q end
  if #r.series > 1 then
    return nil, "prometheus: query returned " .. #r.series .. " series; aggregate it (sum, avg, max): " .. q
  end
  return true, r.series[1] and r.series[1].value
end

--- query_range(q, start, end, step [, vars]) -> list of {labels=, values={{t, v}...}} | nil, err.
function P:query_range(q, start, stop, step, vars)
  if vars then q = common.expand(q, vars) end
  local params = { query = q, start = string.format("%.3f", start), ["end"] = string.format("%.3f", stop),
    step = string.format("%g", units.duration(step)) }
  local data, err = self:_api("/api/v1/query_range", params, "range query " .. q)
  if not data then return nil, err end
  if data.resultType ~= "matrix" then
    return nil, "prometheus: range query returned " .. tostring(data.resultType) .. ": " .. q
  end
  local out = {}
  for i, s in ipairs(data.result or {}) do
    local values = {}
    for _, p in ipairs(s.values or {}) do
      local t, v = sample(p)
      values[#values + 1] = { t, v }
    end
    out[i] = { labels = s.metric or {}, values = values }
  end
  return out
end

--- tick(now) -> true | nil, err: checks that Prometheus answers (a failed check is a source
--- error for this interval). Signals are queried when asked for.
function P:tick(now)
  if self.time_of then self.eval_time = self.time_of(now) end
  local ok, err = self:value("vector(1)")
  if not ok then return nil, err end
  if self.saturation == "auto" then
    local dok, derr = self:detect_saturation()
    if not dok then return nil, derr end
  end
  return true
end

--- signals(now, window) -> {baseline = S, canary = S} | nil, err. Every query of both
--- versions runs concurrently; any failure fails the whole set (never a partial value).
function P:signals(now, span)
  local key = tostring(now) .. "/" .. tostring(span)
  if self.cache and self.cache.key == key then return self.cache.value end
  if self.time_of then self.eval_time = self.time_of(now) end
  local fns = {}
  for _, v in ipairs(common.VERSIONS) do
    local vars = self:vars(v, span)
    for sig, q in pairs(self.queries) do
      fns[v .. "." .. sig] = function() return self:value(q, vars) end
    end
  end
  local results = common.parallel(fns)
  local out, errs = { baseline = {}, canary = {} }, {}
  for k, r in pairs(results) do
    local v, sig = k:match("^(%a+)%.(.+)$")
    if r[1] then
      local x = r[2]
      if x and self.divisors[sig] then x = x / self.divisors[sig] end
      out[v][sig] = x
    else
      errs[#errs + 1] = r[2]
    end
  end
  if #errs > 0 then
    table.sort(errs)
    return nil, errs[1] .. (#errs > 1 and string.format(" (and %d more)", #errs - 1) or "")
  end
  self.cache = { key = key, value = out }
  return out
end

-- ---- samples for the statistical judge (rollout.analysis) ------------------------------

--- bucket_values(series, max) -> values: a `sum by (le)` vector of cumulative bucket counts
--- as one value per observation, each at its bucket's upper bound (the +Inf bucket at twice
--- the largest finite bound), so a Mann-Whitney test ranks them with every bucket a group of
--- ties (midranks, tie-corrected variance: rollout.stats, checked against scipy on binned
--- data). More than `max` observations are scaled down in proportion (largest remainders).
function M.bucket_values(series, max)
  local buckets = {}
  for _, s in ipairs(series or {}) do
    local le = s.labels and s.labels.le
    local bound = le == "+Inf" and math.huge or tonumber(le)
    if bound and s.value and s.value == s.value then buckets[#buckets + 1] = { bound, s.value } end
  end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  local counts, prev, top = {}, 0, 0
  for i, b in ipairs(buckets) do
    local c = math.max(0, b[2] - prev) -- increase() extrapolates: fractional, never below 0
    prev = math.max(prev, b[2])
    counts[i] = c
    if b[1] ~= math.huge then top = b[1] end
  end
  local total = 0
  for _, c in ipairs(counts) do total = total + c end
  local out = {}
  if total <= 0 then return out end
  local scale = math.min(1, (max or 20000) / total)
  local whole, rest, sum = {}, {}, 0
  for i, c in ipairs(counts) do
    local x = c * scale
    whole[i] = math.floor(x)
    rest[i] = { x - whole[i], i }
    sum = sum + whole[i]
  end
  local want = math.floor(total * scale + 0.5)
  table.sort(rest, function(a, b) if a[1] ~= b[1] then return a[1] > b[1] end return a[2] < b[2] end)
  for k = 1, math.max(0, want - sum) do if rest[k] then whole[rest[k][2]] = whole[rest[k][2]] + 1 end end
  for i, b in ipairs(buckets) do
    local v = b[1] == math.huge and (top > 0 and top * 2 or 1) or b[1]
    for _ = 1, whole[i] do out[#out + 1] = v end
  end
  return out
end

local SERIES = { "error_rate", "p50", "p95", "p99", "rps", "health" }

--- samples(now, window [, {max=, interval=}]) -> {baseline = V, canary = V} | nil, err for
--- the judge (rollout.analysis documents V): `requests` over the window, the per-interval
--- series of error_rate, p50/p95/p99, rps and health (a range query with step = the
--- interval, each point over one interval), and `latency` from the latency histogram's
--- buckets over the window (bucket_values). Queries run at the replay's time when replaying.
function P:samples(now, span, opts)
  opts = opts or {}
  local step = opts.interval or 10
  if self.time_of then self.eval_time = self.time_of(now) end
  local t_end = self.eval_time or rollout.time()
  local n_points = math.max(1, math.floor(span / step + 1e-9))
  local fns = {}
  for _, v in ipairs(common.VERSIONS) do
    local whole, per = self:vars(v, span), self:vars(v, step)
    if self.queries.requests then fns[v .. ".requests"] = function() return self:value(self.queries.requests, whole) end end
    for _, sig in ipairs(SERIES) do
      local q = self.queries[sig]
      if q then
        fns[v .. "." .. sig] = function()
          local r, err = self:query_range(q, t_end - (n_points - 1) * step, t_end, step, per)
          if not r then return nil, err end
          if #r > 1 then return nil, "prometheus: range query returned " .. #r .. " series; aggregate it: " .. q end
          return true, r[1] and r[1].values or {}
        end
      end
    end
    if self.cfg.latency ~= false then
      local lat = self.cfg.latency or "http_request_duration_seconds"
      fns[v .. ".latency"] = function()
        local r, err = self:query("sum by (le) (increase(" .. lat .. "_bucket{{{selector}}}[{{window}}]))", whole)
        if not r then return nil, err end
        return true, M.bucket_values(r.series, opts.max)
      end
    end
  end
  local results = common.parallel(fns)
  local out, errs = { baseline = {}, canary = {} }, {}
  for k, r in pairs(results) do
    local v, sig = k:match("^(%a+)%.(.+)$")
    if not r[1] then errs[#errs + 1] = r[2]
    elseif sig == "requests" or sig == "latency" then out[v][sig] = r[2]
    else
      -- one value per interval ending at t_end - (n_points - i) * step; NaN where missing
      local byt, list = {}, {}
      for _, p in ipairs(r[2]) do byt[math.floor(p[1] + 0.5)] = p[2] end
      for i = 1, n_points do
        local x = byt[math.floor(t_end - (n_points - i) * step + 0.5)]
        if x ~= nil and self.divisors[sig] then x = x / self.divisors[sig] end
        list[i] = x == nil and 0 / 0 or x
      end
      out[v][sig] = list
    end
  end
  if #errs > 0 then
    table.sort(errs)
    return nil, errs[1] .. (#errs > 1 and string.format(" (and %d more)", #errs - 1) or "")
  end
  return out
end

function P.close() end

M.Source = P
return M

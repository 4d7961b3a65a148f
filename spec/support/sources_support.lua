-- spec/support/sources_support.lua: what the source specs and bench/scrape_bench.lua share.
-- sample-service instances (built with `make sample-service` when missing), HAProxy with
-- its Prometheus exporter in front of two of them, closed-loop load through rollout's own
-- http client that counts what each version answered, and small statistics helpers.
-- Servers come from spec/support/servers.lua (free ports, temp dirs, stop by pid).
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local proc = require("rollout.proc")
local servers = require("spec.support.servers")

local M = { servers = servers }

local function root()
  local src = debug.getinfo(1, "S").source
  return fs.realpath((src:match("^@(.*)/[^/]*$") or "spec/support") .. "/../..")
end

--- Path of sample-service, building it when the source is there but the binary is not.
--- nil, reason when it cannot be had.
function M.sample_service()
  local dir = root()
  local exe = dir .. "/sample-service"
  if fs.stat(exe) then return exe end
  if not fs.stat(dir .. "/demo/service.c") then return nil, "demo/service.c is missing" end
  local r = proc.run { argv = { "make", "-s", "-C", dir, "sample-service" }, timeout = 120 }
  if r and r.code == 0 and fs.stat(exe) then return exe end
  return nil, "make sample-service failed: " .. (r and r.stderr or "could not run make")
end

--- start{version = "v1", args = {...}, port = n} -> server (servers.start's, with .metrics,
--- .health, .version). args are extra sample-service flags.
function M.start(opts)
  local exe = assert(M.sample_service())
  local argv = { exe, "--version", opts.version or "v1", "--listen", "127.0.0.1:{port}" }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local s = assert(servers.start { name = "sample-service " .. (opts.version or "v1"), argv = argv,
    port = opts.port, ready_url = "http://127.0.0.1:{port}/metrics" }) -- /health may be made to fail
  s.version, s.metrics, s.health = opts.version or "v1", s.url .. "/metrics", s.url .. "/health"
  return s
end

--- haproxy{baseline = "127.0.0.1:P", canary = "127.0.0.1:Q", weights = {baseline=, canary=}}
--- -> server with .url (the frontend) and .metrics (the exporter).
function M.haproxy(opts)
  local s = assert(servers.haproxy { baseline = opts.baseline, canary = opts.canary,
    weights = opts.weights or { baseline = 50, canary = 50 }, exporter = true })
  s.metrics = s.exporter
  return s
end

--- load(url, n, {concurrency = 16}) -> {requests=, failures=, by_version = {v1 = {requests=,
--- errors=}}, latencies = {seconds...}}. Closed loop: `concurrency` tasks share n requests.
--- A 5xx is an error; the version is the X-Version header sample-service sets.
function M.load(url, n, opts)
  opts = opts or {}
  local out = { requests = 0, failures = 0, by_version = {}, latencies = {}, statuses = {} }
  local next_i = 0
  local function worker()
    while next_i < n do
      next_i = next_i + 1
      local r = http.get(url, { timeout = opts.timeout or 10 })
      out.requests = out.requests + 1
      if not r then
        out.failures = out.failures + 1
      else
        local v = r.headers["x-version"] or "?"
        local b = out.by_version[v] or { requests = 0, errors = 0 }
        out.by_version[v] = b
        b.requests = b.requests + 1
        if r.status >= 500 then b.errors = b.errors + 1 end
        out.statuses[r.status] = (out.statuses[r.status] or 0) + 1
        out.latencies[#out.latencies + 1] = r.time
      end
    end
  end
  local tasks = {}
  for i = 1, math.min(opts.concurrency or 16, n) do tasks[i] = rollout.spawn(worker) end
  for _, t in ipairs(tasks) do t:wait() end
  return out
end

--- The exact q-quantile of a list (nearest rank).
function M.quantile(list, q)
  local s = table.move(list, 1, #list, 1, {})
  table.sort(s)
  if #s == 0 then return nil end
  return s[math.max(1, math.ceil(q * #s))]
end

--- The ctx the engine hands a source, for two servers (or URL tables).
function M.ctx(baseline, canary, extra)
  local function v(s, name, version)
    if not s then return { name = name, version = version } end
    return { name = name, version = s.version or version, url = s.url, metrics = s.metrics, health = s.health }
  end
  local ctx = { service = "sample",
    versions = { baseline = v(baseline, "baseline", "v1"), canary = v(canary, "canary", "v2") } }
  for k, x in pairs(extra or {}) do ctx[k] = x end
  return ctx
end

--- Stop a list of servers (nil entries skipped); for finally/after_each.
function M.stop(list)
  for _, s in pairs(list) do if s and s.stop then s:stop() end end
end

return M

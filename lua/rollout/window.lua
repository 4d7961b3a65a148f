-- rollout.window: trailing-window signals from per-interval increments.
--
-- Sources that observe increments (the scrape source's counter deltas, the probe, the
-- simulator) add one record per version per interval; the engine then asks for signals
-- over any trailing window. This is where docs/semantics.md's signal definitions live:
--   requests  count in the window            rps        requests / window seconds
--   error_rate errors / requests             p50/p95/p99 from the merged latency histograms
--   health    ok / total health checks       cpu/memory/disk  the highest reading in the window
--   restarts  restarts observed in the window
-- A signal with nothing behind it is nil ("no data"), never 0: error_rate and the
-- quantiles need requests, health needs checks, gauges need a reading.
-- Error policy: never raises for missing data: a signal without enough behind it is nil;
-- the caller passes well-formed records (a programming error otherwise).
local histogram = require("rollout.histogram")

local M = {}
M.__index = M

--- new{keep = seconds}: records older than `keep` are dropped.
function M.new(opts)
  return setmetatable({ keep = opts and opts.keep or 3600, records = { baseline = {}, canary = {} } }, M)
end

--- add(version, t, rec): rec = {requests=, errors=, latency=histogram|nil, health_ok=,
--- health_total=, cpu=, memory=, disk=, restarts=} for the interval ending at t.
function M:add(version, t, rec)
  local list = self.records[version]
  if not list then list = {}; self.records[version] = list end
  rec.t = t
  list[#list + 1] = rec
  local cutoff = t - self.keep
  local n, drop = #list, 0
  while drop < n and list[drop + 1].t <= cutoff do drop = drop + 1 end
  if drop > 0 then
    table.move(list, drop + 1, n, 1)
    for i = n - drop + 1, n do list[i] = nil end
  end
end

local function quantiles(hist, out)
  if hist and hist:count() > 0 then
    out.p50, out.p95, out.p99 = hist:quantile(0.50), hist:quantile(0.95), hist:quantile(0.99)
  end
end

--- signals(version, now, window) -> {requests=, rps=, error_rate=, errors=, p50=, p95=, p99=,
--- health=, health_ok=, health_total=, cpu=, memory=, disk=, restarts=, span=} over
--- (now - window, now]. errors, health_ok and health_total are the counts behind the
--- proportions (rollout.proportion decides gates from them); histogram the window's merged
--- latency histogram (nil without requests), for deciding quantile gates with evidence.
function M:signals(version, now, window)
  local list = self.records[version] or {}
  local from = now - window
  local req, err, hok, htot, restarts = 0, 0, 0, 0, 0
  local merged, n_hist, single = nil, 0, nil
  local gauges = {}
  local have_requests, oldest = false, nil
  for i = #list, 1, -1 do
    local r = list[i]
    if r.t <= from then break end
    if r.t <= now then
      oldest = r.t
      if r.requests then req = req + r.requests; have_requests = true end
      err = err + (r.errors or 0)
      hok, htot = hok + (r.health_ok or 0), htot + (r.health_total or 0)
      restarts = restarts + (r.restarts or 0)
      for _, g in ipairs({ "cpu", "memory", "disk" }) do -- the worst reading in the window
        if r[g] ~= nil and (gauges[g] == nil or r[g] > gauges[g]) then gauges[g] = r[g] end
      end
      if r.latency and r.latency:count() > 0 then
        n_hist = n_hist + 1
        if n_hist == 1 then single = r.latency
        else
          if not merged then merged = histogram.new(); merged:merge(single) end
          merged:merge(r.latency)
        end
      end
    end
  end
  local s = { requests = have_requests and req or nil, restarts = restarts }
  if have_requests then s.rps = req / window end
  if req > 0 then s.error_rate, s.errors = err / req, err end
  quantiles(merged or single, s)
  s.histogram = merged or single -- the window's latencies, for gates on quantiles
  if htot > 0 then s.health, s.health_ok, s.health_total = hok / htot, hok, htot end
  s.cpu, s.memory, s.disk = gauges.cpu, gauges.memory, gauges.disk
  s.span = oldest and (now - oldest) or 0
  return s
end

--- latency(version, now, window) -> a merged histogram of the window (for the judge).
function M:latency(version, now, window)
  local h = histogram.new()
  for _, r in ipairs(self.records[version] or {}) do
    if r.t > now - window and r.t <= now and r.latency then h:merge(r.latency) end
  end
  return h
end

return M

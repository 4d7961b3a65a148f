-- rollout.sim.source: synthetic traffic from a scenario (docs/semantics.md): requests arrive at
-- `rps` (Poisson), reach the canary with probability weight/100 (the simulated router's
-- current weights), fail with the version's error_rate, and take a log-normal latency
-- whose median is p50 and whose 99th percentile is p99. Health checks succeed with
-- probability `health`, one per version every `health_every` (default 0.5 s). The source also answers alerts and
-- fails during the scenario's source_errors. Everything derives from the seed.
--
-- For the judge it also keeps raw latencies: each interval's record holds `samples`, up to
-- `reservoir` (default 500) of that interval's latencies per version, taken from the very
-- draws that fill the histogram (sim's lognormal_sample), so the random stream and every
-- other signal are the same as without them. samples(now, window) serves them
-- (rollout.analysis documents the shape).
-- Error policy: the scenario was validated by rollout.sim.scenario before new(); during the
-- scenario's source_errors, tick/signals/alerts/samples return nil, "simulated source
-- error" (an operational failure the engine treats as no data), as a real source's would.
local rngs = require("rollout.rng")
local histogram = require("rollout.histogram")
local window = require("rollout.window")
local reservoir = require("rollout.reservoir")
local analysis = require("rollout.analysis")

local M = {}

--- latency_params(latency) -> mu, sigma: the log-normal of a scenario state's p50/p99
local function latency_params(lat)
  local p50 = lat.p50
  local p99 = lat.p99 or p50
  local mu = math.log(p50)
  local sigma = p99 > p50 and (math.log(p99) - mu) / 2.3263478740408408 or 0
  return mu, sigma
end
M.latency_params = latency_params
M.__index = M

local function state_at(base, t)
  local s = { error_rate = base.error_rate, latency = base.latency, health = base.health,
    cpu = base.cpu, memory = base.memory, disk = base.disk }
  for _, c in ipairs(base.changes or {}) do
    if c.at <= t then for k, v in pairs(c) do if k ~= "at" then s[k] = v end end end
  end
  return s
end

local function rps_at(sc, t)
  local rps = sc.rps
  for _, c in ipairs(sc.traffic_changes) do if c.at <= t then rps = c.rps end end
  return rps
end

--- new(scenario, {router=, interval=, history=, reservoir = latencies kept per version per interval})
function M.new(sc, opts)
  local self = setmetatable({
    sc = sc, router = opts.router, interval = opts.interval or 10,
    rng = rngs.new(sc.seed), store = window.new({ keep = opts.keep or 3600 }),
    provides = { requests = true, rps = true, error_rate = true, p50 = true, p95 = true, p99 = true, health = true, restarts = true },
    generated = 0, reservoir = opts.reservoir or 500,
    -- health checks after each interval's first draw from their own stream: traffic is the
    -- same whatever their rate
    health_rng = rngs.new(sc.seed ~ 0x5eed4ea1),
  }, M)
  for _, g in ipairs({ "cpu", "memory", "disk" }) do
    if sc.canary[g] or sc.baseline[g] then self.provides[g] = true end
  end
  -- traffic before t = 0, all on the baseline: what the runbook's Step 2 measures
  local history = opts.history or 300
  local t = -history
  while t < 0 do
    self:generate(t, t + self.interval, { baseline = 100, canary = 0 })
    t = t + self.interval
  end
  self.last = 0
  return self
end

-- Change points of the scenario inside (t0, t1], so each segment has one state.
function M:cuts(t0, t1)
  local cuts = { t0 }
  local function add(at) if at > t0 and at < t1 then cuts[#cuts + 1] = at end end
  for _, v in ipairs({ "baseline", "canary" }) do for _, c in ipairs(self.sc[v].changes or {}) do add(c.at) end end
  for _, c in ipairs(self.sc.traffic_changes) do add(c.at) end
  table.sort(cuts)
  cuts[#cuts + 1] = t1
  return cuts
end

function M:generate(t0, t1, weights, preview)
  local rng, sc = self.rng, self.sc
  local rec = { baseline = { requests = 0, errors = 0, latency = histogram.new() },
                canary = { requests = 0, errors = 0, latency = histogram.new() } }
  local cuts = self:cuts(t0, t1)
  local keep = self.reservoir
  local parts = { baseline = {}, canary = {} }
  for i = 1, #cuts - 1 do
    local a, b = cuts[i], cuts[i + 1]
    local n = rng:poisson(rps_at(sc, a) * (b - a))
    local nc = rng:binomial(n, weights.canary / 100)
    local counts = { baseline = n - nc, canary = nc }
    -- the header override's preview requests go to the canary whatever the weights (drawn
    -- only when there are any, so every other scenario's random stream is unchanged)
    if preview and preview > 0 then counts.canary = counts.canary + rng:poisson(preview * (b - a)) end
    for _, v in ipairs({ "baseline", "canary" }) do
      local st, r, k = state_at(sc[v], a), rec[v], counts[v]
      r.requests = r.requests + k
      r.errors = r.errors + rng:binomial(k, st.error_rate)
      local mu, sigma = latency_params(st.latency)
      if keep > 0 then
        local p = parts[v]
        p[#p + 1] = { values = rng:lognormal_sample(r.latency, k, mu, sigma, keep), n = k }
      else
        rng:lognormal(r.latency, k, mu, sigma)
      end
    end
  end
  if keep > 0 then
    for _, v in ipairs({ "baseline", "canary" }) do
      local p = parts[v]
      rec[v].samples = #p == 1 and p[1].values or reservoir.merge(p, keep)
    end
  end
  for _, v in ipairs({ "baseline", "canary" }) do
    local st, r = state_at(sc[v], t1), rec[v]
    -- health checks every `health_every` seconds (scenario key, default 0.5 s: 600 in a
    -- 5-minute window, enough to resolve a 0.99 threshold, rollout.proportion)
    local checks = math.max(1, math.floor((t1 - t0) / sc.health_every + 0.5))
    -- the first check draws from the traffic stream as the single check of earlier versions
    -- did, so traffic is the same as then for the same seed; the others from their own stream
    r.health_total = checks
    r.health_ok = (rng:uniform() < st.health and 1 or 0) + (checks > 1 and self.health_rng:binomial(checks - 1, st.health) or 0)
    r.cpu, r.memory, r.disk = st.cpu, st.memory, st.disk
    r.restarts = 0
    self.generated = self.generated + r.requests
  end
  for _, at in ipairs(sc.restarts) do
    if at > t0 and at <= t1 then rec.canary.restarts = rec.canary.restarts + 1 end
  end
  self.store:add("baseline", t1, rec.baseline)
  self.store:add("canary", t1, rec.canary)
end

function M:source_error(t)
  for _, e in ipairs(self.sc.source_errors) do
    if t >= e.from and t < e.to then return true end
  end
  return false
end

--- tick(now): one interval of traffic; fails during the scenario's source_errors.
function M:tick(now)
  if now > self.last then
    self:generate(self.last, now, self.router.weights, self.router.override and self.sc.preview_rps)
    self.last = now
  end
  if self:source_error(now) then return nil, "simulated source error" end
  return true
end

function M:signals(now, win)
  if self:source_error(now) then return nil, "simulated source error" end
  return { baseline = self.store:signals("baseline", now, win), canary = self.store:signals("canary", now, win) }
end

--- samples(now, window) -> {baseline = S, canary = S} for the judge: raw latencies and
--- per-interval series over (now - window, now] (rollout.analysis.window_samples).
function M:samples(now, win, opts)
  if self:source_error(now) then return nil, "simulated source error" end
  opts = { max = opts and opts.max, interval = self.interval, raw = self.reservoir > 0 }
  return { baseline = analysis.window_samples(self.store, "baseline", now, win, opts),
           canary = analysis.window_samples(self.store, "canary", now, win, opts) }
end

function M:alerts(now)
  local out = {}
  for _, a in ipairs(self.sc.alerts) do
    if a.at <= now and (not a.to or now < a.to) then
      local labels = { severity = a.severity, alertname = a.name }
      for k, v in pairs(a.labels) do labels[k] = v end
      out[#out + 1] = { name = a.name, severity = a.severity, labels = labels }
    end
  end
  return out
end

--- src:from(t0): this source as the engine sees it, on the clock that read t0 when the
--- scenario began (the scenario's t = 0): every call's `now` is shifted by t0.
function M:from(t0)
  return {
    provides = self.provides,
    tick = function(_, now) return self:tick(now - t0) end,
    signals = function(_, now, win) return self:signals(now - t0, win) end,
    alerts = function(_, now) return self:alerts(now - t0) end,
    samples = function(_, now, win, o) return self:samples(now - t0, win, o) end,
  }
end

return M

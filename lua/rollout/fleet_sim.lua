-- rollout.fleet_sim: a lean synthetic source and a simulated router, for fleet mode
-- (`rollout submit --scenario FILE`) and the fleet benchmark, where thousands of rollouts
-- share one process on the real clock.
--
-- The source reads the scenario format of docs/semantics.md (rollout.sim.scenario checks it) but,
-- unlike rollout.sim.source, draws nothing: each window's signals are the scenario's
-- expected values, computed from a handful of numbers. Requests are rps x time x share
-- (the share from the weights the router confirmed, over time), errors are requests x
-- error_rate, p50/p95/p99 come from the version's log-normal latency (a request-weighted
-- mean over the window's segments), health is the version's health. So a rollout keeps
-- no per-interval histograms (rollout.sim.source keeps ~41 KB of them per interval): its
-- state is the weight history, a few entries long. The same scenario always gives the
-- same decisions, which is what a takeover test needs: an interrupted rollout and an
-- uninterrupted one must agree.
--
-- Scenario time is the rollout's own time (opts.clock(), seconds since its t = 0), so a
-- rollout taken over by another agent continues the same scenario where it stopped.
--
--   local src = fleet_sim.source(sc, {clock = function() return engine:elapsed() end})
--   src:record_weight(t, canary)      the router confirmed `canary` % at scenario time t
--   src:tick(now) / src:signals(now, window) / src:alerts(now)   the sources interface
--   local r = fleet_sim.router({on_weights = fn(w)})              weights apply at once
--
-- Error policy: a bad scenario raises from source(); during the scenario's source_errors
-- tick and signals return nil, "simulated source error".
local sim_source = require("rollout.sim.source")

local M = {}

local Z95, Z99 = 1.6448536269514722, 2.3263478740408408
local exp = math.exp

-- ---- the source -----------------------------------------------------------------------

local S = {}
S.__index = S

local PROVIDES = { requests = true, rps = true, error_rate = true, p50 = true, p95 = true, p99 = true,
  health = true, restarts = true }

-- Per-version states precomputed once per scenario (shared by every rollout using it):
-- {at, error_rate, health, cpu, memory, disk, mu, sigma}, sorted by `at`.
local function version_timeline(base)
  local function snap(st, at)
    local mu, sigma = sim_source.latency_params(st.latency)
    return { at = at, error_rate = st.error_rate or 0, health = st.health or 1, cpu = st.cpu,
      memory = st.memory, disk = st.disk, p50 = exp(mu), p95 = exp(mu + Z95 * sigma), p99 = exp(mu + Z99 * sigma) }
  end
  local cur = { error_rate = base.error_rate, latency = base.latency, health = base.health,
    cpu = base.cpu, memory = base.memory, disk = base.disk }
  local list = { snap(cur, -math.huge) }
  for _, c in ipairs(base.changes or {}) do
    for k, v in pairs(c) do if k ~= "at" then cur[k] = v end end
    list[#list + 1] = snap(cur, c.at)
  end
  return list
end

--- prepare(sc) -> a compiled scenario; share it between rollouts (it is read-only).
function M.prepare(sc)
  if sc.compiled then return sc.compiled end
  local traffic = { { at = -math.huge, rps = sc.rps } }
  for _, c in ipairs(sc.traffic_changes) do traffic[#traffic + 1] = { at = c.at, rps = c.rps } end
  local provides = {}
  for k in pairs(PROVIDES) do provides[k] = true end
  for _, g in ipairs({ "cpu", "memory", "disk" }) do
    if sc.canary[g] or sc.baseline[g] then provides[g] = true end
  end
  sc.compiled = { sc = sc, traffic = traffic, baseline = version_timeline(sc.baseline),
    canary = version_timeline(sc.canary), provides = provides }
  return sc.compiled
end

local function at_time(list, t)
  local cur = list[1]
  for i = 2, #list do
    if list[i].at <= t then cur = list[i] else break end
  end
  return cur
end

--- source(sc, {clock = fn() -> scenario seconds}) -> src. sc: a checked scenario (or one
--- prepared with M.prepare).
function M.source(sc, opts)
  local cs = sc.sc and sc or M.prepare(sc)
  return setmetatable({ cs = cs, clock = opts.clock, provides = cs.provides, name = "synthetic",
    wt = { -math.huge }, wc = { 0 } }, S)
end

--- The router confirmed `canary` % at scenario time t (later entries must not go back).
function S:record_weight(t, canary)
  local n = #self.wt
  if self.wc[n] == canary then return end
  if t < self.wt[n] then t = self.wt[n] end
  self.wt[n + 1], self.wc[n + 1] = t, canary
end

local function in_error(sc, t)
  for _, e in ipairs(sc.source_errors) do
    if t >= e.from and t < e.to then return true end
  end
  return false
end

function S:tick()
  if in_error(self.cs.sc, self.clock()) then return nil, "simulated source error" end
  return true
end

-- The expected traffic of both versions over (a, b]: cut where the weight, the rps or a
-- version's state changes, and add the pieces up.
function S:window(a, b)
  local cs, wt, wc = self.cs, self.wt, self.wc
  local cuts = { a }
  local function add(list)
    for i = 2, #list do
      local at = list[i].at
      if at > a and at < b then cuts[#cuts + 1] = at end
    end
  end
  for i = 2, #wt do if wt[i] > a and wt[i] < b then cuts[#cuts + 1] = wt[i] end end
  add(cs.traffic); add(cs.baseline); add(cs.canary)
  if #cuts > 1 then table.sort(cuts) end
  cuts[#cuts + 1] = b
  local acc = { baseline = { 0, 0, 0, 0, 0 }, canary = { 0, 0, 0, 0, 0 } } -- requests, errors, p50, p95, p99 sums
  local wi = 1
  for i = 1, #cuts - 1 do
    local s, e = cuts[i], cuts[i + 1]
    if e > s then
      while wi < #wt and wt[wi + 1] <= s do wi = wi + 1 end
      local share = wc[wi] / 100
      local n = at_time(cs.traffic, s).rps * (e - s)
      for v, frac in pairs({ baseline = 1 - share, canary = share }) do
        local k = n * frac
        if k > 0 then
          local st, x = at_time(cs[v], s), acc[v]
          x[1] = x[1] + k
          x[2] = x[2] + k * st.error_rate
          x[3] = x[3] + k * st.p50
          x[4] = x[4] + k * st.p95
          x[5] = x[5] + k * st.p99
        end
      end
    end
  end
  return acc
end

local function restarts_in(sc, a, b)
  local n = 0
  for _, at in ipairs(sc.restarts) do if at > a and at <= b then n = n + 1 end end
  return n
end

function S:signals(_, win)
  local t = self.clock()
  local sc = self.cs.sc
  if in_error(sc, t) then return nil, "simulated source error" end
  local acc = self:window(t - win, t)
  local out = {}
  for _, v in ipairs({ "baseline", "canary" }) do
    local x, st = acc[v], at_time(self.cs[v], t)
    local n = math.floor(x[1] + 0.5)
    local s = { requests = n, rps = x[1] / win, health = st.health, cpu = st.cpu, memory = st.memory, disk = st.disk }
    if n > 0 then
      s.error_rate = x[2] / x[1]
      s.p50, s.p95, s.p99 = x[3] / x[1], x[4] / x[1], x[5] / x[1]
    end
    out[v] = s
  end
  out.canary.restarts = restarts_in(sc, t - win, t)
  out.baseline.restarts = 0
  return out
end

function S:alerts()
  local t = self.clock()
  local out = {}
  for _, a in ipairs(self.cs.sc.alerts) do
    if a.at <= t and (not a.to or t < a.to) then
      local labels = { severity = a.severity, alertname = a.name }
      for k, v in pairs(a.labels) do labels[k] = v end
      out[#out + 1] = { name = a.name, severity = a.severity, labels = labels }
    end
  end
  return out
end

function S.close() end

-- ---- the router -------------------------------------------------------------------------

local R = {}
R.__index = R

--- router({on_weights = fn(w)}) -> a router whose weights apply and read back at once.
function M.router(opts)
  opts = opts or {}
  return setmetatable({ weights = { baseline = 100, canary = 0 }, on_weights = opts.on_weights }, R)
end

function R:set_weights(w)
  self.weights = { baseline = w.baseline, canary = w.canary }
  if self.on_weights then self.on_weights(self.weights) end
  return true
end
function R:get_weights() return { baseline = self.weights.baseline, canary = self.weights.canary } end
function R.verify() return true end
function R:rollback() return self:set_weights({ baseline = 100, canary = 0 }) end
function R.header_override() return true end
function R.check() return { { name = "simulated router", ok = true, detail = "fleet simulation" } } end
function R:describe() return { type = "simulated", weights = self.weights } end

return M

-- How the eval's scenarios are labelled: from the scenario's own parameters (what the
-- simulator draws from), compared version against version at the same time, never from
-- what any engine decides. docs/judge.md explains the choice of margins.
--
--   bad   at some time the canary is worse than the baseline by a margin that is both
--         relatively large and operationally meaningful, in at least one golden signal:
--           errors   canary - baseline >= 0.25 percentage points  and  canary >= 1.5 x baseline
--           median   p50 >= 1.20 x baseline                        and  >= 5 ms slower
--           tail     p99 >= 1.25 x baseline                        and  >= 25 ms slower
--         A rollout should roll it back. fault_at = the first time this holds.
--   good  at every time the canary is within a small margin of the baseline (or better):
--           errors   canary <= max(1.2 x baseline, baseline + 0.05 pp)
--           latency  p50 and p99 <= 1.05 x baseline
--         whatever the absolute values: a canary exactly as degraded as its baseline is
--         not the cause (the environment is), and rolling it back does not help. A
--         rollout should promote it.
--   grey  neither: the generator does not produce these (no label would be defensible).
--   inconclusive  total traffic below the runbook's 100 req/s at any time while the
--         canary is judged: a correct engine cannot conclude and pauses (docs/semantics.md).
local scenario = require("rollout.sim.scenario")

local M = {}

M.BAD = { err_pp = 0.0025, err_ratio = 1.5, p50_ratio = 1.20, p50_abs = 0.005, p99_ratio = 1.25, p99_abs = 0.025 }
M.GOOD = { err_ratio = 1.2, err_pp = 0.0005, lat_ratio = 1.05 }
M.MIN_RPS = 100

--- state_label(b, c) -> "bad", why | "good" | "grey", why   (b, c: {error_rate=, latency={p50=, p99=}} in seconds)
function M.state_label(b, c)
  local B, G = M.BAD, M.GOOD
  local be, ce = b.error_rate or 0, c.error_rate or 0
  local bl, cl = b.latency, c.latency
  local bp99, cp99 = bl.p99 or bl.p50, cl.p99 or cl.p50
  if ce - be >= B.err_pp - 1e-12 and ce >= B.err_ratio * be then return "bad", "errors" end
  if cl.p50 >= B.p50_ratio * bl.p50 and cl.p50 - bl.p50 >= B.p50_abs - 1e-12 then return "bad", "median latency" end
  if cp99 >= B.p99_ratio * bp99 and cp99 - bp99 >= B.p99_abs - 1e-12 then return "bad", "tail latency" end
  local good = ce <= math.max(G.err_ratio * be, be + G.err_pp) + 1e-12
    and cl.p50 <= G.lat_ratio * bl.p50 + 1e-12 and cp99 <= G.lat_ratio * bp99 + 1e-12
  if good then return "good" end
  return "grey", "between the margins"
end

local function state_at(v, t)
  local s = { error_rate = v.error_rate, latency = v.latency }
  for _, c in ipairs(v.changes or {}) do
    if c.at <= t then
      if c.error_rate ~= nil then s.error_rate = c.error_rate end
      if c.latency ~= nil then s.latency = c.latency end
    end
  end
  return s
end

--- label(raw scenario [, until_t]) -> label, fault_at, why. Checked at t = 0 and at every
--- change point before until_t (default 55 m, the end of a promoted rollout).
function M.label(raw, until_t)
  local sc = assert(scenario.check(raw))
  until_t = until_t or 3300
  local times = { 0 }
  for _, v in ipairs({ "baseline", "canary" }) do
    for _, c in ipairs(sc[v].changes or {}) do if c.at < until_t then times[#times + 1] = c.at end end
  end
  for _, c in ipairs(sc.traffic_changes) do if c.at < until_t then times[#times + 1] = c.at end end
  table.sort(times)
  local rps = sc.rps
  local grey
  for _, t in ipairs(times) do
    for _, c in ipairs(sc.traffic_changes) do if c.at <= t then rps = c.rps end end
    if rps < M.MIN_RPS then return "inconclusive", t, "traffic below 100 req/s" end
    local l, why = M.state_label(state_at(sc.baseline, t), state_at(sc.canary, t))
    if l == "bad" then return "bad", t, why end
    if l == "grey" then grey = grey or why end
  end
  if grey then return "grey", nil, grey end
  return "good"
end

return M

-- rollout.proportion: deciding a threshold on a proportion (health-check success, error
-- rate, the share of requests slower than a latency limit) from counts, so that a gate
-- neither fails nor passes on sampling noise.
--
-- The rule (README "Gates on proportions" states it for users):
--   x of n trials, threshold θ, direction "min" (success share, must be >= θ) or "max"
--   (failure share, must be <= θ); q = the failure share the threshold allows (1 - θ for
--   "min", θ for "max"); f = the failures observed.
--   fail   the exact one-sided binomial test says the canary is worse than the threshold:
--          P(F >= f | n, q) <= alpha. alpha is half of 1 - policy.confidence (default
--          0.95) at the end of the hold; each extension look gets the other half divided
--          by the stage's possible extension looks (Bonferroni). So a canary exactly at
--          its threshold is failed with probability <= 1 - confidence per stage, however
--          often the hold is extended. (Exact, not Wilson: near 0 and 1 the Wilson bound
--          fails such a canary up to twice as often as it says.)
--   pass   not failed, and n >= n_min: enough trials that a canary `detect` times worse
--          (failure share detect x q; policy.detect, default 3) is failed at the first look
--          with probability >= `power` (policy.power, default 0.8): the exact power of the
--          exact test, searched upwards from the normal approximation
--            n = ((z(1 - alpha) sqrt(q(1-q)) + z(power) sqrt(q1(1-q1))) / (q1 - q))^2.
--          At the defaults: 340 trials for a 0.99 (or 1 %) threshold, 169 for 0.98 (2 %).
--          "Pass" means "not significantly worse, with a sample able to see a clearly worse
--          canary", not "proven better": proving 0.995 >= 0.99 takes thousands of checks.
--   short  otherwise (too few trials to tell): the engine extends the hold, then the gate
--          is inconclusive. Too little evidence never passes.
-- The event shows the one-sided Wilson bounds at `confidence` (lower, upper) and the p-value.
--
-- Error policy: pure functions; bad arguments raise (callers pass validated numbers).
local M = {}

M.DEFAULTS = { confidence = 0.95, power = 0.8, detect = 3 }

--- z(p) -> the standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
function M.z(p)
  assert(p > 0 and p < 1, "z: p must be in (0, 1)")
  local a = { -3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
    1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00 }
  local b = { -5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
    6.680131188771972e+01, -1.328068155288572e+01 }
  local c = { -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
    -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00 }
  local d = { 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00 }
  local lo = 0.02425
  if p < lo then
    local q = math.sqrt(-2 * math.log(p))
    return (((((c[1] * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) * q + c[6])
      / ((((d[1] * q + d[2]) * q + d[3]) * q + d[4]) * q + 1)
  elseif p > 1 - lo then
    return -M.z(1 - p)
  end
  local q = p - 0.5
  local r = q * q
  return (((((a[1] * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * r + a[6]) * q
    / (((((b[1] * r + b[2]) * r + b[3]) * r + b[4]) * r + b[5]) * r + 1)
end

--- wilson(x, n, confidence) -> lower, upper: one-sided Wilson score bounds (each at
--- `confidence`). n = 0 gives 0, 1.
function M.wilson(x, n, confidence)
  if n <= 0 then return 0, 1 end
  local z = M.z(confidence)
  local p = x / n
  local z2 = z * z
  local den = 1 + z2 / n
  local centre = (p + z2 / (2 * n)) / den
  local half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
  return math.max(0, centre - half), math.min(1, centre + half)
end

-- log Γ(x), x > 0 (Lanczos, g = 7, n = 9: ~15 significant digits)
local LANCZOS = { 0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
  -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7 }
local function lgamma(x)
  if x < 0.5 then return math.log(math.pi / math.abs(math.sin(math.pi * x))) - lgamma(1 - x) end
  x = x - 1
  local a = LANCZOS[1]
  local t = x + 7.5
  for i = 2, 9 do a = a + LANCZOS[i] / (x + i - 1) end
  return 0.5 * math.log(2 * math.pi) + (x + 0.5) * math.log(t) - t + math.log(a)
end

-- the continued fraction of the incomplete beta (Lentz)
local function betacf(a, b, x)
  local tiny = 1e-300
  local qab, qap, qam = a + b, a + 1, a - 1
  local c, d = 1, 1 - qab * x / qap
  if math.abs(d) < tiny then d = tiny end
  d = 1 / d
  local h = d
  for m = 1, 100000 do
    local m2 = 2 * m
    local aa = m * (b - m) * x / ((qam + m2) * (a + m2))
    d = 1 + aa * d; if math.abs(d) < tiny then d = tiny end
    c = 1 + aa / c; if math.abs(c) < tiny then c = tiny end
    d = 1 / d
    h = h * d * c
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
    d = 1 + aa * d; if math.abs(d) < tiny then d = tiny end
    c = 1 + aa / c; if math.abs(c) < tiny then c = tiny end
    d = 1 / d
    local del = d * c
    h = h * del
    if math.abs(del - 1) < 1e-15 then break end
  end
  return h
end

--- ibeta(x, a, b) -> the regularised incomplete beta I_x(a, b), a, b > 0.
function M.ibeta(x, a, b)
  if x <= 0 then return 0 end
  if x >= 1 then return 1 end
  local lbt = lgamma(a + b) - lgamma(a) - lgamma(b) + a * math.log(x) + b * math.log(1 - x)
  if x < (a + 1) / (a + b + 2) then return math.exp(lbt) * betacf(a, b, x) / a end
  return 1 - math.exp(lbt) * betacf(b, a, 1 - x) / b
end

--- tail(k, n, q) -> P(X >= k) for X ~ Binomial(n, q): the exact one-sided p-value of k
--- failures in n trials against a failure share q.
function M.tail(k, n, q)
  if k <= 0 then return 1 end
  if k > n then return 0 end
  if q <= 0 then return 0 end
  if q >= 1 then return 1 end
  return M.ibeta(q, k, n - k + 1)
end

--- critical(n, q, alpha) -> the fewest failures in n trials whose tail(k, n, q) <= alpha
--- (n + 1 when even n failures are not significant).
function M.critical(n, q, alpha)
  local lo, hi = 0, n + 1 -- tail(lo) > alpha, tail(hi) <= alpha (tail(n + 1) = 0)
  while hi - lo > 1 do
    local mid = (lo + hi) // 2
    if M.tail(mid, n, q) <= alpha then hi = mid else lo = mid end
  end
  return hi
end

--- alpha(policy, look, looks) -> the significance level of one gate look: half of
--- 1 - confidence at the end of the hold (look 1), the other half shared equally by the
--- extension looks the stage can have (looks - 1), so a canary exactly at its threshold is
--- failed with probability <= 1 - confidence per stage however often its hold is extended.
function M.alpha(confidence, look, looks)
  local a = 1 - (confidence or M.DEFAULTS.confidence)
  if (look or 1) <= 1 or (looks or 1) <= 1 then return a / 2 end
  return a / 2 / (looks - 1)
end

local memo = {}

--- min_trials(threshold, dir, opts) -> n_min (see the header), or math.huge when no sample
--- can resolve the threshold (θ = 0 for "max", θ = 1 for "min"). opts.alpha is the first
--- look's level (default alpha(confidence, 1)).
function M.min_trials(th, dir, opts)
  opts = opts or {}
  local alpha = opts.alpha or M.alpha(opts.confidence, 1)
  local power, detect = opts.power or M.DEFAULTS.power, opts.detect or M.DEFAULTS.detect
  local q = dir == "max" and th or 1 - th -- the failure share allowed
  local q1 = math.min(1, q * detect)
  local gap = q1 - q
  if gap <= 0 or q <= 0 then return math.huge end
  local key = string.format("%.17g/%.17g/%.17g/%.17g", q, alpha, power, detect)
  if memo[key] then return memo[key] end
  local num = M.z(1 - alpha) * math.sqrt(q * (1 - q)) + M.z(power) * math.sqrt(q1 * (1 - q1))
  local n = math.max(1, math.ceil((num / gap) ^ 2))
  -- the normal approximation is a start: the exact power of the exact test decides
  -- (steps of 0.5 % of n, so the answer is within that of the smallest such n)
  if q1 < 1 then
    while M.tail(M.critical(n, q, alpha), n, q1) < power do n = n + math.max(1, n // 200) end
  end
  memo[key] = n
  return n
end

--- decide{x=, n=, threshold=, dir = "min"|"max", alpha=, confidence=, power=, detect=} ->
--- status ("pass" | "fail" | "short"), info {x=, n=, p=, lower=, upper=, n_min=, alpha=}.
--- x counts successes for "min", failures for "max". alpha is this look's level.
function M.decide(a)
  local alpha = a.alpha or M.alpha(a.confidence, 1)
  local conf = a.confidence or M.DEFAULTS.confidence
  local n = a.n
  local failures = a.dir == "min" and (n - a.x) or a.x
  local q = a.dir == "min" and (1 - a.threshold) or a.threshold
  local p = n > 0 and M.tail(failures, n, q) or 1
  local lower, upper = M.wilson(a.x, n, conf)
  local n_min = M.min_trials(a.threshold, a.dir, { alpha = M.alpha(conf, 1), power = a.power, detect = a.detect })
  local info = { x = a.x, n = n, p = p, lower = lower, upper = upper, n_min = n_min ~= math.huge and n_min or nil,
    alpha = alpha }
  if n > 0 and failures > 0 and p <= alpha then return "fail", info end
  if n >= n_min then return "pass", info end
  return "short", info
end

return M

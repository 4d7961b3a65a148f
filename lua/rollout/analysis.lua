-- rollout.analysis: the statistical judge (rollout.judge) as a stage gate, and the
-- runbook's abTest.
--
-- The engine calls analysis.gate(engine, stage) at the end of a hold once every static
-- threshold holds. It runs, for that stage:
--   judge    when the stage says `judge = true | {...}` or the playbook's
--            `judge.stages` names it (`true` / "all" for every stage); a stage's table
--            overrides the playbook's `judge` keys;
--   ab_test  when `ab_test.enabled`, at the stages `ab_test.gate` names (true, or a list of
--            stage names; unset: the stages below 100 % whose min_samples reaches
--            ab_test.min_samples, the runbook's Half; false: none):
--            one metric (`ab_test.metric`, default latency_p99) that fails on an
--            increase significant at `ab_test.significance` and larger than
--            `ab_test.allowed_increase` (mean ratio, default 1.1), over the whole hold so
--            far, once both versions have `ab_test.min_samples` requests in it.
-- Never at a stage of weight 100: the baseline has no traffic to compare with (the
-- "judge" event says "skipped").
-- and answers "pass" | "fail", why | "inconclusive", why:
--   fail          the judge's result is "fail" (or "marginal" with on_marginal = "fail");
--                 why is "judge" or "ab_test" (the engine's reason gate:judge / gate:ab_test)
--   inconclusive  too few requests (why "<name>_min_samples"), no data in half the
--                 metrics ("<name>_no_data": docs/semantics.md, no data never passes), a
--                 marginal score ("<name>_marginal", the default on_marginal), or no
--                 source with samples ("<name>_source_error"). The engine extends the hold
--                 one interval at a time up to max_hold, like any other shortfall.
-- Each run emits a "judge" event with the score, the result and every metric's numbers.
--
-- Samples. A source may answer samples(now, window [, {max = n}]) ->
--   {baseline = V, canary = V} | nil, err, where V is
--   { requests = <requests in the window>,
--     latency = {raw request latencies, seconds},            -- a merged reservoir
--     error_rate = {...}, p50 = {...}, p95 = {...}, p99 = {...}, rps = {...}, health = {...},
--     cpu/memory/disk = {...} (where measured) }                -- one value per interval
-- Per-interval values are NaN for an interval without data (the metric's `nan` strategy
-- decides). Sources built on rollout.window get this from window_samples() below: each
-- interval's record may carry `samples`, a bounded reservoir of that interval's raw
-- latencies (rollout.reservoir; the simulator keeps up to 500 per version per interval),
-- and the window's reservoirs are merged in proportion to each interval's requests and
-- capped at `max_samples` (default 20,000) per version. A source without samples() but
-- with a rollout.window in `window` (scrape, probe) is read the same way, without raw
-- latencies. A signal that no source provides is "not measured": the default metrics
-- leave it out (the event lists it), a metric the playbook names has no data. The
-- prometheus source answers samples() from range queries and histogram buckets
-- (rollout.sources.prometheus). Without either kind of source the gate is inconclusive.
--
-- Error policy: configuration errors were reported when the playbook loaded; a source's
-- failure is an inconclusive verdict with the source's message in the event.
local rollout = require("rollout")
local judge = require("rollout.judge")
local reservoir = require("rollout.reservoir")
local units = require("rollout.units")
local proportion = require("rollout.proportion")

local M = {}
local NAN = 0 / 0

-- ---- samples from a rollout.window ------------------------------------------------------

local GAUGES = { "cpu", "memory", "disk" }

--- window_samples(store, version, now, window [, {max = n, interval = s, raw = bool}]) -> V
--- (see above). `latency` is there when raw (the source keeps reservoirs) or when some
--- interval in the window has `samples`; otherwise the signal is not measured.
function M.window_samples(store, version, now, win, opts)
  opts = opts or {}
  local list = store.records[version] or {}
  local v = { requests = 0, error_rate = {}, p50 = {}, p95 = {}, p99 = {}, rps = {}, health = {} }
  local gauges, parts = {}, {}
  local from, prev_t = now - win, nil
  for _, r in ipairs(list) do
    if r.t > from and r.t <= now then
      local req = r.requests
      local width = prev_t and (r.t - prev_t) or opts.interval or 10
      v.requests = v.requests + (req or 0)
      v.error_rate[#v.error_rate + 1] = (req and req > 0) and (r.errors or 0) / req or NAN
      local h = r.latency
      local has = h and h:count() > 0
      v.p50[#v.p50 + 1] = has and h:quantile(0.50) or NAN
      v.p95[#v.p95 + 1] = has and h:quantile(0.95) or NAN
      v.p99[#v.p99 + 1] = has and h:quantile(0.99) or NAN
      v.rps[#v.rps + 1] = (req and width > 0) and req / width or NAN
      v.health[#v.health + 1] = (r.health_total or 0) > 0 and r.health_ok / r.health_total or NAN
      for _, g in ipairs(GAUGES) do
        gauges[g] = gauges[g] or {}
        gauges[g][#gauges[g] + 1] = r[g] == nil and NAN or r[g]
        if r[g] ~= nil then gauges[g].seen = true end
      end
      if r.samples then parts[#parts + 1] = { values = r.samples, n = req or #r.samples } end
    end
    prev_t = r.t
  end
  for _, g in ipairs(GAUGES) do
    if gauges[g] and gauges[g].seen then gauges[g].seen = nil; v[g] = gauges[g] end
  end
  -- raw latencies only where the source keeps them (opts.raw) or some interval has them
  if opts.raw or #parts > 0 then v.latency = reservoir.merge(parts, opts.max or judge.DEFAULTS.max_samples) end
  return v
end

--- gather(engine, now, window [, opts]) -> {baseline = V, canary = V} | nil, err. The first
--- source that has a key provides it (as engine:signals merges signals).
function M.gather(engine, now, win, opts)
  local merged = { baseline = {}, canary = {} }
  local any = false
  for _, src in ipairs(engine.sources) do
    local s, err
    if src.samples then
      s, err = src:samples(now, win, opts)
      if not s then return nil, err or "source error" end
    elseif type(src.window) == "table" and type(src.window.records) == "table" then
      s = { baseline = M.window_samples(src.window, "baseline", now, win, opts),
            canary = M.window_samples(src.window, "canary", now, win, opts) }
    end
    if s then
      any = true
      for _, ver in ipairs({ "baseline", "canary" }) do
        for k, x in pairs(s[ver] or {}) do if merged[ver][k] == nil then merged[ver][k] = x end end
      end
    end
  end
  if not any then return nil, "no source provides samples (samples(now, window) or a rollout.window)" end
  return merged
end

-- ---- which configuration applies ---------------------------------------------------------

local function listed(stages, stage)
  if stages == true or stages == "all" then return true end
  if type(stages) ~= "table" then return false end
  for _, n in ipairs(stages) do if n == stage.name then return true end end
  return false
end

-- normalised configurations, per playbook and stage (a playbook does not change once loaded)
local cache = setmetatable({}, { __mode = "k" })

local function cached(pb, stage, key, build)
  local per_pb = cache[pb]
  if not per_pb then per_pb = setmetatable({}, { __mode = "k" }); cache[pb] = per_pb end
  local c = per_pb[stage]
  if not c then c = {}; per_pb[stage] = c end
  if c[key] == nil then c[key] = build() or false end
  return c[key] or nil
end

--- judge_config(pb, stage) -> the normalised judge configuration for the stage, or nil.
function M.judge_config(pb, stage)
  local own = stage.judge
  if own == false then return nil end
  if not own and not (pb.judge and listed(pb.judge.stages, stage)) then return nil end
  return cached(pb, stage, "judge", function()
    return judge.normalise(judge.merge(pb.judge, type(own) == "table" and own or nil))
  end)
end

-- The runbook's abTest gives a significance level only. With 10^5 requests a significance
-- test alone flags differences nobody acts on (the shared healthy scenario's canary has a
-- 3 % higher p99 and fails it), so by default the A/B test also wants the canary's metric
-- 10 % higher on average; ab_test.allowed_increase = 1 is the bare test.
M.AB_ALLOWED_INCREASE = 1.1

--- ab_config(pb, stage) -> the runbook's abTest as a one-metric judge, or nil when it does
--- not gate this stage.
function M.ab_config(pb, stage)
  local ab = pb.ab_test
  if not (type(ab) == "table" and ab.enabled) then return nil end
  local gate = ab.gate
  if gate == nil then
    -- enabled without a say where: the stages whose own min_samples reaches the test's
    -- (the runbook's minSampleSize 10,000 at Half), so the test has its samples by the end
    -- of their hold
    gate = stage.weight < 100 and (stage.min_samples or 0) > 0 and stage.min_samples >= (ab.min_samples or 0)
  end
  if not (gate and listed(gate, stage)) then return nil end
  return cached(pb, stage, "ab_test", function()
    return judge.normalise({
      window = "hold", significance = ab.significance or 0.05, min_samples = ab.min_samples or 0,
      pass = 100, marginal = 100,
      metrics = { { name = "ab_test", signal = ab.metric or "latency_p99", direction = "increase",
        allowed_increase = ab.allowed_increase or M.AB_ALLOWED_INCREASE, group = "ab_test" } },
    })
  end)
end

--- enabled(pb, stage) -> whether analysis.gate has anything to do at this stage.
function M.enabled(pb, stage)
  return M.judge_config(pb, stage) ~= nil or M.ab_config(pb, stage) ~= nil
end

--- wanted(pb) -> whether any stage runs the judge or the A/B test (a simulation keeps raw
--- latencies only then).
function M.wanted(pb)
  for _, st in ipairs(pb.stages or {}) do if M.enabled(pb, st) then return true end end
  return false
end

-- ---- the gate ------------------------------------------------------------------------------

local function window_of(cfg, pb, stage, held)
  -- the whole hold: the intervals that ended after the stage began
  if cfg.window == "hold" then return held - 1e-6 end
  if cfg.window == "gate" then return math.min(stage.hold, pb.gate_window) end
  return units.parse("duration", cfg.window)
end

local function verdict(res, cfg, name)
  if #res.insufficient > 0 then return "inconclusive", name .. "_min_samples" end
  if res.nodata then return "inconclusive", name .. "_no_data" end
  if res.result == "pass" then return "pass" end
  if res.result == "marginal" then
    if cfg.on_marginal == "pass" then return "pass" end
    if cfg.on_marginal == "fail" then return "fail", name end
    return "inconclusive", name .. "_marginal"
  end
  return "fail", name
end

local function finite(x)
  if type(x) ~= "number" or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end

-- A metric's numbers for the event: what a person needs to see why it was classified so.
local function metric_fields(r)
  return {
    name = r.name, signal = r.signal, classification = r.classification, reason = r.reason,
    critical = r.critical or nil, p = r.p, p_greater = r.p_greater, shift = r.shift,
    ci = r.ci and { finite(r.ci[1]), finite(r.ci[2]) }, ratio = finite(r.ratio), cles = r.cles,
    effect = finite(r.effect), n = r.n, samples = r.samples,
    baseline = { median = r.baseline.median, mean = r.baseline.mean, p99 = r.baseline.p99 },
    canary = { median = r.canary.median, mean = r.canary.mean, p99 = r.canary.p99 },
  }
end

local function run(engine, stage, name, cfg, now, held)
  local win = window_of(cfg, engine.pb, stage, held)
  local ev = { name = name, window = win }
  local data, err = M.gather(engine, now, win, { max = cfg.max_samples, interval = engine.pb.interval })
  if not data then
    ev.verdict, ev.why, ev.error = "inconclusive", name .. "_source_error", err
    engine:emit("judge", ev)
    return ev.verdict, ev.why
  end
  -- A signal no source provides is not measured (as a static threshold's "not_measured"):
  -- the default metrics leave it out; a metric the playbook names stays and has no data.
  local input, kept, not_measured = {}, {}, {}
  for _, m in ipairs(cfg.metrics) do
    if data.baseline[m.signal] == nil and data.canary[m.signal] == nil then not_measured[#not_measured + 1] = m.name end
    if not (cfg.default_metrics and data.baseline[m.signal] == nil and data.canary[m.signal] == nil) then kept[#kept + 1] = m end
    input[m.name] = { baseline = data.baseline[m.signal], canary = data.canary[m.signal],
      n = { baseline = data.baseline.requests or 0, canary = data.canary.requests or 0 } }
  end
  if #not_measured > 0 then ev.not_measured = not_measured end
  if #kept == 0 then
    ev.verdict, ev.why = "inconclusive", name .. "_no_data"
    engine:emit("judge", ev)
    return ev.verdict, ev.why
  end
  if #kept < #cfg.metrics then
    local c = {}
    for k, v in pairs(cfg) do c[k] = v end
    c.metrics = kept
    cfg = c
  end
  local res = judge.evaluate(cfg, input)
  local v, why = verdict(res, cfg, name)
  ev.score, ev.result, ev.reason, ev.verdict, ev.why = res.score, res.result, res.reason, v, why
  ev.pass, ev.marginal = res.pass, res.marginal
  if #res.critical > 0 then ev.critical = res.critical end
  if #res.insufficient > 0 then ev.insufficient = res.insufficient end
  ev.metrics, ev.groups = {}, {}
  for i, r in ipairs(res.metrics) do ev.metrics[i] = metric_fields(r) end
  for i, g in ipairs(res.groups) do ev.groups[i] = { name = g.name, score = g.score, weight = g.weight, counts = g.counts } end
  engine:emit("judge", ev)
  return v, why
end

--- gate(engine, stage) -> "pass" | "fail", why | "inconclusive", why
function M.gate(engine, stage)
  local pb = engine.pb
  local runs = {}
  local jc = M.judge_config(pb, stage)
  if jc then runs[#runs + 1] = { "judge", jc } end
  local ac = M.ab_config(pb, stage)
  if ac then runs[#runs + 1] = { "ab_test", ac } end
  if #runs == 0 then return "pass" end
  if stage.weight >= 100 then
    -- the baseline serves nothing: there is nothing to compare the canary with
    engine:emit("judge", { name = runs[1][1], verdict = "skipped", why = "no baseline traffic at weight 100" })
    return "pass"
  end
  local now = rollout.now()
  local held = now - (engine.stage_start or now)
  local result, why = "pass", nil
  for _, r in ipairs(runs) do
    local v, w = run(engine, stage, r[1], r[2], now, held)
    if v == "fail" and result ~= "fail" then result, why = "fail", w
    elseif v == "inconclusive" and result == "pass" then result, why = "inconclusive", w end
  end
  return result, why
end

-- ---- proportions: a static threshold on a share decided from counts ---------------------

-- The counts behind a proportion signal: successes or failures x of n trials, or nil when
-- the source gives the share without its counts.
local COUNTS = {
  health = function(s) return s.health_ok, s.health_total end,
  error_rate = function(s)
    local n = s.requests
    if not n then return nil end
    local x = s.errors
    if x == nil and s.error_rate then x = s.error_rate * n end
    if x == nil then return nil end
    -- a Prometheus source counts with increase(), which extrapolates: whole requests
    return math.floor(x + 0.5), math.floor(n + 0.5)
  end,
}
M.PROPORTIONS = COUNTS

-- A quantile threshold is a proportion too: p99 <= 500 ms says at most 1 % of requests
-- are slower than 500 ms.
local QUANTILE = { p50 = 0.50, p95 = 0.95, p99 = 0.99 }
M.QUANTILES = QUANTILE

--- quantile_check(policy, t, s, limit, look) -> status, evidence | nil: a "max" threshold
--- on a latency quantile q, from the window's histogram (s.histogram, n requests). With k
--- = the fewest slow requests that are significant against a share 1 - q
--- (rollout.proportion.critical at this look's alpha), the share of requests slower than
--- the limit is significantly above 1 - q exactly when the k-th slowest request is slower
--- than the limit, i.e. the histogram's quantile at (n - k + 0.5) / n is above it: fail.
--- Pass when not, with n >= n_min for the share 1 - q or the quantile itself within the
--- limit; short otherwise (over the limit, not significantly). nil without a
--- histogram (a Prometheus source: the engine compares the quantile with the limit).
function M.quantile_check(pol, t, s, limit, look)
  local h, q = s.histogram, QUANTILE[t.signal]
  if not h or t.dir ~= "max" then return nil end
  local n = h:count()
  local conf = pol.confidence or proportion.DEFAULTS.confidence
  local alpha = proportion.alpha(conf, look and look[1], look and look[2])
  local k = n > 0 and proportion.critical(n, 1 - q, alpha) or 1
  local ql = k <= n and math.max(0, (n - k + 0.5) / n) or nil
  local at = ql and h:quantile(ql) or nil
  local n_min = proportion.min_trials(1 - q, "max", { alpha = proportion.alpha(conf, 1), power = pol.power, detect = pol.detect })
  local info = { n = n, q = ql, at = at, n_min = n_min ~= math.huge and n_min or nil, alpha = alpha }
  if at and at > limit then return "fail", info end
  -- within its limit a quantile passes as before: the stage's min_samples is the evidence
  -- a request-based gate asks for; over it, but not significantly, the hold extends
  if n >= n_min or (s[t.signal] and s[t.signal] <= limit) then return "pass", info end
  return "short", info
end

--- proportion_check(pb, t, s, limit [, look]) -> status ("pass" | "fail" | "short"),
--- evidence | nil for a static threshold `t` (playbook.stage_thresholds) on a proportion
--- signal (health, error_rate) or a latency quantile, from the canary's window signals
--- `s`, against `limit` (t.value, or the baseline-relative limit). look = {k, of}: the
--- gate's k-th look of at most `of` in this stage (rollout.proportion.alpha). nil when the
--- signal is neither or the source gave no counts (the engine then compares the value with
--- the limit as for any other signal). policy.confidence, power and detect tune the rule.
function M.proportion_check(pb, t, s, limit, look)
  if not s then return nil end
  local pol = pb.policy or {}
  if QUANTILE[t.signal] then return M.quantile_check(pol, t, s, limit, look) end
  local counts = COUNTS[t.signal]
  if not counts then return nil end
  local x, n = counts(s)
  if x == nil or n == nil then return nil end
  return proportion.decide({ x = x, n = n, threshold = limit, dir = t.dir, confidence = pol.confidence,
    alpha = proportion.alpha(pol.confidence, look and look[1], look and look[2]), power = pol.power, detect = pol.detect })
end

--- line(ev) -> the plain output line of a "judge" event (for rollout.output).
function M.line(ev)
  if ev.verdict == "skipped" then return string.format("%s %s: skipped (%s)", ev.name, ev.stage or "?", ev.why) end
  if ev.error then return string.format("%s: %s (%s)", ev.name, ev.verdict, tostring(ev.error)) end
  local parts = {}
  for _, m in ipairs(ev.metrics or {}) do
    local s = m.name .. " " .. m.classification
    if m.ratio then s = s .. string.format(" (x%.3f", m.ratio) .. (m.p and string.format(", p %.2g)", m.p) or ")") end
    parts[#parts + 1] = s
  end
  return string.format("%s %s: score %.0f %s%s  %s", ev.name, ev.stage or "?", ev.score or 0, ev.verdict,
    ev.why and (" (" .. ev.why .. ")") or "", table.concat(parts, ", "))
end

return M

-- rollout.judge: a statistical canary judge modelled on Kayenta's NetflixACAJudge.
--
-- Pure: judge.evaluate(config, data) compares, per metric, the canary's samples with the
-- baseline's and returns a classification per metric, a score per group and a summary
-- score 0..100 with a result. It knows nothing of stages, sources or time
-- (rollout.analysis feeds it and turns its result into a gate decision).
--
-- Per metric, in Kayenta's order:
--   1. NaN strategy: "remove" drops NaN values, "replace" makes them 0.
--   2. Outliers: "remove" keeps values within [Q1 - f*IQR, Q3 + f*IQR] of each version
--      (f = outlier_factor, 3 as Kayenta), "keep" (the default) leaves the tail alone:
--      for latency the tail is the signal.
--   3. Too few requests behind the samples (min_samples): Nodata, and the metric is listed
--      in result.insufficient (the gate waits for more data).
--   4. No values left in either version: Nodata, or NodataFail when must_have_data.
--   5. Identical samples, or a single value in both: Pass.
--   6. Mann-Whitney U (rollout.stats) with a Hodges-Lehmann confidence interval for the
--      shift canary - baseline at `confidence`. With bound = tolerance * |shift|:
--        High when direction is increase/either, ci.lo > bound and effect > allowed_increase
--        Low  when direction is decrease/either, ci.hi < -bound and effect < allowed_decrease
--        else Pass.
--      effect is the mean ratio canary/baseline ("mean_ratio", the default) or the common
--      language effect size P(canary > baseline) ("cles").
--   7. A `critical` metric classified High (Low) with effect beyond critical_increase
--      (critical_decrease) is a critical failure.
-- Groups: a group's score is 100 * Pass / (Pass + High + Low + NodataFail); a group
-- with no such metric has no data and adds nothing. The summary is the sum of group
-- scores times weight/100; groups without a weight share what the weights leave. A
-- critical failure, or no data in at least half of the metrics (nodata_limit), makes
-- the score 0. result: "pass" (score >= pass), "marginal" (>= marginal), else "fail".
--
-- Error policy: evaluate() raises on a configuration validate() rejects (a programming
-- error: playbooks are validated on load); data problems are classifications, not errors.
local stats = require("rollout.stats")
local units = require("rollout.units")
local schema = require("rollout.schema")

local M = {}

--- Signals a metric can compare. "latency" is raw request latencies (seconds) from the
--- sources' reservoirs; the others are per-interval values of that signal.
M.SIGNALS = {
  latency = "raw request latencies", error_rate = "per-interval error rate",
  p50 = "per-interval p50", p95 = "per-interval p95", p99 = "per-interval p99",
  rps = "per-interval request rate", health = "per-interval health", cpu = "per-interval cpu",
  memory = "per-interval memory", disk = "per-interval disk",
}
M.ALIASES = { latency_p50 = "p50", latency_p95 = "p95", latency_p99 = "p99", errors = "error_rate",
  error = "error_rate", health_score = "health", request_rate = "rps", latencies = "latency" }

M.DEFAULTS = {
  window = "gate", confidence = 0.98, tolerance = 0.25, pass = 95, marginal = 75,
  on_marginal = "inconclusive", min_samples = 0, max_samples = 20000, nodata_limit = 0.5,
}
M.METRIC_DEFAULTS = {
  direction = "increase", effect = "mean_ratio", critical = false, must_have_data = false,
  nan = "remove", outliers = "keep", outlier_factor = 3,
}

--- What the judge compares when a playbook turns it on without naming metrics: errors
--- (critical), the latency distribution, and its tail, one group each. Every metric fails
--- only on a significant change that is also large enough to matter (allowed_increase).
M.DEFAULT_METRICS = {
  { name = "error_rate", direction = "increase", allowed_increase = 1.5, critical = true, group = "errors" },
  { name = "latency", direction = "increase", allowed_increase = 1.1, group = "latency" },
  { name = "p99", direction = "increase", allowed_increase = 1.2, group = "tail" },
}
-- (no weights: the groups share the score equally, so any one High fails it, and a group a
-- source cannot measure can be left out without leaving its weight behind)

-- ---- validation (rollout.schema) ----------------------------------------------------------
-- The keys, their kinds and the allowed values are declared; the rules between keys
-- (confidence or significance, thresholds in order, group weights) are checked after.

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out, function(a, b) return tostring(a) < tostring(b) end)
  return out
end

local function known_list(keys)
  return table.concat(sorted_keys(keys), ", ")
end

local function as_number(v)
  if type(v) == "number" then return v end
  if type(v) == "string" then
    local r = units.parse("ratio", v)
    if r then return r end
    return tonumber(v)
  end
end

local function signal_of(m)
  local s = m.signal or m.name
  if type(s) ~= "string" then return nil end
  return M.ALIASES[s] or s
end
M.signal_of = signal_of

local KINDS = schema.kinds() -- the base kinds, and the judge's own below
function KINDS.probability(v) -- a confidence or a significance
  local x = as_number(v)
  if not x or x <= 0 or x >= 1 then return "expected a number between 0 and 1 (exclusive), got " .. tostring(v) end
end
function KINDS.tolerance(v)
  local x = as_number(v)
  if not x or x < 0 then return "expected a number >= 0, got " .. tostring(v) end
end
function KINDS.stage(v) -- a stage's name
  if type(v) ~= "string" then return "expected a stage name, got " .. schema.type_name(v) end
end
function KINDS.window(v) -- "gate", "hold" or a duration > 0
  if v == "gate" or v == "hold" then return end
  local d = units.parse("duration", v)
  if not d or d <= 0 then return "expected \"gate\", \"hold\" or a duration, got " .. tostring(v) end
end

local COUNT = { kind = "integer", min = 0 }
local SCORE = { kind = "number", min = 0, max = 100 }
local ANY = { kind = "any" } -- checked by a cross-field rule below (thresholds with the effect)

-- What the top level and a metric share: confidence/significance, tolerance, min_samples.
local STATS = { confidence = { kind = "probability" }, significance = { kind = "probability" },
  tolerance = { kind = "tolerance" }, min_samples = COUNT }
local function with_stats(fields)
  for k, r in pairs(STATS) do fields[k] = r end
  return fields
end

local THRESHOLDS = { "allowed_increase", "allowed_decrease", "critical_increase", "critical_decrease" }

local METRIC = with_stats({
  name = { kind = "string", nonempty = true, required = true }, description = { kind = "string" },
  signal = { kind = "string" },
  direction = { kind = "string", enum = { "increase", "decrease", "either" } },
  effect = { kind = "string", enum = { "mean_ratio", "cles" } },
  nan = { kind = "string", enum = { "remove", "replace" } }, outliers = { kind = "string", enum = { "keep", "remove" } },
  critical = { kind = "boolean" }, must_have_data = { kind = "boolean" },
  outlier_factor = { kind = "positive" },
  group = { kind = "string", nonempty = true },
  groups = { kind = "list", item = { kind = "string", nonempty = true },
    check = function(v) if #v == 0 then return "expected a non-empty list of group names" end end },
})
for _, k in ipairs(THRESHOLDS) do METRIC[k] = ANY end

local TOP = with_stats({
  description = { kind = "string" }, metrics = ANY, -- a list or a map of metrics, checked one by one below
  groups = { kind = "table", keys = { kind = "string" }, map = SCORE }, -- group = weight; their sum below
  stages = { one_of = {
    { when = function(v) return type(v) == "boolean" end, kind = "boolean" },
    { when = function(v) return type(v) == "string" end, enum = { "all" } },
    { when = function(v) return type(v) == "table" end, kind = "list", item = { kind = "stage" } },
  }, expected = "true, \"all\" or a list of stage names" },
  window = { kind = "window" },
  pass = SCORE, marginal = SCORE,
  on_marginal = { kind = "string", enum = { "pass", "fail", "inconclusive" } },
  max_samples = { kind = "integer", min = 10 },
  nodata_limit = { kind = "number", max = 1,
    check = function(v) if v <= 0 then return "must be a fraction in (0, 1], got " .. tostring(v) end end },
})

local function check_fields(t, fields, path, errs)
  return schema.check(t, fields, { path = path, kinds = KINDS, known = true, errs = errs })
end

local function extend(path, ...) return schema.extend(path, { ... }) end

local function check_metric(m, path, errs)
  local function e(k, msg) errs[#errs + 1] = { path = extend(path, k), message = msg } end
  if type(m) ~= "table" then errs[#errs + 1] = { path = path, message = "expected a metric table, got " .. type(m) }; return end
  check_fields(m, METRIC, path, errs)
  if m.confidence ~= nil and m.significance ~= nil then e("significance", "set confidence or significance, not both") end
  local sig = signal_of(m)
  if sig and not M.SIGNALS[sig] then
    e(m.signal and "signal" or "name", "unknown signal '" .. tostring(m.signal or m.name) .. "' (" .. known_list(M.SIGNALS) ..
      "; set `signal` when the name is a label)")
  end
  if m.group ~= nil and m.groups ~= nil then e("groups", "set group or groups, not both") end
  local cles = m.effect == "cles"
  local thr = {}
  for _, k in ipairs(THRESHOLDS) do
    if m[k] ~= nil then
      local v = as_number(m[k])
      if not v then e(k, "expected a number, got " .. tostring(m[k]))
      elseif cles and (v < 0 or v > 1) then e(k, "a cles threshold is a probability between 0 and 1")
      elseif k:match("increase$") and v < (cles and 0.5 or 1) then
        e(k, cles and "must be >= 0.5 (P(canary > baseline))" or "must be >= 1 (a ratio canary/baseline)")
      elseif k:match("decrease$") and (v > (cles and 0.5 or 1) or v < 0) then
        e(k, cles and "must be between 0 and 0.5" or "must be between 0 and 1 (a ratio canary/baseline)")
      else thr[k] = v end
    end
  end
  if thr.critical_increase and thr.allowed_increase and thr.critical_increase < thr.allowed_increase then
    e("critical_increase", "must not be below allowed_increase")
  end
  if thr.critical_decrease and thr.allowed_decrease and thr.critical_decrease > thr.allowed_decrease then
    e("critical_decrease", "must not be above allowed_decrease")
  end
end

local function metric_list(metrics)
  if type(metrics) ~= "table" then return nil end
  if #metrics > 0 or next(metrics) == nil then return metrics, "list" end
  local out = {}
  for _, k in ipairs(sorted_keys(metrics)) do
    local m = metrics[k]
    if type(m) == "table" then
      local c = {}
      for kk, v in pairs(m) do c[kk] = v end
      c.name = c.name or k
      out[#out + 1] = c
    else
      out[#out + 1] = m
    end
  end
  return out, "map", sorted_keys(metrics)
end

local function groups_of(m)
  if m.groups then return m.groups end
  return { m.group or m.name }
end

--- check(cfg [, {where = "stage"}]) -> list of rollout.schema errors {path = {...},
--- message =} (empty when valid). A stage's table (where = "stage") may override any key
--- but `stages`.
function M.check(cfg, opts)
  opts = opts or {}
  local errs = {}
  if type(cfg) ~= "table" then return { { path = {}, message = "expected a table, got " .. type(cfg) } } end
  local function e(k, msg) errs[#errs + 1] = { path = type(k) == "table" and k or { k }, message = msg } end
  if cfg.stages ~= nil and opts.where == "stage" then e("stages", "only at the playbook's top-level judge") end
  check_fields(cfg, TOP, {}, errs)
  if cfg.confidence ~= nil and cfg.significance ~= nil then e("significance", "set confidence or significance, not both") end
  local pass = type(cfg.pass) == "number" and cfg.pass or M.DEFAULTS.pass
  if type(cfg.marginal) == "number" and cfg.marginal > pass then e("marginal", "must not be above pass (" .. pass .. ")") end
  local used = {}
  if cfg.metrics ~= nil then
    local list, kind, keys = metric_list(cfg.metrics)
    if not list then e("metrics", "expected a list of metrics or a table name = {...}")
    elseif #list == 0 then e("metrics", "needs at least one metric")
    else
      local names = {}
      for i, m in ipairs(list) do
        local p = { "metrics", kind == "map" and keys[i] or i }
        check_metric(m, p, errs)
        if type(m) == "table" then
          if type(m.name) == "string" then
            if names[m.name] then e(extend(p, "name"), "duplicate metric name '" .. m.name .. "'") end
            names[m.name] = true
          end
          if type(m.groups) == "table" or m.groups == nil then
            for _, g in ipairs(groups_of(m)) do if type(g) == "string" then used[g] = true end end
          end
        end
      end
    end
  end
  if cfg.groups ~= nil then
    if type(cfg.groups) == "table" then
      local sum, all, summable = 0, true, true
      for _, g in ipairs(sorted_keys(cfg.groups)) do
        local w = cfg.groups[g] -- names and weights are declared (TOP.groups); here: their sum
        if type(g) == "string" and type(w) == "number" and w >= 0 and w <= 100 then sum = sum + w else summable = false end
        if cfg.metrics ~= nil and type(g) == "string" and not used[g] then e({ "groups", g }, "no metric belongs to this group") end
      end
      -- a sum over weights that are not all valid says nothing: their own errors do
      if summable and sum > 100 + 1e-9 then e("groups", string.format("weights add up to %g; at most 100", sum)) end
      if summable and cfg.metrics ~= nil then
        for g in pairs(used) do if cfg.groups[g] == nil then all = false end end
        if all and next(used) and math.abs(sum - 100) > 1e-9 then
          e("groups", string.format("every group has a weight, so they must add up to 100 (they add up to %g)", sum))
        end
      end
    end
  end
  return errs
end

--- validate(cfg [, {where = "stage"}]) -> list of "key: message" (empty when valid).
function M.validate(cfg, opts) return schema.strings(M.check(cfg, opts)) end

local AB_TEST = {
  enabled = { kind = "boolean" }, description = { kind = "string" },
  metric = { kind = "any", check = function(v)
    local sig = type(v) == "string" and (M.ALIASES[v] or v)
    if not (sig and M.SIGNALS[sig]) then
      return "unknown metric '" .. tostring(v) .. "' (" .. known_list(M.SIGNALS) .. ", latency_p99, ...)"
    end
  end },
  significance = { kind = "probability" },
  min_samples = COUNT,
  gate = { one_of = {
    { when = function(v) return type(v) == "boolean" end, kind = "boolean" },
    { when = function(v) return type(v) == "table" end, kind = "list", item = { kind = "stage" } },
  }, expected = "true, false or a list of stage names" },
  allowed_increase = { kind = "any", check = function(v)
    local x = as_number(v)
    if not x or x < 1 then return "expected a ratio >= 1, got " .. tostring(v) end
  end },
}

--- check_ab_test(ab) -> rollout.schema errors: the runbook's abTest (enabled, metricName,
--- significanceLevel, minimumSampleSize), plus `gate` (true or stage names: where it
--- gates) and `allowed_increase` (the effect it tolerates, default 1).
function M.check_ab_test(ab)
  if type(ab) ~= "table" then return { { path = {}, message = "expected a table, got " .. type(ab) } } end
  return check_fields(ab, AB_TEST, {}, {})
end

--- validate_ab_test(ab) -> list of "key: message" (check_ab_test's errors as lines).
function M.validate_ab_test(ab) return schema.strings(M.check_ab_test(ab)) end

-- ---- configuration --------------------------------------------------------------------

local function confidence_of(t, fallback)
  if t.significance ~= nil then return 1 - as_number(t.significance) end
  if t.confidence ~= nil then return as_number(t.confidence) end
  return fallback
end

--- normalise(cfg) -> a complete configuration: defaults filled in, metrics a list with
--- every key set. Raises on a configuration validate() rejects.
function M.normalise(cfg)
  if cfg and cfg.normalised then return cfg end
  cfg = cfg or {}
  local errs = M.validate(cfg)
  if #errs > 0 then error("judge configuration: " .. table.concat(errs, "; "), 2) end
  local out = { normalised = true }
  for k, v in pairs(M.DEFAULTS) do out[k] = v end
  for k, v in pairs(cfg) do if k ~= "metrics" and k ~= "groups" and k ~= "significance" then out[k] = v end end
  out.confidence = confidence_of(cfg, M.DEFAULTS.confidence)
  out.tolerance = as_number(out.tolerance)
  local list = cfg.metrics and metric_list(cfg.metrics) or M.DEFAULT_METRICS
  out.groups = {}
  for g, w in pairs(cfg.groups or {}) do out.groups[g] = w end
  out.default_metrics = cfg.metrics == nil
  out.metrics = {}
  for i, m in ipairs(list) do
    local n = {}
    for k, v in pairs(M.METRIC_DEFAULTS) do n[k] = v end
    for k, v in pairs(m) do n[k] = v end
    n.signal = signal_of(m)
    n.groups = groups_of(m)
    n.group = nil
    n.confidence = confidence_of(m, out.confidence)
    n.significance = nil
    n.tolerance = m.tolerance ~= nil and as_number(m.tolerance) or out.tolerance
    n.min_samples = m.min_samples or out.min_samples
    local cles = n.effect == "cles"
    n.allowed_increase = as_number(m.allowed_increase) or (cles and 0.5 or 1)
    n.allowed_decrease = as_number(m.allowed_decrease) or (cles and 0.5 or 1)
    n.critical_increase = as_number(m.critical_increase) or n.allowed_increase
    n.critical_decrease = as_number(m.critical_decrease) or n.allowed_decrease
    out.metrics[i] = n
  end
  return out
end

--- merge(base, over) -> a configuration with `over`'s keys replacing `base`'s (a stage's
--- judge table over the playbook's). Neither is modified.
function M.merge(base, over)
  local out = {}
  for k, v in pairs(base or {}) do out[k] = v end
  if type(over) == "table" then for k, v in pairs(over) do out[k] = v end end
  if out.confidence ~= nil and out.significance ~= nil then
    -- the more specific table wins
    if type(over) == "table" and over.significance ~= nil then out.confidence = nil else out.significance = nil end
  end
  out.stages, out.normalised = nil, nil
  return out
end

-- ---- classification -------------------------------------------------------------------

local function clean(values, m)
  local out = {}
  for _, v in ipairs(values or {}) do
    if v ~= v then
      if m.nan == "replace" then out[#out + 1] = 0 end
    else
      out[#out + 1] = v
    end
  end
  if m.outliers == "remove" and #out > 0 then out = stats.iqr_filter(out, m.outlier_factor) end
  return out
end

local function identical(a, b)
  if #a ~= #b then return false end
  local x, y = table.move(a, 1, #a, 1, {}), table.move(b, 1, #b, 1, {})
  table.sort(x)
  table.sort(y)
  for i = 1, #x do if x[i] ~= y[i] then return false end end
  return true
end

local function one_value(a, b)
  local v = a[1] or b[1]
  for _, x in ipairs(a) do if x ~= v then return false end end
  for _, x in ipairs(b) do if x ~= v then return false end end
  return true
end

local function describe(t)
  if #t == 0 then return { count = 0 } end
  return { count = #t, mean = stats.mean(t), median = stats.median(t), p99 = stats.quantile(t, 0.99) }
end

--- classify(metric, baseline, canary [, n]) -> a metric result (metric normalised; n =
--- {baseline=, canary=} requests behind the samples, defaulting to their sizes).
function M.classify(m, baseline_raw, canary_raw, n)
  local r = { name = m.name, signal = m.signal, direction = m.direction, critical_metric = m.critical, groups = m.groups,
    critical = false }
  local b, c = clean(baseline_raw, m), clean(canary_raw, m)
  r.samples = { baseline = #b, canary = #c }
  r.n = { baseline = n and n.baseline or #b, canary = n and n.canary or #c }
  r.baseline, r.canary = describe(b), describe(c)
  if m.min_samples > 0 and (r.n.baseline < m.min_samples or r.n.canary < m.min_samples) then
    r.classification, r.insufficient = "Nodata", true
    r.reason = string.format("too few samples: baseline %d, canary %d, need %d", r.n.baseline, r.n.canary, m.min_samples)
    return r
  end
  if #b == 0 or #c == 0 then
    r.classification = m.must_have_data and "NodataFail" or "Nodata"
    r.reason = (#b == 0 and "no baseline data" or "no canary data") .. (m.must_have_data and " (must_have_data)" or "")
    return r
  end
  if identical(b, c) then r.classification, r.reason = "Pass", "identical samples"; return r end
  if one_value(b, c) then r.classification, r.reason = "Pass", "a single value in both"; return r end
  local mw = stats.mann_whitney(b, c, { confidence = m.confidence })
  r.p, r.p_less, r.p_greater = mw.p, mw.p_less, mw.p_greater
  r.shift, r.ci, r.ratio, r.cles = mw.shift, { mw.ci[1], mw.ci[2] }, mw.mean_ratio, mw.cles
  r.confidence = m.confidence
  local effect = m.effect == "cles" and mw.cles or mw.mean_ratio
  r.effect = effect
  local bound = m.tolerance * math.abs(mw.shift)
  r.bound = bound
  local up = m.direction ~= "decrease"
  local down = m.direction ~= "increase"
  if up and mw.ci[1] > bound and effect > m.allowed_increase then
    r.classification = "High"
    r.reason = string.format("canary higher: shift %.4g, %g%% interval [%.4g, %.4g], %s %.3f > %g", mw.shift,
      m.confidence * 100, mw.ci[1], mw.ci[2], m.effect, effect, m.allowed_increase)
    r.critical = m.critical and effect > m.critical_increase or false
  elseif down and mw.ci[2] < -bound and effect < m.allowed_decrease then
    r.classification = "Low"
    r.reason = string.format("canary lower: shift %.4g, %g%% interval [%.4g, %.4g], %s %.3f < %g", mw.shift,
      m.confidence * 100, mw.ci[1], mw.ci[2], m.effect, effect, m.allowed_decrease)
    r.critical = m.critical and effect < m.critical_decrease or false
  else
    r.classification = "Pass"
    if up and mw.ci[1] > bound then
      r.reason = string.format("significant but within allowed_increase (%s %.3f)", m.effect, effect)
    elseif down and mw.ci[2] < -bound then
      r.reason = string.format("significant but within allowed_decrease (%s %.3f)", m.effect, effect)
    elseif (up and mw.ci[1] > 0) or (down and mw.ci[2] < 0) then
      r.reason = string.format("the %g%% interval [%.4g, %.4g] does not clear tolerance x |shift| = %.4g",
        m.confidence * 100, mw.ci[1], mw.ci[2], bound)
    end
  end
  return r
end

-- ---- scoring --------------------------------------------------------------------------

--- score(config, metric_results) -> summary score, groups, critical names, nodata count
function M.score(cfg, results)
  local groups, order = {}, {}
  for _, r in ipairs(results) do
    for _, g in ipairs(r.groups) do
      local grp = groups[g]
      if not grp then
        grp = { name = g, counts = { Pass = 0, High = 0, Low = 0, Nodata = 0, NodataFail = 0 }, metrics = {} }
        groups[g] = grp
        order[#order + 1] = g
      end
      grp.counts[r.classification] = grp.counts[r.classification] + 1
      grp.metrics[#grp.metrics + 1] = r.name
    end
  end
  table.sort(order)
  local weighted, sum = {}, 0
  for g, w in pairs(cfg.groups) do weighted[g] = true; sum = sum + w end
  local unweighted = 0
  for _, g in ipairs(order) do if not weighted[g] then unweighted = unweighted + 1 end end
  local share = unweighted > 0 and math.max(0, 100 - sum) / unweighted or 0
  local total = 0
  local out = {}
  for _, g in ipairs(order) do
    local grp = groups[g]
    local c = grp.counts
    local denom = c.Pass + c.High + c.Low + c.NodataFail
    grp.weight = cfg.groups[g] or share
    if denom > 0 then
      grp.score = 100 * c.Pass / denom
      total = total + grp.score * grp.weight / 100
    else
      grp.nodata = true
    end
    out[#out + 1] = grp
  end
  return total, out
end

--- evaluate(config, data) -> result
---   data[metric name] = {baseline = {numbers...}, canary = {numbers...},
---                        n = {baseline=, canary=}}   (n: requests behind them, optional)
---   result = {score = 0..100, result = "pass"|"marginal"|"fail", reason =,
---             metrics = {{name=, classification=, p=, shift=, ci=, ratio=, cles=, ...}},
---             groups = {{name=, score=, weight=, counts=}}, critical = {names},
---             nodata = bool (the no-data rule zeroed the score), insufficient = {names}}
function M.evaluate(config, data)
  local cfg = M.normalise(config)
  data = data or {}
  local results, critical, insufficient, nodata = {}, {}, {}, 0
  for i, m in ipairs(cfg.metrics) do
    local d = data[m.name] or {}
    local r = M.classify(m, d.baseline, d.canary, d.n)
    results[i] = r
    if r.critical then critical[#critical + 1] = m.name end
    if r.insufficient then insufficient[#insufficient + 1] = m.name end
    if r.classification == "Nodata" or r.classification == "NodataFail" then nodata = nodata + 1 end
  end
  local score, groups = M.score(cfg, results)
  local out = { metrics = results, groups = groups, critical = critical, insufficient = insufficient,
    pass = cfg.pass, marginal = cfg.marginal }
  if #critical > 0 then
    out.score, out.result = 0, "fail"
    out.reason = "critical metric failed: " .. table.concat(critical, ", ")
  elseif #results > 0 and nodata / #results >= cfg.nodata_limit then
    out.score, out.result, out.nodata = 0, "fail", true
    out.reason = string.format("no data in %d of %d metrics", nodata, #results)
  else
    out.score = score
    if score >= cfg.pass - 1e-9 then out.result = "pass"
    elseif score >= cfg.marginal - 1e-9 then out.result = "marginal"
    else out.result = "fail" end
    local bad = {}
    for _, r in ipairs(results) do
      if r.classification ~= "Pass" and r.classification ~= "Nodata" then bad[#bad + 1] = r.name .. " " .. r.classification end
    end
    out.reason = #bad > 0 and table.concat(bad, ", ") or nil
  end
  return out
end

return M

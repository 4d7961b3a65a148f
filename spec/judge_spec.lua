-- judge_spec.lua: rollout.judge on constructed cases, where the right classification and
-- score are known by construction (the Mann-Whitney numbers themselves are checked
-- against scipy in stats_spec.lua).
local judge = require("rollout.judge")
local stats = require("rollout.stats")
local rng = require("rollout.rng")

local NAN = 0 / 0

local function lognormal(seed, n, median, sigma)
  local r = rng.new(seed)
  local t = {}
  for i = 1, n do t[i] = median * math.exp(sigma * r:normal()) end
  return t
end

local function normal(seed, n, mu, sd)
  local r = rng.new(seed)
  local t = {}
  for i = 1, n do t[i] = mu + sd * r:normal() end
  return t
end

local function metric(res, name)
  for _, m in ipairs(res.metrics) do if m.name == name then return m end end
end

local function group(res, name)
  for _, g in ipairs(res.groups) do if g.name == name then return g end end
end

-- one metric named `name` on raw latencies, with extra keys
local function one(name, extra)
  local m = { name = name, signal = "latency" }
  for k, v in pairs(extra or {}) do m[k] = v end
  return { metrics = { m } }
end

describe("judge: classification", function()
  it("identical samples pass, whatever their size", function()
    local b = lognormal(1, 500, 0.04, 0.6)
    local c = {}
    for i = #b, 1, -1 do c[#c + 1] = b[i] end -- same values, other order
    local res = judge.evaluate(one("lat"), { lat = { baseline = b, canary = c } })
    local m = metric(res, "lat")
    assert.equals("Pass", m.classification)
    assert.equals("identical samples", m.reason)
    assert.equals(100, res.score)
    assert.equals("pass", res.result)
  end)

  it("a single value in both versions passes", function()
    local res = judge.evaluate(one("lat"), { lat = { baseline = { 0.1, 0.1, 0.1 }, canary = { 0.1, 0.1 } } })
    assert.equals("Pass", metric(res, "lat").classification)
  end)

  it("a clear shift up is High, with the numbers behind it", function()
    local b, c = lognormal(2, 2000, 0.040, 0.6), lognormal(3, 2000, 0.060, 0.6)
    local res = judge.evaluate(one("lat", { allowed_increase = 1.1 }), { lat = { baseline = b, canary = c } })
    local m = metric(res, "lat")
    assert.equals("High", m.classification)
    assert.lt(m.p, 1e-50)
    assert.near(1.5, m.ratio, 0.08)
    assert.gt(m.ci[1], 0)
    assert.gt(m.ci[1], 0.25 * m.shift, "the interval clears Kayenta's tolerance bound")
    assert.near(0.020, m.shift, 0.004)
    assert.gt(m.cles, 0.6)
    assert.equals(0, res.score)
    assert.equals("fail", res.result)
    -- the same numbers as rollout.stats computes directly
    local mw = stats.mann_whitney(b, c, { confidence = 0.98 })
    assert.equals(mw.p, m.p)
    assert.equals(mw.shift, m.shift)
    assert.equals(mw.mean_ratio, m.ratio)
  end)

  it("a significant shift smaller than allowed_increase passes", function()
    local b, c = lognormal(4, 5000, 0.040, 0.5), lognormal(5, 5000, 0.042, 0.5)
    local strict = judge.evaluate(one("lat"), { lat = { baseline = b, canary = c } })
    assert.equals("High", metric(strict, "lat").classification, "5 % slower is significant at n = 5000")
    local res = judge.evaluate(one("lat", { allowed_increase = 1.1 }), { lat = { baseline = b, canary = c } })
    local m = metric(res, "lat")
    assert.equals("Pass", m.classification)
    assert.matches("within allowed_increase", m.reason)
  end)

  it("Kayenta's tolerance: the interval must clear tolerance x |shift|, not just 0", function()
    local b, c = normal(2, 40, 100, 10), normal(1002, 40, 106, 10)
    local function class(tol)
      local cfg = { metrics = { { name = "m", signal = "rps", tolerance = tol } } }
      return metric(judge.evaluate(cfg, { m = { baseline = b, canary = c } }), "m")
    end
    local loose, strict = class(0), class(0.25)
    assert.gt(loose.ci[1], 0, "significant at 98 %")
    assert.lt(loose.ci[1], 0.25 * loose.shift)
    assert.equals("High", loose.classification)
    assert.equals("Pass", strict.classification)
    assert.matches("does not clear tolerance", strict.reason)
  end)

  it("noise without a shift passes (20 independent draws)", function()
    local highs = 0
    for seed = 1, 20 do
      local b, c = lognormal(100 + seed, 2000, 0.04, 0.6), lognormal(200 + seed, 2000, 0.04, 0.6)
      local res = judge.evaluate(one("lat", { allowed_increase = 1.1 }), { lat = { baseline = b, canary = c } })
      if metric(res, "lat").classification ~= "Pass" then highs = highs + 1 end
    end
    assert.equals(0, highs)
  end)

  it("follows the direction: increase, decrease, either", function()
    local b, hi, lo = normal(6, 300, 100, 10), normal(7, 300, 130, 10), normal(8, 300, 70, 10)
    local function class(dir, c)
      local cfg = { metrics = { { name = "m", signal = "rps", direction = dir } } }
      return metric(judge.evaluate(cfg, { m = { baseline = b, canary = c } }), "m").classification
    end
    assert.equals("High", class("increase", hi))
    assert.equals("Pass", class("increase", lo), "lower is fine when only an increase is bad")
    assert.equals("Low", class("decrease", lo))
    assert.equals("Pass", class("decrease", hi))
    assert.equals("High", class("either", hi))
    assert.equals("Low", class("either", lo))
  end)

  it("cles as the effect size", function()
    local b, c = normal(9, 400, 100, 10), normal(10, 400, 104, 10)
    local cfg = function(allowed)
      return { metrics = { { name = "m", signal = "rps", effect = "cles", allowed_increase = allowed } } }
    end
    local m = metric(judge.evaluate(cfg(0.55), { m = { baseline = b, canary = c } }), "m")
    assert.equals("High", m.classification)
    assert.near(0.61, m.effect, 0.04)
    assert.equals(m.cles, m.effect)
    assert.equals("Pass", metric(judge.evaluate(cfg(0.7), { m = { baseline = b, canary = c } }), "m").classification)
  end)

  it("NaN strategy: remove drops NaNs, replace makes them 0", function()
    local b = { 0.01, 0.012, 0.011, NAN, 0.009, 0.010, 0.011, 0.012, 0.010, 0.011 }
    local c = { NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN }
    local data = { error_rate = { baseline = b, canary = c } }
    local removed = metric(judge.evaluate({ metrics = { { name = "error_rate" } } }, data), "error_rate")
    assert.equals("Nodata", removed.classification)
    assert.equals(9, removed.samples.baseline)
    assert.equals(0, removed.samples.canary)
    local replaced = metric(judge.evaluate({ metrics = { { name = "error_rate", nan = "replace", direction = "either" } } }, data),
      "error_rate")
    assert.equals(10, replaced.samples.canary)
    assert.equals("Low", replaced.classification, "zeros are lower than every baseline value")
  end)

  it("IQR outlier removal drops what lies beyond factor x IQR, per version", function()
    local b = normal(11, 200, 100, 5)
    local c = normal(12, 200, 100, 5)
    for i = 1, 5 do c[i] = 10000 end -- five absurd values
    local data = { m = { baseline = b, canary = c } }
    local keep = metric(judge.evaluate({ metrics = { { name = "m", signal = "rps" } } }, data), "m")
    local rem = metric(judge.evaluate({ metrics = { { name = "m", signal = "rps", outliers = "remove" } } }, data), "m")
    assert.equals(200, keep.samples.canary)
    assert.equals(195, rem.samples.canary)
    assert.gt(keep.ratio, 3)
    assert.near(1, rem.ratio, 0.02)
    assert.equals("Pass", rem.classification)
  end)

  it("too few requests behind the samples: Nodata and listed as insufficient", function()
    local b, c = lognormal(13, 300, 0.04, 0.6), lognormal(14, 300, 0.04, 0.6)
    local res = judge.evaluate(one("lat", { min_samples = 10000 }),
      { lat = { baseline = b, canary = c, n = { baseline = 40000, canary = 6000 } } })
    local m = metric(res, "lat")
    assert.equals("Nodata", m.classification)
    assert.is_true(m.insufficient)
    assert.same({ "lat" }, res.insufficient)
    assert.matches("canary 6000, need 10000", m.reason)
    local ok = judge.evaluate(one("lat", { min_samples = 10000 }),
      { lat = { baseline = b, canary = c, n = { baseline = 40000, canary = 12000 } } })
    assert.same({}, ok.insufficient)
  end)
end)

describe("judge: score", function()
  local same = lognormal(20, 400, 0.05, 0.5)
  local high_b, high_c = lognormal(21, 1000, 0.05, 0.5), lognormal(22, 1000, 0.09, 0.5)
  local PASS = { baseline = same, canary = same }
  local HIGH = { baseline = high_b, canary = high_c }
  local NODATA = { baseline = same, canary = {} }

  local function m(name, grp, extra)
    local t = { name = name, signal = "latency", group = grp }
    for k, v in pairs(extra or {}) do t[k] = v end
    return t
  end

  it("weighted groups, and unweighted groups share what the weights leave", function()
    -- a (weight 50): Pass + High = 50; b, c unweighted share 50: b Pass = 100, c no data
    local cfg = { metrics = { m("a1", "a"), m("a2", "a"), m("b1", "b"), m("c1", "c") }, groups = { a = 50 } }
    local res = judge.evaluate(cfg, { a1 = PASS, a2 = HIGH, b1 = PASS, c1 = NODATA })
    assert.equals(50, group(res, "a").score)
    assert.equals(50, group(res, "a").weight)
    assert.equals(100, group(res, "b").score)
    assert.equals(25, group(res, "b").weight)
    assert.equals(25, group(res, "c").weight)
    assert.is_true(group(res, "c").nodata)
    assert.near(50 * 0.5 + 100 * 0.25, res.score, 1e-9)
    assert.equals("fail", res.result)
  end)

  it("pass and marginal thresholds", function()
    local cfg = { metrics = { m("x", "x"), m("y", "y") }, groups = { x = 80, y = 20 }, pass = 90, marginal = 75 }
    local r1 = judge.evaluate(cfg, { x = PASS, y = HIGH })
    assert.equals(80, r1.score)
    assert.equals("marginal", r1.result)
    local r2 = judge.evaluate(cfg, { x = HIGH, y = PASS })
    assert.equals(20, r2.score)
    assert.equals("fail", r2.result)
    local r3 = judge.evaluate(cfg, { x = PASS, y = PASS })
    assert.equals(100, r3.score)
    assert.equals("pass", r3.result)
  end)

  it("NodataFail counts against its group; Nodata does not", function()
    local cfg = { metrics = { m("p", "g"), m("n", "g"), m("q", "h") } }
    local soft = judge.evaluate(cfg, { p = PASS, n = NODATA, q = PASS })
    assert.equals(100, group(soft, "g").score)
    cfg.metrics[2].must_have_data = true
    local hard = judge.evaluate(cfg, { p = PASS, n = NODATA, q = PASS })
    assert.equals("NodataFail", metric(hard, "n").classification)
    assert.equals(50, group(hard, "g").score)
    assert.near(75, hard.score, 1e-9)
  end)

  it("one critical metric failing makes the score 0", function()
    local cfg = { metrics = { m("errors", "e", { critical = true }), m("l1", "l"), m("l2", "l"), m("l3", "l") } }
    local res = judge.evaluate(cfg, { errors = HIGH, l1 = PASS, l2 = PASS, l3 = PASS })
    assert.equals(0, res.score)
    assert.equals("fail", res.result)
    assert.same({ "errors" }, res.critical)
    assert.is_true(metric(res, "errors").critical)
    assert.matches("critical metric failed: errors", res.reason)
    -- the same High on a metric that is not critical only costs its group
    cfg.metrics[1].critical = false
    assert.equals(50, judge.evaluate(cfg, { errors = HIGH, l1 = PASS, l2 = PASS, l3 = PASS }).score)
  end)

  it("a critical metric fails critically only beyond critical_increase", function()
    local cfg = { metrics = { m("e", "e", { critical = true, allowed_increase = 1.1, critical_increase = 3 }), m("l", "l") } }
    local res = judge.evaluate(cfg, { e = HIGH, l = PASS })
    assert.equals("High", metric(res, "e").classification)
    assert.is_false(metric(res, "e").critical)
    assert.equals(50, res.score)
  end)

  it("all no data: score 0, nodata", function()
    local res = judge.evaluate({}, {})
    assert.equals(3, #res.metrics, "the default metrics")
    for _, r in ipairs(res.metrics) do assert.equals("Nodata", r.classification) end
    assert.equals(0, res.score)
    assert.equals("fail", res.result)
    assert.is_true(res.nodata)
  end)

  it("no data in half of the metrics zeroes the score; fewer does not", function()
    local cfg = { metrics = { m("a", "a"), m("b", "b"), m("c", "c"), m("d", "d") } }
    local half = judge.evaluate(cfg, { a = PASS, b = PASS, c = NODATA, d = NODATA })
    assert.equals(0, half.score)
    assert.is_true(half.nodata)
    local quarter = judge.evaluate(cfg, { a = PASS, b = PASS, c = PASS, d = NODATA })
    assert.is_nil(quarter.nodata)
    assert.equals(75, quarter.score, "the no-data group's weight is lost, as in Kayenta")
  end)
end)

describe("judge: configuration", function()
  it("accepts the defaults and a full configuration", function()
    assert.same({}, judge.validate({}))
    assert.same({}, judge.validate({
      stages = { "Half", "Majority" }, window = "10m", significance = 0.05, tolerance = 0.25, pass = 90, marginal = 70,
      on_marginal = "fail", min_samples = 1000, max_samples = 5000,
      groups = { errors = 60, latency = 40 },
      metrics = {
        { name = "error_rate", critical = true, must_have_data = true, allowed_increase = 1.5, critical_increase = 3,
          group = "errors", nan = "replace" },
        { name = "p99 ratio", signal = "latency_p99", direction = "either", allowed_decrease = 0.8, group = "latency",
          outliers = "remove", outlier_factor = 3 },
      },
    }))
  end)

  it("names every bad key with its path", function()
    local errs = judge.validate({
      confidence = 1.5, pass = 50, marginal = 70, on_marginal = "maybe", bogus = true,
      groups = { a = 70, b = 40 },
      metrics = {
        { name = "colour" },
        { name = "latency", direction = "up", allowed_increase = 0.9, nan = "zero" },
        { name = "latency" },
      },
    })
    local want = {
      "bogus: unknown key",
      "confidence: expected a number between 0 and 1",
      "marginal: must not be above pass (50)",
      'on_marginal: must be one of "pass", "fail", "inconclusive", got maybe',
      "metrics[1].name: unknown signal 'colour'",
      'metrics[2].direction: must be one of "increase", "decrease", "either", got up',
      'metrics[2].nan: must be "remove" or "replace", got zero',
      "metrics[2].allowed_increase: must be >= 1",
      "metrics[3].name: duplicate metric name 'latency'",
      "groups: weights add up to 110; at most 100",
      "groups.a: no metric belongs to this group",
    }
    local all = table.concat(errs, "\n")
    for _, w in ipairs(want) do assert.truthy(all:find(w, 1, true), "missing: " .. w .. "\n" .. all) end
  end)

  it("weights that cover every group must add up to 100", function()
    local errs = judge.validate({ metrics = { { name = "latency", group = "x" } }, groups = { x = 60 } })
    assert.matches("must add up to 100", errs[1])
  end)

  it("a stage's table may not choose stages; significance is 1 - confidence", function()
    assert.matches("^stages: only at the playbook", judge.validate({ stages = true }, { where = "stage" })[1])
    local cfg = judge.normalise({ significance = 0.05 })
    assert.near(0.95, cfg.confidence, 1e-12)
    assert.near(0.95, cfg.metrics[1].confidence, 1e-12)
    local merged = judge.normalise(judge.merge({ confidence = 0.98, stages = true }, { significance = 0.1 }))
    assert.near(0.9, merged.confidence, 1e-12)
  end)

  it("a metric table keyed by name", function()
    local cfg = judge.normalise({ metrics = { latency = { allowed_increase = 1.2 }, errors = { signal = "error_rate" } } })
    assert.equals("errors", cfg.metrics[1].name)
    assert.equals("error_rate", cfg.metrics[1].signal)
    assert.equals(1.2, cfg.metrics[2].allowed_increase)
    assert.has_error(function() judge.normalise({ metrics = { { name = "nope" } } }) end)
  end)
end)

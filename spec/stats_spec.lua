-- stats_spec.lua: rollout.stats against scipy.stats.mannwhitneyu and numpy (Debian's,
-- through tools/mw_ref.py) and against answers known by construction.
--
-- The data are generated here from a fixed seed and sent to the reference as JSON with
-- 17 significant digits, so both sides see the same doubles. The reference answers in
-- its --lines text format, so this spec needs no JSON library.
local proc = require("rollout.proc")
local stats = require("rollout.stats")

local ROOT = debug.getinfo(1, "S").source:match("^@(.-)/?spec/[^/]*$") or "."
local REF = (ROOT == "" and "." or ROOT) .. "/tools/mw_ref.py"
local VERBOSE = os.getenv("STATS_SPEC_VERBOSE")

local NAN = 0 / 0

---------------------------------------------------------------- data

local function normal(mu, sigma)
  -- Box-Muller; 1 - random() keeps log() away from 0.
  local u, v = 1 - math.random(), math.random()
  return mu + sigma * math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * v)
end

local function fill(n, gen)
  local t = {}
  for i = 1, n do t[i] = gen(i) end
  return t
end

local KINDS = {
  random = function(n1, n2)
    return fill(n1, function() return normal(100, 10) end),
           fill(n2, function() return normal(104, 10) end)
  end,
  tied = function(n1, n2)
    return fill(n1, function() return math.random(1, 5) end),
           fill(n2, function() return math.random(2, 6) end)
  end,
  constant = function(n1, n2)
    return fill(n1, function() return 7 end), fill(n2, function() return 7 end)
  end,
}

local SIZES = { { 3, 4 }, { 7, 7 }, { 8, 9 }, { 6, 150 }, { 20, 30 }, { 500, 400 } }
local ALTERNATIVES = { "two-sided", "less", "greater" }

-- Every size x alternative x method (exact only where scipy 1.10 can build its table),
-- plus the asymptotic method without continuity correction.
local function mw_cases(kind, seed)
  math.randomseed(seed)
  local cases = {}
  for _, size in ipairs(SIZES) do
    local x, y = KINDS[kind](size[1], size[2])
    local methods = { { "auto", true }, { "asymptotic", true }, { "asymptotic", false } }
    if size[1] * size[2] <= 2000 then methods[#methods + 1] = { "exact", true } end
    for _, alt in ipairs(ALTERNATIVES) do
      for _, m in ipairs(methods) do
        cases[#cases + 1] = { kind = "mw", x = x, y = y, alternative = alt,
                              method = m[1], use_continuity = m[2] }
      end
    end
  end
  return cases
end

---------------------------------------------------------------- the reference

-- Enough JSON for the cases: tables of numbers, strings and booleans.
local function encode(v)
  local t = type(v)
  if t == "number" then
    if v ~= v then return '"nan"' end
    if v == math.huge or v == -math.huge then return v > 0 and '"inf"' or '"-inf"' end
    return math.type(v) == "integer" and tostring(v) or string.format("%.17g", v)
  elseif t == "string" then
    return '"' .. v .. '"'
  elseif t == "boolean" then
    return tostring(v)
  elseif v[1] ~= nil or next(v) == nil then
    local parts = {}
    for i, e in ipairs(v) do parts[i] = encode(e) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local parts = {}
  for k, e in pairs(v) do parts[#parts + 1] = '"' .. k .. '":' .. encode(e) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function decode_value(s)
  if s == "nan" then return NAN end
  if s == "inf" then return math.huge end
  if s == "-inf" then return -math.huge end
  return tonumber(s) or s
end

-- Results of tools/mw_ref.py, one table per case; list-valued keys become sequences.
local function reference(cases)
  local r = proc.run { argv = { "/usr/bin/python3", REF, "--lines" }, stdin = encode(cases),
                       timeout = 300 }
  assert.equals(0, r.code, r.stderr)
  local results = {}
  for line in r.stdout:gmatch("[^\n]+") do
    local i, key, rest = line:match("^(%d+) (%S+) ?(.*)$")
    local values = {}
    for w in rest:gmatch("%S+") do values[#values + 1] = decode_value(w) end
    i = tonumber(i)
    results[i] = results[i] or {}
    results[i][key] = (key == "iqr" or key == "quantiles") and values or values[1]
  end
  assert.equals(#cases, #results, "reference answered every case")
  return results
end

local QS = { 0, 0.01, 0.25, 0.5, 0.9, 0.99, 1 }
local NAN_X, NAN_Y = { 1, 2, NAN, 4, 9 }, { 3, 5, 6, NAN, 8, 7 }

-- Every comparison with the reference, each group from its own seed.
local GROUPS = {
  random = function() return mw_cases("random", 1) end,
  tied = function() return mw_cases("tied", 2) end,
  constant = function() return mw_cases("constant", 3) end,
  large = function()
    math.randomseed(4)
    local x, y = KINDS.random(2000, 1500)
    local z, w = KINDS.tied(2000, 1500)
    return { { kind = "mw", x = x, y = y, confidence = 0.99 },
             { kind = "mw", x = z, y = w, confidence = 0.9 } }
  end,
  nan = function()
    return { { kind = "mw", x = NAN_X, y = NAN_Y, nan_policy = "omit" },
             { kind = "mw", x = NAN_X, y = NAN_Y, nan_policy = "propagate" } }
  end,
  describe = function()
    math.randomseed(6)
    local samples = {
      fill(1001, function() return normal(50, 5) end),
      fill(200, function(i) return i % 10 == 0 and 1000 or math.random(1, 9) end),
      { 5, NAN, 1, 3, NAN, 2 },
      { 42 },
    }
    local cases = {}
    for i, s in ipairs(samples) do cases[i] = { kind = "describe", x = s, q = QS, k = 1.5 } end
    return cases
  end,
}
local GROUP_ORDER = { "random", "tied", "constant", "large", "nan", "describe" }

-- The cases of a group and the reference's results for them. All groups go to the
-- reference in one run, the first time any is needed: starting it (importing scipy)
-- costs seconds, the comparisons milliseconds.
local batch
local function reference_for(group)
  if not batch then
    local groups, all = {}, {}
    for _, g in ipairs(GROUP_ORDER) do
      groups[g] = { cases = GROUPS[g](), first = #all + 1 }
      table.move(groups[g].cases, 1, #groups[g].cases, #all + 1, all)
    end
    local results = reference(all)
    for _, g in pairs(groups) do
      g.results = table.move(results, g.first, g.first + #g.cases - 1, 1, {})
    end
    batch = groups
  end
  return batch[group].cases, batch[group].results
end

---------------------------------------------------------------- comparison

local TOL = 1e-6

-- Absolute difference, relative once |expected| > 1; NaN matches NaN, inf matches inf.
local function diff(expected, actual)
  if expected ~= expected or actual ~= actual then
    return (expected ~= expected and actual ~= actual) and 0 or math.huge
  end
  if expected == actual then return 0 end
  return math.abs(expected - actual) / math.max(1, math.abs(expected))
end

local MW_FIELDS = { "u", "u2", "p", "p_less", "p_greater", "z", "shift", "mean_ratio", "cles" }

local function describe_case(c)
  return string.format("n1=%d n2=%d %s %s continuity=%s", #c.x, #c.y, c.alternative or "",
                       c.method or "", tostring(c.use_continuity))
end

-- Compares every field of stats.mann_whitney with the reference; returns the largest
-- difference seen so the caller can report it.
local function check_mw(group, opts_of)
  local cases, ref = reference_for(group)
  local worst = 0
  for i, c in ipairs(cases) do
    local got = assert(stats.mann_whitney(c.x, c.y, opts_of(c)))
    local want, where = ref[i], describe_case(c)
    got.ci_lo, got.ci_hi = got.ci[1], got.ci[2]
    for _, f in ipairs(MW_FIELDS) do
      local d = diff(want[f], got[f])
      assert.is_true(d <= TOL, string.format("%s: %s = %s, scipy %s", where, f,
                                             tostring(got[f]), tostring(want[f])))
      worst = math.max(worst, d)
    end
    for _, f in ipairs({ "ci_lo", "ci_hi" }) do
      assert.is_true(diff(want[f], got[f]) <= TOL, where .. ": " .. f)
    end
    assert.equals(want.method, got.method, where)
    assert.equals(want.n1, got.n1, where)
    assert.equals(want.n2, got.n2, where)
  end
  if VERBOSE then print(string.format("  %d cases, max diff %.3g", #cases, worst)) end
  return worst
end

local function mw_opts(c)
  return { alternative = c.alternative, method = c.method, use_continuity = c.use_continuity }
end

---------------------------------------------------------------- specs

describe("stats.mann_whitney against scipy 1.10", function()
  for _, kind in ipairs({ "random", "tied", "constant" }) do
    it("agrees on " .. kind .. " data, every size, alternative and method", function()
      check_mw(kind, mw_opts)
    end)
  end

  it("agrees on a 2000 x 1500 sample (Hodges-Lehmann selection vs all differences)", function()
    check_mw("large", function(c) return { confidence = c.confidence } end)
  end)

  it("matches scipy's textbook example", function()
    local r = stats.mann_whitney({ 19, 22, 16, 29, 24 }, { 20, 11, 17, 12 }, { method = "exact" })
    assert.equals(17, r.u)
    assert.near(0.1111111111111111, r.p, 1e-15)
    r = stats.mann_whitney({ 20, 11, 17, 12 }, { 19, 22, 16, 29, 24 }, { alternative = "less" })
    assert.equals("exact", r.method)
    assert.near(0.05555555555555555, r.p, 1e-15)
  end)

  it("handles NaN like scipy's nan_policy", function()
    local x, y = NAN_X, NAN_Y
    local _, ref = reference_for("nan")
    local omit = stats.mann_whitney(x, y, { nan = "omit" })
    for _, f in ipairs(MW_FIELDS) do assert.near(ref[1][f], omit[f], TOL) end
    assert.equals(4, omit.n1)
    local prop = stats.mann_whitney(x, y)
    assert.is_true(prop.p ~= prop.p and ref[2].p ~= ref[2].p, "propagate gives p = NaN")
    assert.is_true(prop.u ~= prop.u and prop.shift ~= prop.shift)
    assert.has_error(function() stats.mann_whitney(x, y, { nan = "raise" }) end, "x[3] is NaN")
  end)
end)

describe("stats.mann_whitney effect sizes", function()
  before_each(function() math.randomseed(5) end)

  it("finds a clear shift: y = x + 2", function()
    local x = fill(300, function() return normal(0, 1) end)
    local y = fill(300, function(i) return x[i] + 2 end)
    local r = stats.mann_whitney(x, y)
    assert.near(2, r.shift, 1e-9)
    assert.is_true(r.ci[1] < 2 and 2 < r.ci[2], "ci covers 2")
    assert.is_true(r.ci[1] > 1.5 and r.ci[2] < 2.5, "ci is tight")
    assert.is_true(r.p < 1e-30 and r.p_less < 1e-30 and r.p_greater > 0.999)
  end)

  it("finds a shift between independent samples and its interval covers it", function()
    local x = fill(400, function() return normal(0, 1) end)
    local y = fill(400, function() return normal(2, 1) end)
    local r = stats.mann_whitney(x, y, { confidence = 0.99 })
    assert.near(2, r.shift, 0.3)
    assert.is_true(r.ci[1] < 2 and 2 < r.ci[2] and r.ci[1] > 0, "ci covers 2, not 0")
    assert.near(0.92, r.cles, 0.05) -- P(N(2,1) > N(0,1)) = Phi(2 / sqrt(2)) = 0.921
  end)

  it("keeps CLES in [0, 1] and equal to u2 / (n1 n2)", function()
    local r = stats.mann_whitney({ 1, 2, 3 }, { 4, 5 })
    assert.equals(1, r.cles)
    assert.equals(0, r.u)
    r = stats.mann_whitney({ 4, 5 }, { 1, 2, 3 })
    assert.equals(0, r.cles)
    r = stats.mann_whitney({ 1, 2, 3 }, { 1, 2, 3 })
    assert.equals(0.5, r.cles)
    local x = fill(50, function() return math.random(1, 4) end)
    local y = fill(60, function() return math.random(1, 4) end)
    r = stats.mann_whitney(x, y)
    assert.is_true(r.cles >= 0 and r.cles <= 1)
    assert.near(r.u2 / (50 * 60), r.cles, 1e-15)
  end)

  it("reports the mean ratio canary / baseline", function()
    assert.near(1.5, stats.mann_whitney({ 10, 10, 10 }, { 15, 15 }).mean_ratio, 1e-15)
    assert.equals(math.huge, stats.mann_whitney({ 0, 0 }, { 1 }).mean_ratio)
  end)

  it("gives an unbounded interval when the samples are too small for it", function()
    local r = stats.mann_whitney({ 1, 2, 3 }, { 4, 5, 6, 7 })
    assert.equals(-math.huge, r.ci[1])
    assert.equals(math.huge, r.ci[2])
  end)

  it("handles 10k x 10k quickly without materialising the 1e8 differences", function()
    local x = fill(10000, function() return normal(100, 10) end)
    local y = fill(10000, function(i) return x[i] + 5 end)
    local t0 = os.clock()
    local r = stats.mann_whitney(x, y)
    local elapsed = os.clock() - t0
    if VERBOSE then print(string.format("  10k x 10k: %.1f ms", elapsed * 1000)) end
    -- y - x is symmetric around 5 here, so the median and the interval are too.
    assert.near(5, r.shift, 1e-9)
    assert.near(5 - r.ci[1], r.ci[2] - 5, 1e-9)
    assert.is_true(r.ci[1] < 5 and r.ci[2] > 5)
    assert.equals("asymptotic", r.method)
    -- Generous for sanitizer builds; materialising and sorting 1e8 doubles takes ~10 s.
    assert.is_true(elapsed < 1.5, "took " .. elapsed .. " s")
  end)
end)

describe("stats.mann_whitney errors", function()
  it("returns nil, 'empty sample' for an empty sample", function()
    local r, err = stats.mann_whitney({}, { 1, 2 })
    assert.is_nil(r)
    assert.equals("empty sample", err)
    r, err = stats.mann_whitney({ NAN }, { 1, 2 }, { nan = "omit" })
    assert.is_nil(r)
    assert.equals("empty sample", err)
  end)

  it("raises on wrong types and bad options, naming them", function()
    assert.has_error(function() stats.mann_whitney(nil, { 1 }) end, "table expected")
    assert.has_error(function() stats.mann_whitney({ 1, "2" }, { 1 }) end, "x[2] is a string")
    assert.has_error(function() stats.mann_whitney({ 1 }, { 1 }, { alt = "less" }) end,
                     "unknown option opts.alt")
    assert.has_error(function() stats.mann_whitney({ 1 }, { 1 }, { alternative = "lower" }) end,
                     "opts.alternative")
    assert.has_error(function() stats.mann_whitney({ 1 }, { 1 }, { method = 1 }) end, "opts.method")
    assert.has_error(function() stats.mann_whitney({ 1 }, { 1 }, { confidence = 95 }) end,
                     "opts.confidence")
    assert.has_error(function() stats.mann_whitney({ 1 }, { 1 }, { use_continuity = 1 }) end,
                     "opts.use_continuity")
  end)

  it("refuses an exact test too large for its table", function()
    local x = fill(10000, function(i) return i end)
    assert.has_error(function() stats.mann_whitney(x, x, { method = "exact" }) end, "too costly")
  end)
end)

describe("stats.mean, median, quantile, iqr_filter", function()
  it("agree with numpy, skipping NaN", function()
    local cases, ref = reference_for("describe")
    for i, c in ipairs(cases) do
      local s = c.x
      assert.near(ref[i].mean, stats.mean(s), 1e-9)
      assert.near(ref[i].median, stats.median(s), 1e-12)
      local got = stats.quantile(s, QS)
      for j, q in ipairs(QS) do
        assert.near(ref[i].quantiles[j], got[j], 1e-12)
        assert.near(ref[i].quantiles[j], stats.quantile(s, q), 1e-12)
      end
      local kept, lo, hi = stats.iqr_filter(s)
      assert.same(ref[i].iqr, kept)
      assert.near(ref[i].iqr_lo, lo, 1e-12)
      assert.near(ref[i].iqr_hi, hi, 1e-12)
    end
  end)

  it("gives known answers", function()
    assert.equals(2, stats.median({ 3, 1, 2 }))
    assert.equals(2.5, stats.median({ 4, 1, 3, 2 }))
    assert.equals(2.5, stats.mean({ 1, 2, 3, 4 }))
    assert.equals(3.7, stats.quantile({ 1, 2, 3, 4 }, 0.9))
    local kept = stats.iqr_filter({ 3, 1, 100, 2, 4 })
    assert.same({ 3, 1, 2, 4 }, kept)
    assert.equals("integer", math.type(kept[1]))
    assert.same({ 3, 2, 4 }, stats.iqr_filter({ 3, 1, 100, 2, 4 }, 0))
  end)

  it("return nil, 'empty sample' when nothing is left, and raise on bad input", function()
    for _, fn in ipairs({ stats.mean, stats.median, stats.iqr_filter }) do
      local r, err = fn({ NAN })
      assert.is_nil(r)
      assert.equals("empty sample", err)
    end
    assert.is_nil(stats.quantile({}, 0.5))
    assert.has_error(function() stats.quantile({ 1 }, 1.5) end, "q must be")
    assert.has_error(function() stats.quantile({ 1 }, { 0.5, "x" }) end, "q must be")
    assert.has_error(function() stats.median({ 1, {} }) end, "t[2] is a table")
    assert.has_error(function() stats.iqr_filter({ 1 }, -1) end, "k must be")
  end)
end)

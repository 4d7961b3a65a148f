-- histogram: bounded-error latency histograms and sliding windows, against exact quantiles.
local histogram = require("rollout.histogram")

-- Nearest-rank quantile of a sorted list: the definition the histogram documents.
local function exact_quantile(sorted, q)
  return sorted[math.max(1, math.ceil(q * #sorted))]
end

local function relative_error(estimate, exact) return math.abs(estimate - exact) / exact end

local function normal()
  return math.sqrt(-2 * math.log(1 - math.random())) * math.cos(2 * math.pi * math.random())
end

-- Request latencies with a slow tail: 97 % log-normal around 20 ms, 3 % around 400 ms
-- with a wider spread (a slow dependency, retries).
local function skewed_latencies(n, seed)
  math.randomseed(seed)
  local v = {}
  for i = 1, n do
    if math.random() < 0.97 then
      v[i] = math.exp(math.log(0.020) + 0.6 * normal())
    else
      v[i] = math.exp(math.log(0.400) + 1.2 * normal())
    end
  end
  return v
end

local QUANTILES = { 0.5, 0.9, 0.95, 0.99, 0.999 }

describe("histogram", function()
  it("has a documented bound tighter than 1 % and fixed memory", function()
    assert.truthy(histogram.MAX_RELATIVE_ERROR <= 0.01)
    assert.truthy(histogram.MIN_VALUE <= 1e-6 and histogram.MAX_VALUE >= 3600)
    assert.truthy(histogram.BYTES < 64 * 1024, "bytes " .. histogram.BYTES)
  end)

  it("answers every quantile of 1 M skewed latencies within 1 % of the exact value", function()
    local values = skewed_latencies(1000000, 7)
    local h = histogram.new()
    assert.equals(#values, h:record_many(values))
    table.sort(values)
    assert.equals(#values, h:count())
    for _, q in ipairs(QUANTILES) do
      local exact, estimate = exact_quantile(values, q), h:quantile(q)
      local err = relative_error(estimate, exact)
      assert.truthy(err <= 0.01, ("p%g: %.6g vs exact %.6g (%.3f %%)"):format(q * 100, estimate, exact, err * 100))
      assert.truthy(err <= histogram.MAX_RELATIVE_ERROR * (1 + 1e-9),
        ("p%g beyond the documented bound"):format(q * 100))
    end
    assert.equals(values[1], h:min())
    assert.equals(values[#values], h:max())
    assert.equals(values[1], h:quantile(0))
    assert.equals(values[#values], h:quantile(1))
    local sum = 0
    for _, v in ipairs(values) do sum = sum + v end
    assert.near(sum / #values, h:mean(), 1e-12)
  end)

  it("stays within 1 % on every percentile of values spread from 1 µs to 1 h", function()
    math.randomseed(11)
    local values, h = {}, histogram.new()
    local lo, hi = math.log(1e-6), math.log(3600)
    for i = 1, 1000000 do
      values[i] = math.exp(lo + (hi - lo) * math.random())
      h:record(values[i])
    end
    table.sort(values)
    for p = 1, 99 do
      local exact, estimate = exact_quantile(values, p / 100), h:quantile(p / 100)
      assert.truthy(relative_error(estimate, exact) <= 0.01,
        ("p%d: %.6g vs exact %.6g"):format(p, estimate, exact))
    end
  end)

  it("is exact at the edges, 1 µs and 1 h, and within 1 % just inside them", function()
    for _, v in ipairs { 1e-6, 3600 } do
      local h = histogram.new()
      h:record(v, 1000)
      for _, q in ipairs { 0, 0.5, 0.99, 1 } do assert.equals(v, h:quantile(q)) end
      local near, values = histogram.new(), {}
      for k = 0, 999 do
        values[#values + 1] = v * (1 + k / 1000)
        near:record(values[#values])
      end
      for _, q in ipairs(QUANTILES) do
        local exact = exact_quantile(values, q)
        assert.truthy(relative_error(near:quantile(q), exact) <= 0.01, ("%g p%g"):format(v, q * 100))
      end
    end
    local both = histogram.new()
    both:record(1e-6, 500)
    both:record(3600, 500)
    for q, exact in pairs { [0.25] = 1e-6, [0.5] = 1e-6, [0.51] = 3600, [0.75] = 3600 } do
      assert.truthy(relative_error(both:quantile(q), exact) <= 0.01, "p" .. q * 100)
    end
  end)

  it("has no data when empty: nil, never 0", function()
    local h = histogram.new()
    assert.equals(0, h:count())
    for _, m in ipairs { "min", "max", "mean" } do assert.is_nil(h[m](h), m) end
    assert.is_nil(h:quantile(0.99))
    assert.equals("histogram{count=0}", tostring(h))
  end)

  it("records zero, repeated values and counts", function()
    local h = histogram.new()
    h:record(0)
    h:record(0.25, 3)
    assert.equals(4, h:count())
    assert.equals(0, h:min())
    assert.equals(0.25, h:quantile(0.5))
    assert.equals(0.75, h:sum())
    assert.near(0.1875, h:mean(), 1e-15)
    assert.matches("^histogram{count=4, p50=0.25, p99=0.25, max=0.25}$", tostring(h))
  end)

  it("merges into the same histogram as recording everything into one", function()
    local values = skewed_latencies(200000, 3)
    local whole, a, b = histogram.new(), histogram.new(), histogram.new()
    whole:record_many(values)
    for i, v in ipairs(values) do (i % 3 == 0 and a or b):record(v) end
    assert.equals(a, a:merge(b))
    assert.equals(whole:count(), a:count())
    assert.equals(whole:min(), a:min())
    assert.equals(whole:max(), a:max())
    assert.near(whole:mean(), a:mean(), 1e-12)
    for _, q in ipairs(QUANTILES) do assert.equals(whole:quantile(q), a:quantile(q)) end
    assert.equals(b:count(), a:count() - math.floor(#values / 3))
    a:merge(histogram.new()) -- an empty one changes nothing
    assert.equals(whole:count(), a:count())
    assert.equals(whole:min(), a:min())
  end)

  it("resets to empty", function()
    local h = histogram.new()
    h:record(1)
    assert.equals(h, h:reset())
    assert.equals(0, h:count())
    assert.is_nil(h:quantile(0.5))
    assert.is_nil(h:max())
    h:record(2)
    assert.equals(2, h:quantile(0.5))
    assert.equals(2, h:min())
  end)

  it("raises on values and quantiles that are programming errors", function()
    local h = histogram.new()
    assert.has_error(function() h:record(-1) end, "finite number >= 0")
    assert.has_error(function() h:record(0 / 0) end, "finite number >= 0")
    assert.has_error(function() h:record(math.huge) end, "finite number >= 0")
    assert.has_error(function() h:record("fast") end)
    assert.has_error(function() h:record(1, 0) end, "count must be >= 1")
    assert.has_error(function() h:quantile(1.5) end, "quantile must be in [0, 1]")
    assert.has_error(function() h:quantile(-0.1) end, "quantile must be in [0, 1]")
    assert.has_error(function() h:record_many({ 1, 2, -3 }) end, "element 3")
    assert.has_error(function() h:merge({}) end)
    assert.has_error(function() histogram.new().record(42, 1) end)
  end)

  it("is collected when dropped (its C memory freed by __gc; make asan checks the free)", function()
    local weak = setmetatable({}, { __mode = "k" })
    for _ = 1, 100 do weak[histogram.new()] = true end
    weak[histogram.window { slots = 3, width = 1 }] = true
    weak[histogram.window { slots = 3, width = 1 }:snapshot(0)] = true
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
  end)
end)

describe("histogram.window", function()
  it("answers over the last span and lets old slots expire", function()
    local w = histogram.window { slots = 10, width = 1 }
    for t = 0, 9 do w:record(t + 0.5, t + 1) end -- slot t holds the value t + 1
    assert.equals(10, w:count(9.5))
    assert.equals(10, w:quantile(9.5, 1))
    assert.equals(1, w:quantile(9.5, 0))
    assert.equals(3, w:count(9.5, 3))         -- slots 7, 8, 9
    assert.equals(8, w:quantile(9.5, 0, 3))
    assert.equals(3, w:count(9.5, 2.5))       -- rounded up to whole slots
    -- Five seconds later slots 0..4 have left the ring: only 5..9 remain, and the current
    -- slot (14) is empty.
    assert.equals(5, w:count(14.2))
    assert.equals(6, w:quantile(14.2, 0))
    assert.equals(0, w:count(14.2, 4))        -- slots 11..14: nothing recorded
    assert.is_nil(w:quantile(14.2, 0.5, 4))
    -- Recording at t = 14 reuses slot 4's place; the old value 5 must not come back.
    assert.is_true(w:record(14.2, 100))
    assert.equals(1, w:count(14.2, 1))
    assert.equals(100, w:quantile(14.2, 0.5, 1))
    assert.equals(6, w:count(14.2))
    assert.equals(6, w:quantile(14.2, 0))
  end)

  it("gives p99 over the last 60 s from per-second slots", function()
    local w = histogram.window { slots = 60, width = 1 }
    local values = skewed_latencies(60000, 21)
    -- 1000 requests a second for two minutes: the first minute 10 x slower.
    for i = 1, 120000 do
      local t = (i - 1) / 1000
      w:record(t, values[(i - 1) % #values + 1] * (t < 60 and 10 or 1))
    end
    local now = 119.9995
    local recent = {}
    for i = 60001, 120000 do recent[#recent + 1] = values[(i - 1) % #values + 1] end
    table.sort(recent)
    assert.equals(60000, w:count(now, 60))
    for _, q in ipairs(QUANTILES) do
      local exact = exact_quantile(recent, q)
      assert.truthy(relative_error(w:quantile(now, q, 60), exact) <= 0.01, "p" .. q * 100)
    end
    local snap = w:snapshot(now, 60)
    assert.equals(60000, snap:count())
    assert.equals(w:quantile(now, 0.99, 60), snap:quantile(0.99))
    assert.equals(recent[#recent], snap:max())
  end)

  it("refuses times older than the ring and resets", function()
    local w = histogram.window { slots = 4, width = 0.5 }
    assert.is_true(w:record(10, 1))
    assert.is_true(w:record(8.6, 2))          -- 3 slots back: still in the ring
    assert.is_false(w:record(7.9, 3))         -- 5 slots back: gone
    assert.equals(2, w:count(10))
    w:reset()
    assert.equals(0, w:count(10))
    assert.is_nil(w:quantile(10, 0.5))
    assert.is_true(w:record(1, 1))            -- after a reset any time is new again
  end)

  it("raises on bad options and arguments", function()
    assert.has_error(function() histogram.window { slots = 0, width = 1 } end, "'slots' must be an integer")
    assert.has_error(function() histogram.window { slots = 1.5, width = 1 } end, "'slots' must be an integer")
    assert.has_error(function() histogram.window { slots = 5000, width = 1 } end, "'slots' must be an integer")
    assert.has_error(function() histogram.window { slots = 5, width = 0 } end, "'width' must be > 0")
    assert.has_error(function() histogram.window { slots = 5 } end, "'width' must be a number")
    assert.has_error(function() histogram.window { slots = 5, width = 1, span = 3 } end, "unknown option 'span'")
    local w = histogram.window { slots = 5, width = 1 }
    assert.has_error(function() w:record(0 / 0, 1) end, "time must be finite")
    assert.has_error(function() w:record(1, -1) end, "finite number >= 0")
    assert.has_error(function() w:quantile(1, 2) end, "quantile must be in [0, 1]")
    assert.has_error(function() w:count(1, 0) end, "span must be > 0")
  end)
end)

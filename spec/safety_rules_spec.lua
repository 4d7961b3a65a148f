-- The rules of rollout.safety on their own (the end-to-end specs are safety_evidence_spec
-- and safety_override_spec): the share rule's three conditions at their edges, and the
-- merge that lets a synthetic source add evidence but never replace a real one.
local safety = require("rollout.safety")
local engine = require("rollout.engine")
local playbook = require("rollout.playbook")

describe("rollout.safety: the share rule", function()
  it("judges a canary far below its weight only with enough expected requests", function()
    -- HAProxy restarted at 50 %: 5 of 1000 requests reach the canary
    local why, f = safety.share_shortfall(50, 995, 5)
    assert.equals("canary_share", why)
    assert.is_true(f.far_below)
    assert.equals(500, f.expected)
    assert.near(0.5, f.share, 1e-9)
    -- drained at 25 %: 3 of 600
    assert.equals("canary_share", (safety.share_shortfall(25, 597, 3)))
    -- at its weight, or a little under it: never
    assert.is_nil((safety.share_shortfall(50, 500, 500)))
    assert.is_nil((safety.share_shortfall(5, 960, 40)))
    -- fewer than 10 expected canary requests: not judged (min_samples and min_rps decide)
    local none, g = safety.share_shortfall(5, 190, 0)
    assert.is_nil(none)
    assert.is_nil(g.far_below)
    assert.near(9.5, g.expected, 1e-9)
    assert.equals("canary_share", (safety.share_shortfall(5, 200, 0)))
    -- more than half missing but within noise: 4 of 10 expected at 50 % (sd 2.24, 6 short
    -- < 6.7): not far below; 3 of 10 (7 short) is
    assert.is_nil((safety.share_shortfall(50, 16, 4)))
    assert.equals("canary_share", (safety.share_shortfall(50, 17, 3)))
    -- no weight to compare with at 0 % and 100 %, or no counts
    assert.is_nil((safety.share_shortfall(0, 1000, 0)))
    assert.is_nil((safety.share_shortfall(100, 0, 1000)))
    assert.is_nil((safety.share_shortfall(50, nil, 10)))
  end)

  it("needs both halves and three standard deviations", function()
    -- n = 400 at 50 %: expected 200, sd 10. 99 is below half and 10 sd short; 101 is not below half
    assert.equals("canary_share", (safety.share_shortfall(50, 301, 99)))
    assert.is_nil((safety.share_shortfall(50, 299, 101)))
  end)
end)

describe("rollout.safety: synthetic requests add evidence, never replace it", function()
  local pb = assert(playbook.validate({ name = "s", versions = { baseline = { version = "a" }, canary = { version = "b" } },
    stages = { { weight = 10, hold = "1m" }, { weight = 100, hold = "1m" } } }, { file = "s" }))

  local function source(name, synthetic, provides, canary)
    local set = {}
    for _, k in ipairs(provides) do set[k] = true end
    return { name = name, synthetic = synthetic, provides = set,
      signals = function() return { baseline = { requests = 100, error_rate = 0.01 }, canary = canary } end }
  end

  it("a real source with no new canary requests leaves its traffic signals without data", function()
    local real = source("scrape", nil, { "requests", "rps", "error_rate", "p99" }, { requests = 0, rps = 0 })
    local probe = source("probe", true, { "requests", "rps", "error_rate", "p99", "health" },
      { requests = 5, rps = 1, error_rate = 0, p99 = 0.02, health = 1 })
    local e = engine.new(pb, { sources = { real, probe } })
    local sig = assert(e:signals(0, 60))
    assert.equals(0, sig.canary.requests)
    assert.is_nil(sig.canary.error_rate, "the probe's error rate stood in for the frozen real source")
    assert.is_nil(sig.canary.p99)
    assert.equals(1, sig.canary.health, "what no real source measures still comes from the probe")
  end)

  it("the probe fills a traffic signal no real source measures, and is the evidence when alone", function()
    local real = source("haproxy", nil, { "requests", "rps", "error_rate" }, { requests = 50, rps = 5, error_rate = 0 })
    local probe = source("probe", true, { "requests", "p99", "health" }, { requests = 5, p99 = 0.02, health = 1 })
    local sig = assert(engine.new(pb, { sources = { real, probe } }):signals(0, 60))
    assert.equals(50, sig.canary.requests)
    assert.equals(0.02, sig.canary.p99)
    local alone = assert(engine.new(pb, { sources = { probe } }):signals(0, 60))
    assert.equals(5, alone.canary.requests)
    assert.equals(0.02, alone.canary.p99)
  end)
end)

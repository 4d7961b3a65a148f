-- The judge's settings are declared for rollout.schema (enum, min/max, item, one_of); only
-- the rules that relate keys (thresholds against the effect, group weights against the
-- metrics, confidence or significance) are checked by hand, after the declarations.
local judge = require("rollout.judge")

local function errs(cfg, f) return (f or judge.validate)(cfg) end

describe("judge settings on rollout.schema", function()
  it("bounds and lists come from the declarations, each with the value it got", function()
    assert.same({ "max_samples: must be at least 10, got 5" }, errs({ max_samples = 5 }))
    assert.same({ "nodata_limit: must be at most 1, got 1.5" }, errs({ nodata_limit = 1.5 }))
    assert.same({ "nodata_limit: must be a fraction in (0, 1], got 0" }, errs({ nodata_limit = 0 }))
    assert.same({ "marginal: must be between 0 and 100, got -1" }, errs({ marginal = -1 }))
    assert.same({ "min_samples: must be at least 0, got -3" }, errs({ min_samples = -3 }))
    assert.same({ "groups.a: must be between 0 and 100, got 150" },
      errs({ metrics = { { name = "latency", group = "a" } }, groups = { a = 150 } }))
    assert.same({ "stages[2]: expected a stage name, got integer" }, errs({ stages = { "half", 2 } }))
    assert.same({ 'stages: must be "all", got some' }, errs({ stages = "some" }))
    assert.same({ 'stages: expected true, "all" or a list of stage names, got integer' }, errs({ stages = 3 }))
    assert.same({}, errs({ stages = "all" }))
    assert.same({}, errs({ stages = true }))
  end)

  it("a metric's enums, name and groups are declared", function()
    assert.same({ 'metrics[1].effect: must be "mean_ratio" or "cles", got ratio' },
      errs({ metrics = { { name = "latency", effect = "ratio" } } }))
    assert.same({ "metrics[1].name: required string" }, errs({ metrics = { { signal = "p99" } } }))
    assert.same({ "metrics[1].name: must not be empty" }, errs({ metrics = { { name = "", signal = "p99" } } }))
    assert.same({ "metrics[1].groups: expected a non-empty list of group names" },
      errs({ metrics = { { name = "latency", groups = {} } } }))
    assert.same({ "metrics[1].outlier_factor: must be a finite number > 0" },
      errs({ metrics = { { name = "latency", outlier_factor = 0 } } }))
  end)

  it("keeps the cross-field rules", function()
    assert.same({ "metrics[1].critical_increase: must not be below allowed_increase" },
      errs({ metrics = { { name = "latency", allowed_increase = 1.5, critical_increase = 1.2 } } }))
    assert.same({ "metrics[1].allowed_increase: a cles threshold is a probability between 0 and 1" },
      errs({ metrics = { { name = "latency", effect = "cles", allowed_increase = 2 } } }))
    assert.same({ "significance: set confidence or significance, not both" }, errs({ confidence = 0.9, significance = 0.1 }))
  end)

  it("the abTest: gate is true, false or stage names; counts and ratios bounded", function()
    assert.same({ "gate: expected true, false or a list of stage names, got string" },
      errs({ gate = "yes" }, judge.validate_ab_test))
    assert.same({ "min_samples: must be at least 0, got -1" }, errs({ min_samples = -1 }, judge.validate_ab_test))
    assert.same({ "allowed_increase: expected a ratio >= 1, got 0.5" }, errs({ allowed_increase = 0.5 }, judge.validate_ab_test))
  end)
end)

-- Gates on proportions decide with evidence (rollout.proportion, README "Gates on
-- proportions"): the Wilson bounds against scipy, the minimum sample, the engine's gate
-- extending instead of failing on thirty health checks, and the calibration table of
-- `make eval` on a smaller seed count with generous bounds.
local proc = require("rollout.proc")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proportion = require("rollout.proportion")
local sim = require("spec.support.sim")

local function scipy(code)
  local r = assert(proc.run({ argv = { "/usr/bin/python3", "-c", code }, timeout = 60 }))
  assert.equals(0, r.code, r.stderr)
  return assert(json.decode(r.stdout))
end

local function write_scenario(dir, name, t)
  local path = dir .. "/" .. name .. ".lua"
  assert(fs.write_atomic(path, "return " .. require("rollout.pretty").format(t, { depth = 10, width = 1000 }) .. "\n"))
  return path
end

describe("proportion: the exact test, Wilson bounds and the minimum sample", function()
  it("z() agrees with scipy's norm.ppf", function()
    local ps = { 0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.999 }
    local ref = scipy("import json; from scipy.stats import norm; print(json.dumps([norm.ppf(p) for p in "
      .. json.encode(ps) .. "]))")
    for i, p in ipairs(ps) do assert.near(ref[i], proportion.z(p), 1e-8, "z(" .. p .. ")") end
  end)

  it("one-sided bounds are scipy's two-sided Wilson interval at 1 - 2 alpha", function()
    local cases = { { 28, 30 }, { 297, 300 }, { 84, 5923 }, { 0, 50 }, { 50, 50 }, { 1, 1000 } }
    local ref = scipy("import json; from scipy.stats import binomtest\nout = []\nfor k, n in " .. json.encode(cases)
      .. ":\n  ci = binomtest(k, n).proportion_ci(confidence_level=0.90, method='wilson')\n  out.append([ci.low, ci.high])\n"
      .. "print(json.dumps(out))")
    for i, c in ipairs(cases) do
      local lo, hi = proportion.wilson(c[1], c[2], 0.95)
      assert.near(ref[i][1], lo, 1e-9, c[1] .. "/" .. c[2] .. " lower")
      assert.near(ref[i][2], hi, 1e-9, c[1] .. "/" .. c[2] .. " upper")
    end
  end)

  it("thirty health checks cannot resolve 0.99; the minimum sample can", function()
    local n_min = proportion.min_trials(0.99, "min")
    assert.truthy(n_min > 30 and n_min <= 600, "n_min " .. n_min)
    -- 30 of 30 and 29 of 30: not enough to pass, and no evidence of a fault either
    assert.equals("short", (proportion.decide({ x = 30, n = 30, threshold = 0.99, dir = "min" })))
    assert.equals("short", (proportion.decide({ x = 29, n = 30, threshold = 0.99, dir = "min" })))
    -- 27 of 30 is significantly below 0.99: fail even with a short sample
    assert.equals("fail", (proportion.decide({ x = 27, n = 30, threshold = 0.99, dir = "min" })))
    -- 597 of 600 (99.5 %) passes; 593 of 600 (98.8 %) is not significantly below: passes too;
    -- 300 checks without a failure are still short of n_min
    assert.equals("pass", (proportion.decide({ x = 597, n = 600, threshold = 0.99, dir = "min" })))
    assert.equals("pass", (proportion.decide({ x = 593, n = 600, threshold = 0.99, dir = "min" })))
    assert.equals("short", (proportion.decide({ x = 300, n = 300, threshold = 0.99, dir = "min" })))
    assert.equals("fail", (proportion.decide({ x = 285, n = 300, threshold = 0.99, dir = "min" })))
    -- error rate: 84 errors in 5,923 requests is significantly above 1 %
    local st, info = proportion.decide({ x = 84, n = 5923, threshold = 0.01, dir = "max" })
    assert.equals("fail", st)
    assert.gt(info.lower, 0.01)
  end)

  it("the exact binomial tail agrees with scipy's binom.sf", function()
    local cases = { { 2, 30, 0.01 }, { 10, 300, 0.01 }, { 2701, 270000, 0.01 }, { 84, 5923, 0.01 }, { 1, 5, 0.5 } }
    local ref = scipy("import json; from scipy.stats import binom; print(json.dumps([binom.sf(k - 1, n, q) for k, n, q in "
      .. json.encode(cases) .. "]))")
    for i, c in ipairs(cases) do
      local want, got = ref[i], proportion.tail(c[1], c[2], c[3])
      assert.truthy(math.abs(want - got) <= 1e-9 * math.max(1, want) + 1e-300,
        string.format("P(X >= %d | %d, %g): scipy %.17g, ours %.17g", c[1], c[2], c[3], want, got))
    end
  end)

  it("at n_min a canary detect x worse is failed with the stated power, one at the threshold with <= alpha (scipy)", function()
    for _, th in ipairs({ 0.99, 0.98 }) do
      local n = proportion.min_trials(th, "min")
      local alpha = proportion.alpha(0.95, 1)
      assert.near(0.025, alpha, 1e-15)
      -- the fewest failed checks that fail the gate at n
      local k = 0
      while proportion.decide({ x = n - k, n = n, threshold = th, dir = "min", alpha = alpha }) ~= "fail" do k = k + 1 end
      local q = 1 - th
      local ref = scipy(string.format("import json; from scipy.stats import binom; "
        .. "print(json.dumps([binom.sf(%d - 1, %d, %.17g), binom.sf(%d - 1, %d, %.17g)]))", k, n, 3 * q, k, n, q))
      assert.truthy(ref[1] >= 0.75, th .. ": power at 3x the failure share " .. ref[1])
      assert.truthy(ref[2] <= alpha, th .. ": false failures at the threshold " .. ref[2])
    end
  end)

  it("extension looks share the other half of alpha: at most 1 - confidence per stage", function()
    assert.near(0.025, proportion.alpha(0.95, 1, 31), 1e-15)
    assert.near(0.025 / 30, proportion.alpha(0.95, 2, 31), 1e-15)
    assert.near(0.05, proportion.alpha(0.95, 1, 31) + 30 * proportion.alpha(0.95, 7, 31), 1e-12)
  end)
end)

describe("gates on proportions in the engine", function()
  local dir = assert(fs.mkdtemp("calibration"))
  local base = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } }

  it("thirty health checks per window extend the hold and end inconclusive; never a rollback on noise", function()
    -- one health check per 10 s interval: a 0.995 canary is not distinguishable from 0.98
    local path = write_scenario(dir, "sparse-health", { seed = 3, traffic = { rps = 400 }, health_every = "10s",
      baseline = base, canary = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" }, health = 0.995 } })
    local summary, events = sim.simulate("playbooks/canary.lua", path)
    assert.equals("paused", summary.outcome)
    assert.equals("inconclusive:evidence:health", summary.reason)
    local gates = sim.events_of(events, "gate")
    assert.equals("extend", gates[1].result)
    local health
    for _, c in ipairs(gates[1].checks) do if c.signal == "health" then health = c end end
    assert.equals("short", health.status)
    assert.equals(30, health.evidence.n)
    assert.truthy(health.evidence.n_min > 30)
  end)

  it("a health check every 0.5 s (the default) resolves the same canary: promoted", function()
    local path = write_scenario(dir, "dense-health", { seed = 3, traffic = { rps = 400 },
      baseline = base, canary = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" }, health = 0.995 } })
    local summary, events = sim.simulate("playbooks/canary.lua", path)
    assert.equals("promoted", summary.outcome)
    local g = sim.events_of(events, "gate")[1]
    for _, c in ipairs(g.checks) do
      if c.signal == "health" then assert.equals(600, c.evidence.n) end
      if c.signal == "error_rate" then assert.equals(g.canary.requests, c.evidence.n) end
    end
  end)

  it("a p99 over its limit is a share of slow requests significantly above 1 %: rolled back by p99", function()
    local path = write_scenario(dir, "slow-tail", { seed = 5, traffic = { rps = 400 }, baseline = base,
      canary = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "750ms" } } })
    local summary, events = sim.simulate("playbooks/canary.lua", path)
    assert.equals("rolled_back", summary.outcome)
    assert.equals("gate:p99", summary.reason)
    local g = sim.events_of(events, "gate")[1]
    for _, c in ipairs(g.checks) do
      if c.signal == "p99" then assert.truthy(c.evidence.at > 0.5 and c.evidence.q < 0.99, json.encode(c.evidence)) end
    end
  end)

  it("policy.confidence, power and detect are checked", function()
    local r = assert(proc.run({ argv = { rollout.exe, "check", "playbooks/canary.lua", "--offline",
      "--set", "policy.confidence=1.5" }, timeout = 10 }))
    assert.equals(2, r.code)
    assert.matches("policy%.confidence", r.stderr)
  end)

  it("stays deterministic: the same seed gives the same bytes", function()
    local path = dir .. "/dense-health.lua"
    local a = assert(proc.run({ argv = { rollout.exe, "simulate", "playbooks/canary.lua", "--scenario", path, "--json" }, timeout = 30 }))
    local b = assert(proc.run({ argv = { rollout.exe, "simulate", "playbooks/canary.lua", "--scenario", path, "--json" }, timeout = 30 }))
    assert.equals(a.stdout, b.stdout)
  end)
end)

describe("make eval's calibration table", function()
  it("decides within bounds on every family (20 seeds each)", function()
    local r = assert(proc.run({ argv = { rollout.exe, "tools/eval.lua", "--calibration-only", "--seeds", "20", "--jobs", "2" },
      timeout = 120 }))
    assert.equals(0, r.code, r.stderr)
    local rows = 0
    for fam, want, promoted, rb, right, paused, wrong in r.stdout:gmatch(
        "| (%S+) | ([%a ]+) | (%d+) | (%d+) %((%d+)%) | (%d+) | (%d+) |") do
      rows = rows + 1
      promoted, rb, right, paused, wrong = tonumber(promoted), tonumber(rb), tonumber(right), tonumber(paused), tonumber(wrong)
      assert.equals(20, promoted + rb + paused, fam)
      -- generous: the goal is <= 1 %, the spec allows 2 of 20
      assert.le(wrong, 2, fam .. " wrong decisions")
      if want:find("^rolled back") then
        assert.equals(0, promoted, fam .. ": a bad canary promoted")
        assert.equals(rb, right, fam .. ": a rollback naming another signal")
      else
        assert.le(rb, 2, fam .. ": good canaries rolled back")
      end
    end
    assert.equals(12, rows, r.stdout)
  end)
end)

-- Every labelled scenario in scenarios/ through playbooks/canary.lua: outcome,
-- reason prefix and the bounds of the summary's `at` (docs/semantics.md).
local fs = require("rollout.fs")
local units = require("rollout.units")
local json = require("rollout.json")
local sim = require("spec.support.sim")

local dir = sim.SCENARIOS

describe("labelled scenarios through playbooks/canary.lua", function()
  local files = {}
  for _, name in ipairs(fs.list(dir) or {}) do
    if name:match("%.lua$") then files[#files + 1] = name end
  end
  it("finds the labelled scenarios", function()
    assert.truthy(#files >= 8, "expected at least 8 scenarios in " .. dir)
  end)
  for _, name in ipairs(files) do
    it(name, function()
      local path = dir .. "/" .. name
      local expect = dofile(path).expect
      local t0 = rollout.now()
      local summary, _, r = sim.simulate("playbooks/canary.lua", path)
      assert.truthy(summary, "no summary line; stderr: " .. r.stderr)
      assert.lt(rollout.now() - t0, 5, "a 55-minute simulation takes well under a second of wall time")
      assert.equals(expect.outcome, summary.outcome)
      if expect.reason then
        assert.truthy(type(summary.reason) == "string" and summary.reason:sub(1, #expect.reason) == expect.reason,
          "reason " .. tostring(summary.reason) .. " does not start with " .. expect.reason)
      else
        assert.equals(json.null, summary.reason)
      end
      local lo, hi = units.duration(expect.at[1]), units.duration(expect.at[2])
      assert.truthy(summary.at >= lo and summary.at <= hi, string.format("at %.1f not in [%g, %g]", summary.at, lo, hi))
      local codes = { promoted = 0, rolled_back = 1, paused = 3 }
      assert.equals(codes[expect.outcome], r.code)
    end)
  end
end)

describe("the runbook's canary-config.yaml", function()
  it("gives the same decisions as canary.lua on every labelled scenario", function()
    for _, name in ipairs(require("rollout.fs").list(dir) or {}) do
      if name:match("%.lua$") then
        local path = dir .. "/" .. name
        local a = sim.simulate("playbooks/canary.lua", path)
        local b, _, r = sim.simulate("playbooks/canary.lua", path, { "--config", "playbooks/canary-config.yaml" })
        assert.truthy(b, r.stderr)
        assert.same(a, b, name)
      end
    end
  end)

  it("reports the keys it cannot use, with file and line", function()
    local r = assert(require("rollout.proc").run({ argv = { rollout.exe, "check", "playbooks/canary.lua", "--offline",
      "--config", "playbooks/canary-config.yaml" }, timeout = 10 }))
    assert.equals(0, r.code, r.stderr)
    assert.matches("warning: playbooks/canary%-config%.yaml:12: spec%.baseline%.replicas: not used", r.stderr)
    -- criticalErrorRate is used (spec/preflight_signals_spec.lua), not warned about
    assert.is_nil(r.stderr:find("criticalErrorRate", 1, true), r.stderr)
  end)

  it("names the YAML file, line and key of a malformed value", function()
    local d = fs.mkdtemp("cfg")
    local text = fs.read("playbooks/canary-config.yaml"):gsub("duration: 10m", "duration: 10 minutes", 1)
    fs.write_atomic(d .. "/bad.yaml", text)
    local r = assert(require("rollout.proc").run({ argv = { rollout.exe, "check", "playbooks/canary.lua", "--offline",
      "--config", d .. "/bad.yaml" }, timeout = 10 }))
    fs.rmtree(d)
    assert.equals(2, r.code)
    assert.matches("bad%.yaml:%d+: spec%.stages%[2%]%.duration: malformed duration", r.stderr)
  end)
end)

describe("simulation", function()
  it("is deterministic: the same seed gives the same run, byte for byte", function()
    local p = sim.SCENARIOS .. "/error-spike.lua"
    local _, _, r1 = sim.simulate("playbooks/canary.lua", p)
    local _, _, r2 = sim.simulate("playbooks/canary.lua", p)
    assert.truthy(#r1.stdout > 1000)
    assert.equals(r1.stdout, r2.stdout)
  end)
end)

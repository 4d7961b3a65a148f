local playbook = require("rollout.playbook")
local proc = require("rollout.proc")

local function messages(errs)
  local out = {}
  for _, e in ipairs(errs) do out[#out + 1] = playbook.format_error(e) end
  return out
end

local function has(list, needle)
  for _, m in ipairs(list) do if m:find(needle, 1, true) then return true end end
  return false
end

describe("playbook validation", function()
  local F = "spec/fixtures/playbooks/broken.lua"

  it("reports every error at once with file, line and key path", function()
    local pb, errs = playbook.load(F)
    assert.is_nil(pb)
    local m = messages(errs)
    local expected = {
      F .. ":6: versions.canary.colour: unknown key (known: health, labels, metrics, name, ready, url, version)",
      F .. ":8: interval: malformed duration",
      F .. ':9: thresholds.p99: malformed duration (want e.g. 250ms, 10s, 5m, 1h30m): "fast"',
      F .. ':9: thresholds.error_rate: malformed ratio',
      F .. ":9: thresholds.health: must be between 0 and 100%",
      F .. ":12: stages[2].weight: weights must increase: 5 after 10",
      F .. ":13: stages[3].weight: must be between 0 and 100, got 150",
      F .. ':14: stages[3].hold: malformed duration: each number needs a unit (ns, us, ms, s, m, h, d): "5 minutes"',
      F .. ":15: stages[4].weight: required",
      F .. ":15: stages[4].min_samples: must be at least 0",
      F .. ":18: triggers.error_rate.condition: condition has a malformed value",
      F .. ':19: triggers.latency.duration: malformed duration',
      F .. ":20: triggers.odd.condition: unknown signal 'colour'",
      F .. ':22: policy.inconclusive: must be "pause" or "rollback", got shrug',
      F .. ":23: bogus: unknown key",
    }
    for _, want in ipairs(expected) do
      assert.truthy(has(m, want), "missing error: " .. want .. "\n got:\n" .. table.concat(m, "\n"))
    end
    assert.equals(#expected, #m, table.concat(m, "\n"))
    for i = 2, #errs do assert.truthy((errs[i - 1].line or 0) <= (errs[i].line or 0), "errors are sorted by line") end
  end)

  it("rollout check exits 2 and prints every error", function()
    local r = assert(proc.run({ argv = { rollout.exe, "check", F }, timeout = 10 }))
    assert.equals(2, r.code)
    assert.matches("15 errors in " .. F, r.stderr)
    assert.matches("stages%[3%]%.hold", r.stderr)
  end)

  it("accepts the shipped playbooks", function()
    for _, p in ipairs({ "playbooks/canary.lua", "spec/fixtures/playbooks/minimal.lua" }) do
      local pb, errs = playbook.load(p)
      assert.truthy(pb, p .. ": " .. table.concat(messages(errs or {}), "\n"))
    end
    local r = assert(proc.run({ argv = { rollout.exe, "check", "playbooks/canary.lua", "--offline" }, timeout = 10 }))
    assert.equals(0, r.code, r.stderr)
  end)

  it("normalises units and applies the runbook's defaults", function()
    local pb = assert(playbook.load("playbooks/canary.lua"))
    assert.equals(10, pb.interval)
    assert.same({ 5, 25, 50, 75, 100 }, { pb.stages[1].weight, pb.stages[2].weight, pb.stages[3].weight, pb.stages[4].weight, pb.stages[5].weight })
    assert.same({ 300, 600, 900, 900, 600 }, { pb.stages[1].hold, pb.stages[2].hold, pb.stages[3].hold, pb.stages[4].hold, pb.stages[5].hold })
    assert.equals(600, pb.stages[1].max_hold)
    assert.near(0.01, pb.stages[1].thresholds.error_rate.value, 1e-12)
    assert.near(0.6, pb.stages[3].thresholds.p99.value, 1e-12)
    local full = playbook.stage_thresholds(pb, pb.stages[5])
    assert.near(0.5, full.p99.value, 1e-12, "Full keeps the golden p99")
    local names = {}
    for _, t in ipairs(pb.triggers) do names[#names + 1] = t.name end
    assert.same({ "crash_loop", "critical_alert", "error_rate", "health_score", "latency_p99" }, names)
    assert.equals(10, #pb.preflight)
  end)

  it("applies --set overrides before validating", function()
    local pb = assert(playbook.load("spec/fixtures/playbooks/minimal.lua", { sets = { "stages[1].hold=20s", "interval=5s", "versions.canary.version=v9" } }))
    assert.equals(20, pb.stages[1].hold)
    assert.equals(5, pb.interval)
    assert.equals("v9", pb.versions.canary.version)
    local bad, errs = playbook.load("spec/fixtures/playbooks/minimal.lua", { sets = { "stages[2].weight=10" } })
    assert.is_nil(bad)
    assert.matches("weights must increase", playbook.format_error(errs[1]))
    local _, e2 = playbook.load("spec/fixtures/playbooks/minimal.lua", { sets = { "nonsense" } })
    assert.matches("key=value", e2[1].msg)
  end)

  it("parses relative thresholds", function()
    local pb = assert(playbook.load("spec/fixtures/playbooks/minimal.lua",
      { sets = { "thresholds.error_rate=+0.5pp", "thresholds.p99=1.2x" } }))
    assert.equals("plus", pb.thresholds.error_rate.relative)
    assert.near(0.005, pb.thresholds.error_rate.plus, 1e-12)
    assert.equals("factor", pb.thresholds.p99.relative)
    assert.near(1.2, pb.thresholds.p99.factor, 1e-12)
  end)

  it("names a syntax error's line", function()
    local dir = require("rollout.fs").mkdtemp("pb")
    local p = dir .. "/bad.lua"
    local f = io.open(p, "w"); f:write("return {\n name = 'x',\n stages = {\n}\n"); f:close()
    local pb, errs = playbook.load(p)
    assert.is_nil(pb)
    assert.matches(p .. ":%d+:", playbook.format_error(errs[1]))
    require("rollout.fs").rmtree(dir)
  end)
end)

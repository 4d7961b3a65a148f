-- The runbook's --config YAML and the playbook, validated by their rollout.schema rules
-- (issue 18: one schema): every error at once with file, line and full key path, exit 2;
-- keys rollout cannot use are warnings in line order; what used to pass unseen (a section
-- that is not a mapping, a trigger without a kind next to another error) is reported.
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local config = require("rollout.config")

local function check(args)
  local argv = { rollout.exe, "check", "--offline" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(proc.run({ argv = argv, timeout = 30 }))
end

local function line_of(text, needle)
  local n = 0
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if l:find(needle, 1, true) then return n end
  end
  error("not in the text: " .. needle)
end

describe("--config YAML on rollout.schema", function()
  local dir
  before_each(function() dir = assert(fs.mkdtemp("config-spec")) end)
  after_each(function() fs.rmtree(dir) end)

  local function write(text)
    local p = dir .. "/c.yaml"
    assert(fs.write_atomic(p, text))
    return p
  end

  it("reports every malformed value and every section of the wrong shape, in line order", function()
    local text = assert(fs.read("playbooks/canary-config.yaml"))
      :gsub("trafficPercent: 25", 'trafficPercent: "x"', 1)
      :gsub("minSampleSize: 5000", "minSampleSize: 5.5", 1)
      :gsub("cpuMax: 80%%", "cpuMax: 180%%", 1)
      :gsub("maxRollbackTime: 5m", "maxRollbackTime: soon", 1)
      :gsub("  baseline:\n", "  baseline: 3\n  base:\n", 1)
      :gsub("    traffic:\n", "    traffic: 7\n    traf:\n", 1)
      :gsub("      %- condition: latency_p99 > 1s\n        duration: 5m\n", "      - duration: 1m\n", 1)
    local p = write(text)
    local r = check({ "playbooks/canary.lua", "--config", p })
    assert.equals(2, r.code, r.stderr)
    local want = {
      p .. ":" .. line_of(text, "baseline: 3") .. ": spec.baseline: expected a mapping",
      p .. ":" .. line_of(text, 'trafficPercent: "x"') .. ": spec.stages[2].trafficPercent: expected a number, got string",
      p .. ":" .. line_of(text, "minSampleSize: 5.5") .. ": spec.stages[2].validation.minSampleSize: expected an integer, got number",
      p .. ":" .. line_of(text, "traffic: 7") .. ": spec.goldenSignals.traffic: expected a mapping",
      p .. ":" .. line_of(text, "cpuMax: 180%") .. ": spec.goldenSignals.saturation.cpuMax: must be between 0 and 100%, got 180%",
      -- a missing key is shown at the line of its mapping
      p .. ":" .. line_of(text, "- duration: 1m") .. ': spec.rollback.triggers[2].condition: required condition ("error_rate > 0.05")',
      p .. ":" .. line_of(text, "maxRollbackTime: soon") .. ': spec.rollback.maxRollbackTime: malformed duration (want e.g. 250ms, 10s, 5m, 1h30m): "soon"',
    }
    local got = {}
    for l in r.stderr:gmatch("[^\n]+") do if l:find(p, 1, true) == 1 then got[#got + 1] = l end end
    assert.same(want, got)
    assert.matches("7 errors in ", r.stderr)
  end)

  it("warns about the keys it cannot use, in line order, at their YAML key paths", function()
    local text = assert(fs.read("playbooks/canary-config.yaml")):gsub("metadata:\n", "metadata:\n  team-name: payments\n", 1)
      .. "colour: blue\n"
    local _, errs = config.apply({}, write(text))
    assert.is_nil(errs)
    local merged = assert(config.apply({}, write(text)))
    local lines, shown = {}, {}
    for _, w in ipairs(merged.config_warnings) do
      lines[#lines + 1] = w.line
      shown[#shown + 1] = w.path .. ": " .. w.msg
    end
    for i = 2, #lines do assert.truthy(lines[i - 1] <= lines[i], "warnings in line order") end
    assert.equals("metadata.team-name: not used by rollout: unknown key", shown[1])
    assert.equals("colour: not used by rollout: unknown key", shown[#shown])
    assert.truthy(table.concat(shown, "\n"):find("metadata.namespace: not used by rollout: the router's own settings name the namespace", 1, true))
  end)

  it("refuses a document that is not a CanaryDeployment with that alone", function()
    local text = assert(fs.read("playbooks/canary-config.yaml")):gsub("kind: CanaryDeployment", "kind: Deployment", 1)
    local merged, errs = config.apply({}, write(text))
    assert.is_nil(merged)
    assert.same({ { file = dir .. "/c.yaml", line = 3, path = "kind", msg = 'must be "CanaryDeployment", got Deployment' } }, errs)
  end)

  it("takes an empty value for a key not set, but `stages:` alone is no list of stages", function()
    local merged = assert(config.apply({}, write("apiVersion: dwcp.io/v1\nkind: CanaryDeployment\nmetadata:\nspec:\n  goldenSignals:\n")))
    assert.is_nil(merged.stages)
    local _, errs = config.apply({}, write("apiVersion: dwcp.io/v1\nkind: CanaryDeployment\nspec:\n  stages:\n"))
    assert.same({ { file = dir .. "/c.yaml", line = 4, path = "spec.stages", msg = "expected a non-empty list" } }, errs)
  end)
end)

describe("the playbook on rollout.schema", function()
  local dir
  before_each(function() dir = assert(fs.mkdtemp("config-spec")) end)
  after_each(function() fs.rmtree(dir) end)

  it("reports a trigger without a kind, a stray list key and a value outside an enum with the other errors", function()
    local p = dir .. "/pb.lua"
    assert(fs.write_atomic(p, [[
return {
  name = "x",
  versions = { baseline = { version = "a" }, canary = { version = "b" } },
  stages = { { weight = 100, hold = "1m" } },
  triggers = {
    { name = "nothing", description = "no condition, check, alert or restarts" },
    { name = "bad", condition = "error_rate >> 1%" },
    stray = { condition = "error_rate > 1%" },
  },
  policy = { relative_to = 1, max_hold_factor = 0.5 },
}
]]))
    local r = check({ p })
    assert.equals(2, r.code, r.stderr)
    for _, want in ipairs({
      p .. ":6: triggers[1]: a trigger needs exactly one of condition, check, alert or restarts",
      p .. ":7: triggers[2].condition: condition has a malformed value",
      p .. ":8: triggers.stray: expected a list (1..n); this key does not belong",
      p .. ':10: policy.relative_to: must be "snapshot" or "live", got 1',
      p .. ":10: policy.max_hold_factor: must be at least 1, got 0.5",
    }) do
      assert.truthy(r.stderr:find(want, 1, true), "missing: " .. want .. "\ngot:\n" .. r.stderr)
    end
    assert.matches("5 errors in ", r.stderr)
  end)
end)

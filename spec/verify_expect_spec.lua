-- A scenario's `expect` is declared once (rollout.sim.scenario) and checked by rollout.schema:
-- `rollout verify` reports each problem with file, line and the key path the schema gave
-- (no path text parsed back into keys), before anything runs.
local proc = require("rollout.proc")
local fs = require("rollout.fs")
local engine = require("rollout.engine")
local scenario = require("rollout.sim.scenario")
local sim = require("spec.support.sim")

local function errors_of(expect, opts)
  local raw = { traffic = { rps = 10 }, baseline = { latency = { p50 = "10ms" } }, canary = { latency = { p50 = "10ms" } },
    expect = expect }
  local s, errs = scenario.check(raw, opts)
  if s then return {}, s end
  local out = {}
  for _, e in ipairs(errs) do out[#out + 1] = e.path .. ": " .. e.msg end
  table.sort(out)
  return out
end

describe("a scenario's expect", function()
  local V = { outcomes = engine.OUTCOMES }

  it("is required, with an outcome the engine has, for rollout verify", function()
    assert.matches("^expect: required %(what the playbook should decide", errors_of(nil, V)[1])
    assert.same({ "expect.outcome: required (one of promoted, rolled_back, paused, aborted, failed)" }, errors_of({}, V))
    assert.same({ 'expect.outcome: must be one of "promoted", "rolled_back", "paused", "aborted", "failed", got rollback' },
      errors_of({ outcome = "rollback" }, V))
    -- rollout simulate reads the same scenarios without needing one
    assert.same({}, errors_of(nil))
  end)

  it("checks reason and the at bounds by their declaration, with key paths", function()
    assert.same({ "expect.reason: expected a string, got integer" }, errors_of({ outcome = "promoted", reason = 1 }, V))
    assert.same({ "expect.at: the lower bound is above the upper bound" },
      errors_of({ outcome = "promoted", at = { "16m", "14m" } }, V))
    assert.same({ "expect.at: expected the bounds {lower, upper}, got 1 value" }, errors_of({ outcome = "promoted", at = { "14m" } }, V))
    assert.same({ "expect.at[2]: malformed duration (want e.g. 250ms, 10s, 5m, 1h30m): \"soon\"" },
      errors_of({ outcome = "promoted", at = { "1m", "soon" } }, V))
    local _, s = errors_of({ outcome = "rolled_back", reason = "trigger:", at = { "14m", "16m" } }, V)
    assert.same({ outcome = "rolled_back", reason = "trigger:", at = { 840, 960 } }, s.expect)
  end)

  it("rollout verify names the file, the line of the bad key and its path, exit 2", function()
    local tmp = assert(fs.mkdtemp("verify-expect"))
    local src = fs.read(sim.SCENARIOS .. "/healthy.lua")
    src = src:gsub("expect%s*=%s*%b{}", 'expect = {\n    outcome = "promoted",\n    at = { "16m", "14m" },\n  }')
    local path = tmp .. "/bounds.lua"
    assert(fs.write_atomic(path, src))
    local line
    local n = 0
    for l in (src .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      if l:match('at = { "16m", "14m" }') then line = n end
    end
    local r = assert(proc.run({ argv = { rollout.exe, "verify", "playbooks/canary.lua", path }, timeout = 60 }))
    assert.equals(2, r.code, r.stdout .. r.stderr)
    assert.equals("", r.stdout)
    assert.matches("bounds%.lua:" .. line .. ": expect%.at: the lower bound is above the upper bound", r.stderr)
  end)
end)

-- rollout verify: policy tests over scenarios, table/JSON/JUnit output, exit codes, and the
-- project's own labelled scenarios through playbooks/canary.lua (this is how `make test`
-- runs them).
local proc = require("rollout.proc")
local fs = require("rollout.fs")
local json = require("rollout.json")
local sim = require("spec.support.sim")

local SCENARIOS = sim.SCENARIOS

local function verify(argv)
  local a = { rollout.exe, "verify" }
  for _, x in ipairs(argv) do a[#a + 1] = x end
  return assert(proc.run({ argv = a, timeout = 60 }))
end

-- a scenario file from a base one with another `expect` (and optionally a name)
local function variant(dir, file, base, expect_src, name)
  local src = fs.read(base)
  src = src:gsub("expect%s*=%s*%b{}", "expect = " .. expect_src)
  if name then src = src:gsub("return%s*{", "return {\n  name = " .. string.format("%q", name) .. ",", 1) end
  local path = dir .. "/" .. file
  assert(fs.write_atomic(path, src))
  return path
end

-- a valid JUnit document read by Python's XML parser (what CI reporters build on):
-- returns {suites = {...}} with every testcase and its failure, if any
local function parse_junit(path)
  local py = [[
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
out = {"root": root.tag, "attrs": dict(root.attrib), "suites": []}
for s in root.iter("testsuite"):
    suite = {"attrs": dict(s.attrib), "cases": []}
    for c in s.iter("testcase"):
        f = c.find("failure")
        suite["cases"].append({"attrs": dict(c.attrib), "failure": None if f is None else {"message": f.get("message"), "type": f.get("type"), "text": f.text}})
    out["suites"].append(suite)
print(json.dumps(out))
]]
  local r = assert(proc.run({ argv = { "python3", "-c", py, path }, timeout = 20 }))
  assert.equals(0, r.code, "JUnit XML does not parse: " .. r.stderr)
  return json.decode(r.stdout)
end

describe("rollout verify", function()
  local tmp
  before_each(function() tmp = fs.mkdtemp("verify") end)
  after_each(function() if tmp then fs.rmtree(tmp) end end)

  it("runs the project's labelled scenarios through playbooks/canary.lua: all match, exit 0", function()
    local r = verify({ "playbooks/canary.lua", SCENARIOS })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local names = {}
    for _, n in ipairs(fs.list(SCENARIOS)) do if n:match("%.lua$") then names[#names + 1] = n:gsub("%.lua$", "") end end
    assert.truthy(#names >= 8)
    assert.matches("^SCENARIO%s+EXPECTED%s+GOT%s+RESULT\n", r.stdout)
    for _, n in ipairs(names) do
      assert.matches("\n" .. n:gsub("%-", "%%-") .. "%s+%S.-%s+ok\n", r.stdout)
    end
    assert.matches("ok: " .. #names .. " passed, 0 failed", r.stdout)
  end)

  it("decides each scenario exactly as `rollout simulate` does", function()
    local r = verify({ "playbooks/canary.lua", SCENARIOS, "--json" })
    assert.equals(0, r.code, r.stderr)
    local doc = json.decode(r.stdout)
    assert.truthy(#doc.results >= 8)
    for _, res in ipairs(doc.results) do
      local summary = sim.simulate("playbooks/canary.lua", res.file)
      assert.equals(summary.outcome, res.got.outcome, res.name)
      assert.equals(summary.reason, res.got.reason, res.name)
      assert.equals(summary.at, res.got.at, res.name)
      assert.is_true(res.pass, res.name)
    end
  end)

  it("reports a mismatch of outcome, reason and time in the table, and exits 1", function()
    local base = SCENARIOS .. "/error-spike.lua"
    variant(tmp, "a-right.lua", base, '{ outcome = "rolled_back", reason = "trigger:error_rate", at = { "14m", "16m" } }')
    variant(tmp, "b-outcome.lua", base, '{ outcome = "promoted" }')
    variant(tmp, "c-reason.lua", base, '{ outcome = "rolled_back", reason = "gate:" }')
    variant(tmp, "d-late.lua", base, '{ outcome = "rolled_back", at = { "20m", "21m" } }')
    local r = verify({ "playbooks/canary.lua", tmp })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("\na%-right%s+rolled_back trigger:error_rate%* at 14m00s%.%.16m00s%s+rolled_back trigger:error_rate at 14m40s%s+ok\n", r.stdout)
    assert.matches("\nb%-outcome%s+promoted%s+rolled_back trigger:error_rate at 14m40s%s+FAIL\n", r.stdout)
    assert.matches("FAIL b%-outcome %(.-b%-outcome%.lua%): outcome rolled_back, expected promoted", r.stdout)
    assert.matches("FAIL c%-reason .-: reason trigger:error_rate does not start with gate:", r.stdout)
    assert.matches("FAIL d%-late .-: at 14m40s not in 20m00s%.%.21m00s", r.stdout)
    assert.matches("FAIL: 1 passed, 3 failed %(4 scenarios%)", r.stdout)
  end)

  it("writes JUnit XML that a reporter reads: one testcase per scenario, failures with why, escaped", function()
    local base = SCENARIOS .. "/error-spike.lua"
    local ok1 = variant(tmp, "ok.lua", base, '{ outcome = "rolled_back", reason = "trigger:error_rate" }')
    local bad = variant(tmp, "bad.lua", base, '{ outcome = "promoted" }', 'spike <in> "ramp" & co')
    local out = tmp .. "/report.xml"
    local r = verify({ "playbooks/canary.lua", ok1, bad, "--junit", out })
    assert.equals(1, r.code, r.stderr)
    local text = fs.read(out)
    assert.matches("&lt;in&gt; &quot;ramp&quot; &amp; co", text)
    local doc = parse_junit(out)
    assert.equals("testsuites", doc.root)
    assert.equals("2", doc.attrs.tests)
    assert.equals("1", doc.attrs.failures)
    assert.equals(1, #doc.suites)
    local cases = doc.suites[1].cases
    assert.equals(2, #cases)
    assert.equals("ok", cases[1].attrs.name)
    assert.equals("playbooks/canary.lua", cases[1].attrs.classname)
    assert.equals(json.null, cases[1].failure)
    assert.equals('spike <in> "ramp" & co', cases[2].attrs.name)
    assert.equals("mismatch", cases[2].failure.type)
    assert.equals("outcome rolled_back, expected promoted", cases[2].failure.message)
    assert.matches("expected: promoted\ngot: rolled_back trigger:error_rate at 14m40s", cases[2].failure.text)
    assert.truthy(tonumber(cases[2].attrs.time) >= 0)
  end)

  it("--json gives one document with each scenario's expectation and result", function()
    local base = SCENARIOS .. "/healthy.lua"
    local p = variant(tmp, "h.lua", base, '{ outcome = "promoted", at = { "50m", "60m" } }')
    local r = verify({ "playbooks/canary.lua", p, "--json" })
    assert.equals(0, r.code, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equals(1, doc.passed)
    assert.equals(0, doc.failed)
    assert.equals("h", doc.results[1].name)
    assert.equals("promoted", doc.results[1].got.outcome)
    assert.same({ 3000, 3600 }, doc.results[1].expect.at)
  end)

  it("rejects bad input with file, line and key, exit 2, and runs nothing", function()
    local base = SCENARIOS .. "/healthy.lua"
    local noexp = tmp .. "/noexpect.lua"
    fs.write_atomic(noexp, (fs.read(base):gsub("expect%s*=%s*%b{},?", "")))
    local badout = variant(tmp, "badout.lua", base, '{\n    outcome = "rollback" }')
    local out = tmp .. "/report.xml"
    local r = verify({ "playbooks/canary.lua", noexp, badout, tmp .. "/missing.lua", "--junit", out })
    assert.equals(2, r.code)
    assert.equals("", r.stdout)
    assert.is_nil(fs.stat(out), "no JUnit file from a run that did not happen")
    assert.matches("missing%.lua: no such file or directory", r.stderr)
    r = verify({ "playbooks/canary.lua", noexp, badout })
    assert.equals(2, r.code)
    assert.matches("noexpect%.lua:%d+: expect: required", r.stderr)
    assert.matches('badout%.lua:%d+: expect%.outcome: must be one of "promoted", "rolled_back", "paused", "aborted", "failed", got rollback', r.stderr)
    local empty = tmp .. "/empty"
    fs.mkdir(empty)
    r = verify({ "playbooks/canary.lua", empty })
    assert.equals(2, r.code)
    assert.matches("empty: no %*%.lua scenarios", r.stderr)
    r = verify({ "playbooks/canary.lua" })
    assert.equals(2, r.code)
    assert.matches("usage: rollout verify", r.stderr)
    r = verify({ "playbooks/canary.lua", SCENARIOS, "--set", "interval=soon" })
    assert.equals(2, r.code)
    assert.equals("", r.stdout)
    assert.matches("canary%.lua:%d+: interval: malformed duration", r.stderr)
  end)

  it("docs/simulation.md: the checkout scenario and its output are what verify does", function()
    local doc = assert(fs.read("docs/simulation.md"))
    local section = assert(doc:match("### A scenario for your own service.*"), "the how-to section")
    local src = assert(section:match("```lua\n(.-)```"), "the scenario block")
    local shown = assert(section:match("```sh\n%$ (rollout verify [^\n]+)\n(.-)```"), "the command block")
    local cmd, out = section:match("```sh\n%$ (rollout verify [^\n]+)\n(.-)```")
    assert.truthy(shown)
    fs.mkdir(tmp .. "/scenarios")
    local path = tmp .. "/scenarios/checkout-slow-db.lua"
    assert(fs.write_atomic(path, src))
    local argv = {}
    for w in cmd:gmatch("%S+") do argv[#argv + 1] = w == "scenarios/checkout-slow-db.lua" and path or w end
    assert.equals("rollout", table.remove(argv, 1))
    assert.equals("verify", table.remove(argv, 1))
    local r = verify(argv)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.equals(out, r.stdout)
    -- "Had the bounds said {"20m", "23m"} ... FAIL ... exit 1"
    local why = assert(section:match("`(FAIL checkout%-slow%-db [^`]+)`"))
    assert(fs.write_atomic(path, (src:gsub('at = { "25m", "27m" }', 'at = { "20m", "23m" }'))))
    r = verify(argv)
    assert.equals(1, r.code)
    assert.truthy(r.stdout:find((why:gsub("scenarios/checkout%-slow%-db%.lua", path)), 1, true), r.stdout)
  end)
end)

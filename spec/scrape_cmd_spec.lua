-- `rollout scrape URL|FILE [--json]`, run as a user would: the real binary as a child
-- process, against sample-service's /metrics and files in a temp dir.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local support = require("spec.support.sources_support")

local function scrape(...)
  local r = assert(proc.run { argv = { rollout.exe, "scrape", ... }, timeout = 30 })
  return r.code, r.stdout, r.stderr
end

local FIXTURE = [[
# HELP jobs_total Jobs done.
# TYPE jobs_total counter
jobs_total{queue="a b",kind="x\"y"} 12 1700000000000
jobs_total{queue="c"} 3.5
# TYPE temp gauge
temp NaN
temp_max +Inf
]]

describe("rollout scrape", function()
  local dir
  before_each(function() dir = assert(fs.mkdtemp("scrape-cmd")) end)
  after_each(function() fs.rmtree(dir) end)

  it("prints families and samples of a live target, then the counts", function()
    local s = support.start { version = "v7" }
    finally(function() s:stop() end)
    local code, out, err = scrape(s.metrics)
    assert.equals(0, code, err)
    assert.matches("\nhttp_requests_total %(counter, %d+ samples?%)  Requests to / by method and status code%.\n", out)
    assert.matches('\n  http_requests_total{code="200",method="GET",version="v7"} 0\n', out)
    assert.matches('\n  http_request_duration_seconds_bucket{le="%+Inf",version="v7"} 0\n', out)
    assert.matches("\n%d+ families, %d+ samples\n$", out)
  end)

  it("--json gives the counts first, then the data", function()
    local s = support.start { version = "v7" }
    finally(function() s:stop() end)
    local code, out = scrape(s.metrics, "--json")
    assert.equals(0, code)
    assert.matches('^{"families":%d+,"samples":%d+,', out)
    local doc = assert(json.decode(out))
    assert.equals(#doc.data, doc.families)
    local n = 0
    for _, f in ipairs(doc.data) do n = n + #f.samples end
    assert.equals(n, doc.samples)
    assert.equals(s.metrics, doc.target)
    local fam
    for _, f in ipairs(doc.data) do if f.name == "process_start_time_seconds" then fam = f end end
    assert.equals("gauge", fam.type)
    assert.is_number(fam.samples[1].value)
  end)

  it("reads a file; labels, timestamps and non-finite values survive", function()
    local path = dir .. "/m.prom"
    assert(fs.write_atomic(path, FIXTURE, 420))
    local code, out = scrape(path)
    assert.equals(0, code)
    assert.equals(table.concat({
      "jobs_total (counter, 2 samples)  Jobs done.",
      '  jobs_total{kind="x\\"y",queue="a b"} 12 1700000000000',
      '  jobs_total{queue="c"} 3.5',
      "temp (gauge, 1 sample)",
      "  temp NaN",
      "temp_max (untyped, 1 sample)",
      "  temp_max +Inf",
      "3 families, 4 samples",
    }, "\n") .. "\n", out)
    local jcode, jout = scrape("--json", path)
    assert.equals(0, jcode)
    local doc = assert(json.decode(jout))
    assert.equals(3, doc.families)
    assert.equals(4, doc.samples)
    assert.equals(1700000000000, doc.data[1].samples[1].timestamp)
    assert.same({ kind = 'x"y', queue = "a b" }, doc.data[1].samples[1].labels)
    assert.equals("NaN", doc.data[2].samples[1].value)
    assert.equals("+Inf", doc.data[3].samples[1].value)
  end)

  it("exits 3 naming the file and the line of a malformed exposition", function()
    local path = dir .. "/bad.prom"
    assert(fs.write_atomic(path, "ok 1\n# TYPE x counter\nx{code=\"200} 5\n", 420))
    local code, out, err = scrape(path)
    assert.equals(3, code)
    assert.equals("", out)
    assert.equals("rollout scrape: " .. path .. ": line 3: unterminated value of label code\n", err)
  end)

  it("exits 3 when the target cannot be read", function()
    local port = support.servers.free_port()
    local code, _, err = scrape("http://127.0.0.1:" .. port .. "/metrics")
    assert.equals(3, code)
    assert.equals("rollout scrape: http://127.0.0.1:" .. port .. "/metrics: connection refused\n", err)
    local s = support.start { version = "v1" }
    finally(function() s:stop() end)
    code, _, err = scrape(s.url .. "/nope")
    assert.equals(3, code)
    assert.equals("rollout scrape: " .. s.url .. "/nope: HTTP 404\n", err)
    code, _, err = scrape(dir .. "/missing.prom")
    assert.equals(3, code)
    assert.matches("No such file or directory", err)
  end)

  it("exits 2 on usage errors", function()
    local code, _, err = scrape()
    assert.equals(2, code)
    assert.matches("expected one URL or file", err)
    code = scrape("a", "b")
    assert.equals(2, code)
    code, _, err = scrape("--bogus", "x")
    assert.equals(2, code)
    assert.matches("unknown option '%-%-bogus'", err)
    code, _, err = scrape("--timeout", "soon", "x")
    assert.equals(2, code)
    assert.matches("%-%-timeout", err)
  end)
end)

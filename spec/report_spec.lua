-- rollout report: a rollout's record (a journal, or a `rollout simulate --json` capture) as
-- Markdown in the runbook's deployment-log format, JSON for pipelines, and one
-- self-contained HTML page with inline SVG charts that headless Chromium renders without a
-- network and without console errors. The report of a journal written during a real-clock
-- rollout is in spec/report_realclock_spec.lua, which runs alone.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local report = require("rollout.report")
local obs = require("spec.support.observability")

local PB = "playbooks/canary.lua"
local TS0 = 1762855200 -- 2025-11-11T10:00:00Z

local function cli(...)
  return assert(proc.run({ argv = { rollout.exe, "report", ... }, timeout = 60 }))
end

local function lines_of(text)
  local out = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

local function count(s, pattern)
  local n = 0
  for _ in s:gmatch(pattern) do n = n + 1 end
  return n
end

-- Rewrite a capture's events (e.g. add commit_time to rollout_started).
local function rewrite(src, dst, fn)
  local out = {}
  for line in assert(io.open(src)):lines() do
    local v = json.decode(line)
    if v and v.event then fn(v) end
    out[#out + 1] = json.encode(v, { sort = true })
  end
  assert(fs.write_atomic(dst, table.concat(out, "\n") .. "\n"))
  return dst
end

describe("report", function()
  local dir, spike, healthy, gate_fail, outage
  setup(function()
    dir = assert(fs.mkdtemp("report-spec"))
    obs.capture(PB, obs.SCENARIOS .. "/error-spike.lua", dir .. "/spike-sim.jsonl")
    spike = obs.journalize(dir .. "/spike-sim.jsonl", dir .. "/spike.jsonl", TS0)
    obs.capture(PB, obs.SCENARIOS .. "/healthy.lua", dir .. "/healthy-sim.jsonl")
    healthy = rewrite(dir .. "/healthy-sim.jsonl", dir .. "/healthy.jsonl", function(ev)
      ev.ts = TS0 + ev.t
      if ev.event == "rollout_started" then ev.commit_time = "2025-11-11T04:00:00Z" end
    end)
    gate_fail = obs.capture(PB, obs.SCENARIOS .. "/stage-gate-error.lua", dir .. "/gate.jsonl")
    outage = obs.capture(PB, obs.SCENARIOS .. "/source-outage.lua", dir .. "/outage.jsonl")
  end)
  teardown(function() fs.rmtree(dir) end)

  describe("Markdown", function()
    it("writes the runbook's deployment-log entry for a rollback, with the numbers and why", function()
      local md = report.markdown(report.analyze(assert(report.load(spike))))
      local L = lines_of(md)
      assert.equals("", L[1])
      assert.equals("## Deployment: dwcp-v3-canary-20251111-100000", L[2])
      assert.equals("- **Date:** Tue Nov 11 10:00:00 UTC 2025", L[4])
      assert.equals("- **Version:** v3.0.0 (from v2.9.0)", L[5])
      assert.equals("- **Type:** Canary", L[6])
      assert.equals("- **Duration:** 15 minutes", L[7])
      assert.equals("- **Success:** ❌ No (rolled back)", L[8])
      assert.matches("^%- %*%*Rollbacks:%*%* 1 %(trigger:error_rate at 14m40s in Ramp%-Up; traffic back on v2%.9%.0 in 0%.0s%)$", L[9])
      assert.matches("^%- %*%*Issues:%*%* trigger error_rate fired at 14m40s %(error_rate > 5%%%)$", L[10])
      assert.equals("### Metrics", L[12])
      assert.matches("^%- %*%*Error Rate:%*%* 7%.%d%d%% %(canary, evaluation at 14m40s; baseline 0%.%d%d%%%)$", L[14])
      assert.matches("^%- %*%*Latency P99:%*%* %d+ms %(canary", L[15])
      assert.equals("- **Deployment Frequency:** n/a for a single rollout (`rollout report --dora DIR`)", L[16])
      assert.equals("- **Lead Time:** not recorded (set commit_time in the playbook)", L[17])
      assert.equals("### Notes", L[19])
      assert.matches("^Rolled back at 14m40s during Ramp%-Up %(canary at 25%%%): trigger error_rate fired: "
        .. "error_rate > 5%% held for 2m00s %(value 7%.%d%d%%%)%.", L[21])
      assert.matches("| Initial | 5%% | pass | error_rate 0%.%d%d%% ≤ 1%.00%%", md)
      assert.matches("| Ramp%-Up | 25%% | not reached |", md)
    end)

    it("says Yes, and the lead time from the recorded commit time, for a promoted rollout", function()
      local m = report.analyze(assert(report.load(healthy)))
      local md = report.markdown(m)
      assert.matches("\n%- %*%*Success:%*%* ✅ Yes\n", md)
      assert.matches("\n%- %*%*Rollbacks:%*%* None\n", md)
      assert.matches("\n%- %*%*Issues:%*%* None\n", md)
      assert.matches("\n%- %*%*Duration:%*%* 55 minutes\n", md)
      -- commit 04:00, promoted 10:55
      assert.matches("\n%- %*%*Lead Time:%*%* 6%.9 hours %(commit to promoted%)\n", md)
      assert.matches("\n%- %*%*Error Rate:%*%* 0%.%d%d%% %(canary, gate Full at 55m00s", md)
      assert.matches("Promoted at 55m00s: 5 of 5 stages passed their gates; v3%.0%.0 now takes 100%% of traffic%.", md)
    end)

    it("explains a failed gate with the value against its threshold, and an inconclusive pause", function()
      local m = report.analyze(assert(report.load(gate_fail)))
      assert.equals("rolled_back", m.outcome.outcome)
      assert.matches("^Rolled back at 5m00s during Initial %(canary at 5%%%): the Initial gate failed on error_rate: "
        .. "canary error_rate 1%.%d%d%% > 1%.00%% %(baseline 0%.%d%d%%%) over 5m00s%.", m.why)
      local o = report.analyze(assert(report.load(outage)))
      assert.matches("^Paused at 20m40s during Half %(canary at 50%%%): the analysis was inconclusive %(source_errors%); "
        .. "5 failed evaluations%. Traffic stays where it was", o.why)
      assert.matches("%- %*%*Date:%*%* n/a %(simulation%)", report.markdown(o))
    end)
  end)

  describe("JSON", function()
    it("carries stages, gates with each check, triggers, rollbacks and the why", function()
      local r = cli(spike, "--json", "-")
      assert.equals(0, r.code, r.stderr)
      local doc = assert(json.decode(r.stdout))
      assert.equals("rollout-report/1", doc.format)
      assert.equals("dwcp-v3-canary-20251111-100000", doc.deployment_id)
      assert.equals("rolled_back", doc.outcome)
      assert.equals("trigger:error_rate", doc.reason)
      assert.equals("2025-11-11T10:00:00Z", doc.started_at)
      assert.equals(880, doc.duration_seconds)
      assert.equals(2, #doc.stages)
      assert.equals("pass", doc.stages[1].result)
      assert.equals(json.null, doc.stages[2].result)
      assert.equals(1, #doc.gates)
      local er = doc.gates[1].checks[1]
      assert.equals("error_rate", er.signal)
      assert.equals(0.01, er.threshold)
      assert.equals("pass", er.status)
      assert.equals(1, #doc.rollbacks)
      assert.equals("trigger:error_rate", doc.rollbacks[1].reason)
      assert.equals(0, doc.rollbacks[1].restore_seconds)
      local kinds = {}
      for _, t in ipairs(doc.triggers) do kinds[#kinds + 1] = t.event end
      assert.same({ "trigger_pending", "trigger_fired" }, kinds)
      assert.gt(doc.headline.canary.error_rate, 0.05)
      assert.equals(doc.why, report.analyze(assert(report.load(spike))).why)
    end)
  end)

  describe("HTML", function()
    local html
    setup(function() html = report.html(report.analyze(assert(report.load(spike)))) end)

    it("is one self-contained page: no script, no external resource", function()
      assert.matches("^<!DOCTYPE html>", html)
      assert.is_nil(html:find("<script", 1, true))
      assert.is_nil(html:find("<link", 1, true))
      assert.is_nil(html:find("<img", 1, true))
      assert.is_nil(html:find("@import", 1, true))
      assert.is_nil(html:find("url(", 1, true))
      assert.is_nil(html:find(" src=", 1, true))
      local stripped = html:gsub('xmlns="http://www%.w3%.org/2000/svg"', "")
      assert.is_nil(stripped:find("https?://"), "a URL other than the SVG namespace")
    end)

    it("charts canary vs baseline error rate and P99 with stages, weights, gates, triggers and decisions", function()
      assert.equals(2, count(html, "<svg "))
      assert.truthy(html:find('id="chart-error-rate"', 1, true))
      assert.truthy(html:find('id="chart-p99"', 1, true))
      assert.equals(2, count(html, 'class="series%-baseline" points="'))
      assert.equals(2, count(html, 'class="series%-canary" points="'))
      assert.equals(4, count(html, 'class="stage%-boundary"'), "2 stages x 2 charts")
      assert.equals(2, count(html, 'class="weight" d="M'))
      assert.equals(2, count(html, 'class="marker gate gate%-pass"'))
      assert.equals(2, count(html, 'class="marker trigger trigger%-pending"'))
      assert.equals(2, count(html, 'class="marker trigger trigger%-fired"'))
      assert.equals(2, count(html, 'class="decision decision%-rollback_started"'))
      assert.equals(2, count(html, 'class="decision decision%-outcome"'))
      assert.equals(2, count(html, 'class="threshold"'), "the Initial gate's error_rate and p99 thresholds")
      -- a series point per evaluation
      local pts = html:match('class="series%-canary" points="([^"]+)"')
      assert.equals(88, count(pts, "[%d%.]+,[%d%.]+"))
      -- the rollback's reason is in the tooltip and the why
      assert.matches('<p class="why" id="why">Rolled back at 14m40s during Ramp%-Up', html)
    end)

    it("has a gate table with each value against its threshold", function()
      local tbl = html:match('<table class="gates">(.-)</table>')
      assert.truthy(tbl)
      assert.matches('<td>error_rate</td><td class="num">0%.%d%d%%</td><td class="num">≤ 1%.00%%</td>'
        .. '<td class="num">0%.%d%d%%</td><td class="status pass">pass</td>', tbl)
      assert.matches("<td>health</td><td class=\"num\">100%.00%%</td><td class=\"num\">≥ 99%.00%%</td>", tbl)
      assert.matches("<td>cpu</td><td colspan=\"3\">not measured by any source</td>", tbl)
      assert.matches('class="num">5872 / 1000<br>', tbl)
    end)

    it("escapes what it shows", function()
      local run = assert(report.parse(table.concat({
        json.encode({ event = "rollout_started", t = 0, service = "<svc>&", baseline = "a\"b", canary = "<c>", stages = 1 }),
        json.encode({ event = "outcome", t = 1, outcome = "failed", reason = "error:<x>", at = 1 }),
      }, "\n") .. "\n", "x"))
      local page = report.html(report.analyze(run))
      assert.is_nil(page:find("<svc>", 1, true))
      assert.is_nil(page:find("<x>", 1, true))
      assert.truthy(page:find("&lt;svc&gt;&amp;", 1, true))
    end)
  end)

  describe("in headless Chromium", function()
    local CHROME_FLAGS = { "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0", "--window-size=1200,2000" }

    -- Returns the PNG path and chromium's stderr.
    local function screenshot(page, name)
      local profile = assert(fs.mkdtemp("report-chromium"))
      local png = dir .. "/" .. name .. ".png"
      local argv = { "chromium" }
      for _, f in ipairs(CHROME_FLAGS) do argv[#argv + 1] = f end
      argv[#argv + 1] = "--user-data-dir=" .. profile
      argv[#argv + 1] = "--screenshot=" .. png
      argv[#argv + 1] = "file://" .. page
      local r = assert(proc.run({ argv = argv, timeout = 90 }))
      fs.rmtree(profile)
      assert.equals(0, r.code, "chromium failed:\n" .. r.stderr:sub(-2000))
      return png, r.stderr
    end

    -- width, height, share of non-white pixels, via Python's zlib (PNG: 8-bit RGB/RGBA).
    local PNG_STATS = [[
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, w, h, ctype = 8, b'', 0, 0, 0
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
        assert depth == 8, depth
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
bpp = {2: 3, 6: 4}[ctype]
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
nonwhite = 0
i = 0
for _ in range(h):
    f = raw[i]; line = bytearray(raw[i + 1:i + 1 + stride]); i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 255
    for x in range(0, stride, bpp):
        if line[x] < 245 or line[x + 1] < 245 or line[x + 2] < 245: nonwhite += 1
    prev = line
print(w, h, nonwhite / float(w * h))
]]

    local function png_stats(png)
      local r = assert(proc.run({ argv = { "/usr/bin/python3", "-c", PNG_STATS, png }, timeout = 60 }))
      assert.equals(0, r.code, r.stderr)
      local w, h, share = r.stdout:match("^(%d+) (%d+) ([%d%.e%-]+)")
      return tonumber(w), tonumber(h), tonumber(share)
    end

    local function console_lines(stderr)
      local out = {}
      for l in stderr:gmatch("[^\n]+") do
        if l:find(":CONSOLE", 1, true) or l:find("Uncaught", 1, true) then out[#out + 1] = l end
      end
      return out
    end

    it("renders the report to a non-empty screenshot with no console errors", function()
      local page = dir .. "/spike.html"
      local r = cli(spike, "--html", page)
      assert.equals(0, r.code, r.stderr)
      assert.matches("report: " .. page:gsub("%p", "%%%0"), r.stderr)
      local png, stderr = screenshot(page, "spike")
      assert.gt(fs.stat(png).size, 10000)
      local w, h, share = png_stats(png)
      assert.equals(1200, w)
      assert.equals(2000, h)
      assert.gt(share, 0.02, "the screenshot is (almost) blank")
      assert.same({}, console_lines(stderr))
    end, { timeout = 150 })

    it("would see a console error or a blank page (the check can fail)", function()
      local bad = dir .. "/bad.html"
      assert(fs.write_atomic(bad, "<!DOCTYPE html><html><body><script>nope()</script></body></html>"))
      local png, stderr = screenshot(bad, "bad")
      local lines = console_lines(stderr)
      assert.equals(1, #lines)
      assert.matches("Uncaught ReferenceError: nope is not defined", lines[1])
      local _, _, share = png_stats(png)
      assert.lt(share, 0.001)
    end, { timeout = 150 })
  end)

  describe("command", function()
    it("prints Markdown without options, appends with --append, and refuses what is not a journal", function()
      local r = cli(spike)
      assert.equals(0, r.code, r.stderr)
      assert.matches("^\n## Deployment: dwcp%-v3%-canary%-20251111%-100000\n", r.stdout)
      local log = dir .. "/deployment-log.md"
      assert(fs.write_atomic(log, "# Deployment log\n"))
      assert.equals(0, cli(spike, "--markdown", log, "--append").code)
      assert.equals(0, cli(healthy, "--markdown", log, "--append").code)
      local text = fs.read(log)
      assert.matches("^# Deployment log\n\n## Deployment: ", text)
      assert.equals(2, count(text, "\n## Deployment: "))
      local bad = dir .. "/not-a-journal.txt"
      assert(fs.write_atomic(bad, "hello\n"))
      r = cli(bad)
      assert.equals(2, r.code)
      assert.matches("not%-a%-journal%.txt:1: not a journal line", r.stderr)
      r = cli(dir .. "/missing.jsonl")
      assert.equals(2, r.code)
      assert.matches("No such file", r.stderr)
      assert.equals(2, cli().code)
      assert.equals(2, cli(spike, "--bogus").code)
    end)
  end)
end)

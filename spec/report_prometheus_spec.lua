-- Reports of a Prometheus-sourced run: against real HAProxy, sample services, load and a real
-- Prometheus (demo/stack.lua), playbooks/demo.lua reads its metrics through PromQL,
-- whose increase() gives fractional request counts (53.75); `rollout report` makes the HTML,
-- Markdown and JSON reports of that journal. And `make demo` (demo/run.lua) exits non-zero
-- when a part of it fails, here the report.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

describe("reports of a run whose metrics come from Prometheus", function()
  local s, dir
  after_each(function()
    if s then s:stop() end
    s = nil
    if dir then fs.rmtree(dir) end
    dir = nil
  end)

  it("are made in every format, with the fractional sample counts PromQL gives", function()
    s = assert(demo_stack.start({ rps = 200, prometheus = true }))
    s:on_weight(25, function() assert(s.canary:fault({ error_rate = 0.2 })) end)
    local res = assert(s:run({ prometheus = true, timeout = 120 }))
    assert.equals(1, res.code, (res.output or ""):sub(-2000))
    assert.equals("rolled_back", res.outcome)
    local fractional = 0
    for _, ev in ipairs(res.events) do
      if ev.event == "evaluation" and ev.canary and ev.canary.requests and ev.canary.requests ~= math.floor(ev.canary.requests) then
        fractional = fractional + 1
      end
    end
    assert.gt(fractional, 0, "Prometheus' increase() gives fractional request counts")
    dir = assert(fs.mkdtemp("report-prom"))
    local r = assert(proc.run({ argv = { rollout.exe, "report", res.journal, "--html", dir .. "/r.html",
      "--markdown", dir .. "/r.md", "--json", dir .. "/r.json" }, timeout = 60 }))
    assert.equals(0, r.code, r.stderr)
    local md, html = assert(fs.read(dir .. "/r.md")), assert(fs.read(dir .. "/r.html"))
    -- the gate rows show the estimate to one decimal
    assert.matches("| Initial | 5%% | pass |", md)
    assert.matches('class="num">[%d%.]+ / %d+', html)
    local j = assert(json.decode(assert(fs.read(dir .. "/r.json"))))
    assert.equals("rolled_back", j.outcome or (j.summary and j.summary.outcome))
    -- Markdown on stdout too
    r = assert(proc.run({ argv = { rollout.exe, "report", res.journal }, timeout = 60 }))
    assert.equals(0, r.code, r.stderr)
    assert.matches("Initial", r.stdout)
    -- a gate's own count is whole or not as the window falls: the same journal with the
    -- gate's count the issue saw (53.75) renders it to one decimal, in every format
    local lines = {}
    for line in assert(fs.read(res.journal)):gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev.event == "gate" and ev.samples then ev.samples = 53.75; line = json.encode(ev) end
      lines[#lines + 1] = line
    end
    assert(fs.write_atomic(dir .. "/frac.jsonl", table.concat(lines, "\n") .. "\n"))
    r = assert(proc.run({ argv = { rollout.exe, "report", dir .. "/frac.jsonl", "--html", dir .. "/f.html",
      "--markdown", dir .. "/f.md", "--json", dir .. "/f.json" }, timeout = 60 }))
    assert.equals(0, r.code, r.stderr)
    assert.matches("| 53%.8/%d+ |", assert(fs.read(dir .. "/f.md")))
    assert.matches('class="num">53%.8 / %d+', assert(fs.read(dir .. "/f.html")))
  end, { timeout = 240 })

  it("make demo exits 1 when a part of it (the report) fails", function()
    dir = assert(fs.mkdtemp("demo-out"))
    assert(fs.mkdir(dir .. "/report.html")) -- the HTML report cannot be written there
    local r = assert(proc.run({ argv = { rollout.exe, demo_stack.ROOT .. "/demo/run.lua", "--out", dir },
      timeout = 180, env = { ROLLOUT_PROGRESS = "0" } }))
    assert.equals(1, r.code, r.stdout:sub(-1500) .. r.stderr:sub(-500))
    assert.matches("rolled_back", r.stdout, "the rollout itself went as designed")
    assert.matches("NOT as designed: the report could not be made", r.stdout)
  end, { timeout = 240 })
end)

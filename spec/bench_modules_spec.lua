-- spec/bench_modules_spec.lua: the benchmark-only C modules (bench/c/) work in
-- ./rollout-bench and are absent from the product binary. `make test` builds
-- ./rollout-bench for this spec; `make bench` uses it for every benchmark.
local proc = require("rollout.proc")
local fs = require("rollout.fs")

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."
local BENCH_EXE = ROOT .. "/rollout-bench"

-- Run a Lua chunk in ./rollout-bench (or another binary); its stdout, decoded as JSON.
local function run_in(exe, code)
  local dir = assert(fs.mkdtemp("bench-modules"))
  local path = dir .. "/probe.lua"
  assert(fs.write_atomic(path, code))
  local r = assert(proc.run({ argv = { exe, path }, timeout = 60 }))
  fs.rmtree(dir)
  assert.equals(0, r.code, "exit code; stderr: " .. r.stderr)
  return require("rollout.json").decode(r.stdout)
end

describe("benchmark-only modules", function()
  it("./rollout-bench is built (make test builds it)", function()
    assert.truthy(fs.stat(BENCH_EXE), BENCH_EXE .. " is missing: run make rollout-bench")
  end)

  it("are not in the product binary", function()
    local r = run_in(require("rollout").exe, [[
      local a = pcall(require, "rollout.bench.promtext")
      local b = pcall(require, "rollout.bench.histogram")
      local pt, h = require("rollout.promtext"), require("rollout.histogram")
      print(require("rollout.json").encode({ a = a, b = b,
        old = pt.bench_parse ~= nil or h.bench_record ~= nil }))
    ]])
    assert.same({ a = false, b = false, old = false }, r)
  end)

  it("rollout.bench.promtext walks the text without building tables and counts like parse", function()
    local r = run_in(BENCH_EXE, [[
      local walk_mod = require("rollout.bench.promtext")
      local text = assert(require("rollout.fs").read("]] .. ROOT .. [[/spec/fixtures/promtext/etcd-3.4.prom"))
      local p = assert(require("rollout.promtext").parse(text))
      local w = assert(walk_mod.walk(text, 3))
      local v, err = walk_mod.walk("x{")
      print(require("rollout.json").encode({ cpu = w.cpu > 0 and w.wall > 0,
        same = p.nsamples == w.samples and p.nfamilies == w.families and w.samples > 0,
        bad = v == nil, err = err }))
    ]])
    assert.same({ cpu = true, same = true, bad = true, err = "line 1: unterminated label set" }, r)
  end)

  it("rollout.bench.histogram reports its timing and exact quantile errors", function()
    local r = run_in(BENCH_EXE, [[
      local h = require("rollout.histogram")
      local r = require("rollout.bench.histogram").record(200000, 5)
      local ok = {}
      for _, k in ipairs { "record", "record_many", "log2_anchor" } do
        ok[#ok + 1] = r[k].mean > 0 and r[k].median > 0
      end
      local within = true
      for _, q in ipairs(r.quantiles) do
        within = within and math.abs(q.error) <= h.MAX_RELATIVE_ERROR
          and math.abs(q.exact * (1 + q.error) - q.estimate) <= 1e-12
      end
      print(require("rollout.json").encode({ timings = ok, bytes = r.bytes == h.BYTES,
        nq = #r.quantiles, within = within }))
    ]])
    assert.same({ timings = { true, true, true }, bytes = true, nq = 4, within = true }, r)
  end)
end)

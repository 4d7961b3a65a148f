-- `rollout test -j N`: spec files run side by side, each in its own process with its own
-- TMPDIR, XDG_RUNTIME_DIR and port range; each file's output stays together; the last line
-- sums every file's counts; a failure anywhere fails the run.
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")

-- A spec file that reports where it runs, sleeps (so that files overlap), and then passes,
-- fails or skips.
local function spec_file(dir, name, body)
  assert(fs.write_atomic(dir .. "/" .. name .. "_spec.lua", ([[
local servers = require("spec.support.servers")
describe("%s", function()
  it("reports its place", function()
    local lo, hi = servers.port_range()
    local port = servers.free_port()
    print(("PLACE %s tmp=%%s run=%%s ports=%%d-%%d port=%%d"):format(os.getenv("TMPDIR"),
      os.getenv("XDG_RUNTIME_DIR"), lo, hi, port))
    assert(port >= lo and port <= hi)
    rollout.sleep(1)
  end)
  %s
end)
]]):format(name, name, body)))
end

describe("rollout test -j", function()
  it("runs files side by side, apart, and sums their counts", function()
    local dir = assert(fs.mkdtemp("runner"))
    finally(function() fs.rmtree(dir) end)
    spec_file(dir, "a", [[it("passes", function() assert.equals(1, 1) end)]])
    spec_file(dir, "b", [[it("fails", function() assert.equals(1, 2) end)]])
    spec_file(dir, "c", [[pending("later")]])
    spec_file(dir, "d", [[it("passes too", function() end)]])
    local t0 = rollout.now()
    local r = assert(proc.run({ argv = { rollout.exe, "test", "-j", "4", "--timings", dir }, timeout = 120 }))
    local took = rollout.now() - t0
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]*") do lines[#lines + 1] = l end
    assert.equals("tests: 6 passed, 1 failed, 1 skipped", lines[#lines - 1] ~= "" and lines[#lines - 1] or lines[#lines - 2],
      r.stdout)
    assert.matches("\n4 files, [%d.]+ s, [%d.]+ s CPU\n", r.stdout)
    assert.lt(took, 3.5, "four files sleeping 1 s each ran side by side") -- 4+ s one after another
    -- each file's lines together: its name, then its tests, before the next file's name
    local places, owner, seen = {}, nil, {}
    for _, l in ipairs(lines) do
      if l:match("^Timings ") then break end -- the --timings report names the files again
      local f = l:match("/(%a)_spec%.lua$")
      if f then
        assert.is_nil(seen[f], "file " .. f .. " printed in one piece")
        seen[f], owner = true, f
      end
      local tmp, run, lo, hi = l:match("^PLACE %a tmp=(%S+) run=(%S+) ports=(%d+)%-(%d+) port=%d+$")
      if tmp then places[#places + 1] = { file = owner, tmp = tmp, run = run, lo = tonumber(lo), hi = tonumber(hi) } end
    end
    assert.equals(4, #places, r.stdout)
    for i, a in ipairs(places) do
      for j = i + 1, #places do
        local b = places[j]
        assert.is_true(a.tmp ~= b.tmp and a.run ~= b.run, "temp dirs apart")
        if a.lo == b.lo then
          assert.equals(a.hi, b.hi) -- the same slot, one file after the other
        else
          assert.is_true(a.hi < b.lo or b.hi < a.lo, "port ranges apart")
        end
      end
    end
    -- --timings: every file's wall and CPU seconds, the slowest tests, and the sums
    local report = r.stdout:match("\nTimings [^\n]*\n(.-)\nSums: ([^\n]*)")
    assert.truthy(report, r.stdout)
    for _, f in ipairs({ "a", "b", "c", "d" }) do
      local wall, cpu = r.stdout:match("\n +([%d.]+) +([%d.]+)  [^\n]*/" .. f .. "_spec%.lua %[[%d]+%-[%d]+ s%]\n")
      assert.truthy(wall, "file " .. f .. " in the timings:\n" .. r.stdout)
      if f ~= "c" then assert.ge(tonumber(wall), 1.0, "file " .. f .. " slept 1 s") end
      assert.lt(tonumber(cpu), tonumber(wall) + 1, "file " .. f .. " mostly slept")
    end
    assert.matches("Slowest tests %(wall s%):\n +1%.%d  [^\n]*_spec%.lua: %a > reports its place\n", r.stdout)
    assert.matches("\nSums: 4 files, [%d.]+ s of file wall time %(0%.0 s of it serial%), [%d.]+ s CPU", r.stdout)
    -- the failure is named with its file in the summary
    assert.matches("Failures:\n  [^\n]*b_spec%.lua: b > fails", r.stdout)
  end)

  it("runs the files marked serial after the others, two at a time (ROLLOUT_TEST_SERIAL_JOBS=1: alone)", function()
    local dir = assert(fs.mkdtemp("runner"))
    finally(function() fs.rmtree(dir) end)
    local function file(name, serial)
      assert(fs.write_atomic(dir .. "/" .. name .. "_spec.lua", (serial and "-- rollout-test: serial (a test)\n" or "")
        .. ([[
describe("%s", function()
  it("sleeps", function()
    local t0 = rollout.time()
    rollout.sleep(0.5)
    print(("SPAN %s %%.3f %%.3f"):format(t0, rollout.time()))
  end)
end)
]]):format(name, name)))
    end
    file("p1"); file("p2"); file("s1", true); file("s2", true); file("s3", true)
    local function spans(env)
      local r = assert(proc.run({ argv = { rollout.exe, "test", "-j", "4", dir }, timeout = 60, env = env }))
      assert.equals(0, r.code, r.stdout .. r.stderr)
      local out = {}
      for name, a, b in r.stdout:gmatch("SPAN (%w+) ([%d.]+) ([%d.]+)") do out[name] = { tonumber(a), tonumber(b) } end
      return out, r.stdout
    end
    local function overlap(x, y) return x[1] < y[2] and y[1] < x[2] end
    for _, lanes in ipairs({ 2, 1 }) do
      local sp, out = spans({ ROLLOUT_TEST_SERIAL_JOBS = tostring(lanes) })
      for _, s in ipairs({ "s1", "s2", "s3" }) do
        assert.truthy(sp[s], s .. " ran:\n" .. out)
        for _, p in ipairs({ "p1", "p2" }) do
          assert.truthy(sp[s][1] >= sp[p][2], s .. " started after " .. p .. " ended:\n" .. out)
        end
      end
      assert.truthy(overlap(sp.p1, sp.p2), "the parallel files ran side by side")
      local pairs_overlapping = 0
      for _, x in ipairs({ { "s1", "s2" }, { "s1", "s3" }, { "s2", "s3" } }) do
        if overlap(sp[x[1]], sp[x[2]]) then pairs_overlapping = pairs_overlapping + 1 end
      end
      -- two lanes: two of the three overlap, the third follows one of them; one lane: none
      if lanes == 2 then
        assert.truthy(pairs_overlapping >= 1, "two serial files side by side:\n" .. out)
        assert.is_false(overlap(sp.s1, sp.s2) and overlap(sp.s1, sp.s3) and overlap(sp.s2, sp.s3),
          "never three serial files at once:\n" .. out)
      else
        assert.equals(0, pairs_overlapping, "each serial file alone:\n" .. out)
      end
    end
  end)

  it("rejects a bad -j", function()
    local r = assert(proc.run({ argv = { rollout.exe, "test", "-j", "x", "spec/units_spec.lua" }, timeout = 30 }))
    assert.equals(2, r.code)
    assert.matches("%-j wants a number", r.stderr)
  end)
end)

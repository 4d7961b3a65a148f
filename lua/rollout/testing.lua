-- rollout.testing: the in-host spec runner (`rollout test [PATH...]`).
-- Specs are busted-style files (spec/*_spec.lua): describe / it / pending / before_each /
-- after_each / setup / teardown / finally, and an `assert` with busted's common checks.
-- Each `it` runs as its own task under a timeout, so specs may sleep, do HTTP and run
-- processes; a failure or a hang fails that test only. The last line printed is
-- `tests: N passed, N failed[, N skipped]`.
-- `-j N` runs the spec files N at a time, each in its own `rollout test FILE` process with
-- its own TMPDIR, XDG_RUNTIME_DIR (control sockets) and port range (ROLLOUT_TEST_PORTS,
-- which spec/support's port pickers honour); each file's output is printed whole when it
-- ends, and the counts are summed into the same last line. `--timings` adds a report of
-- where the time went: each file's wall and CPU seconds (the file's process and the
-- children it waited for, from /proc/self/stat), the slowest files and tests, and sums.
-- Error policy: usage errors print to stderr and return 2; a failing spec is counted.
local rollout = require("rollout")
local fs = require("rollout.fs")
local pretty = require("rollout.pretty")
local proc = require("rollout.proc")

local M = {}

-- ---- assertions -------------------------------------------------------------------

local function fmt(v) return pretty.format(v, { depth = 5, width = 40 }) end

local function deep_equal(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    return type(a) == "number" and type(b) == "number" and a ~= a and b ~= b -- NaN == NaN
  end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do if not deep_equal(v, b[k], seen) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
M.deep_equal = deep_equal

local function fail(msg, level) error(msg, (level or 1) + 2) end

local A = {}
function A.equals(expected, actual, msg)
  if expected ~= actual then
    fail((msg and msg .. ": " or "") .. "expected " .. fmt(expected) .. ", got " .. fmt(actual))
  end
end
function A.same(expected, actual, msg)
  if not deep_equal(expected, actual) then
    fail((msg and msg .. ": " or "") .. "expected (deep)\n" .. fmt(expected) .. "\ngot\n" .. fmt(actual))
  end
end
function A.is_true(v, msg) if v ~= true then fail((msg or "expected true") .. ", got " .. fmt(v)) end end
function A.is_false(v, msg) if v ~= false then fail((msg or "expected false") .. ", got " .. fmt(v)) end end
function A.is_nil(v, msg) if v ~= nil then fail((msg or "expected nil") .. ", got " .. fmt(v)) end end
function A.is_not_nil(v, msg) if v == nil then fail(msg or "expected a value, got nil") end end
function A.truthy(v, msg) if not v then fail((msg or "expected truthy") .. ", got " .. fmt(v)) end end
function A.falsy(v, msg) if v then fail((msg or "expected falsy") .. ", got " .. fmt(v)) end end
function A.near(expected, actual, tol, msg)
  if type(actual) ~= "number" or math.abs(expected - actual) > tol then
    fail((msg and msg .. ": " or "") .. "expected " .. fmt(expected) .. " ± " .. tostring(tol) .. ", got " .. fmt(actual))
  end
end
function A.matches(pattern, s, msg)
  if type(s) ~= "string" or not s:find(pattern) then
    fail((msg and msg .. ": " or "") .. "expected a string matching " .. fmt(pattern) .. ", got " .. fmt(s))
  end
end
function A.has_error(fn, expected, msg)
  local ok, err = pcall(fn)
  if ok then fail(msg or "expected an error, none was raised") end
  if expected ~= nil then
    local s = type(err) == "string" and err or fmt(err)
    if not s:find(expected, 1, true) then
      fail((msg and msg .. ": " or "") .. "expected an error containing " .. fmt(expected) .. ", got " .. fmt(err))
    end
  end
  return err
end
function A.is_table(v, msg) if type(v) ~= "table" then fail((msg or "expected a table") .. ", got " .. fmt(v)) end end
function A.is_string(v, msg) if type(v) ~= "string" then fail((msg or "expected a string") .. ", got " .. fmt(v)) end end
function A.is_number(v, msg) if type(v) ~= "number" then fail((msg or "expected a number") .. ", got " .. fmt(v)) end end
function A.lt(a, b, msg) if not (a < b) then fail((msg and msg .. ": " or "") .. fmt(a) .. " is not < " .. fmt(b)) end end
function A.le(a, b, msg) if not (a <= b) then fail((msg and msg .. ": " or "") .. fmt(a) .. " is not <= " .. fmt(b)) end end
function A.gt(a, b, msg) if not (a > b) then fail((msg and msg .. ": " or "") .. fmt(a) .. " is not > " .. fmt(b)) end end
function A.ge(a, b, msg) if not (a >= b) then fail((msg and msg .. ": " or "") .. fmt(a) .. " is not >= " .. fmt(b)) end end
A.equal, A.are_equal, A.are_same, A.is_truthy, A.is_falsy = A.equals, A.equals, A.same, A.truthy, A.falsy
A.error = A.has_error
A.error_matches = function(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then fail(msg or "expected an error, none was raised") end
  if type(err) ~= "string" or not err:find(pattern) then
    fail("expected an error matching " .. fmt(pattern) .. ", got " .. fmt(err))
  end
end
-- busted's chained spellings: assert.are.equal, assert.is.truthy, assert.is_not.nil...
A.are, A.is = A, A

local assert_mt = { __call = function(_, v, msg, ...) if not v then fail(msg or "assertion failed!") end return v, msg, ... end }
M.assert = setmetatable(A, assert_mt)

-- ---- collection -------------------------------------------------------------------

local function new_block(name, parent)
  return { name = name, parent = parent, children = {}, before = {}, after = {}, setup = {}, teardown = {} }
end

local function full_name(block, test_name)
  local parts = { test_name }
  while block and block.parent do table.insert(parts, 1, block.name); block = block.parent end
  return table.concat(parts, " > ")
end

local function collect(path, env_base)
  local root = new_block(path, nil)
  local current = root
  local env = setmetatable({}, { __index = env_base })
  env.describe = function(name, fn)
    local b = new_block(name, current)
    current.children[#current.children + 1] = b
    local saved = current
    current = b
    fn()
    current = saved
  end
  env.context = env.describe
  env.it = function(name, fn, opts)
    current.children[#current.children + 1] = { test = true, name = name, fn = fn, block = current, opts = opts or {} }
  end
  env.pending = function(name)
    current.children[#current.children + 1] = { test = true, name = name, block = current, pending = true }
  end
  env.before_each = function(fn) current.before[#current.before + 1] = fn end
  env.after_each = function(fn) current.after[#current.after + 1] = fn end
  env.setup = function(fn) current.setup[#current.setup + 1] = fn end
  env.teardown = function(fn) current.teardown[#current.teardown + 1] = fn end
  env.lazy_setup, env.lazy_teardown = env.setup, env.teardown
  env.strict_setup, env.strict_teardown = env.setup, env.teardown
  env.assert = M.assert
  env.finally = function(fn)
    local ctx = M._current
    if ctx then ctx.finally[#ctx.finally + 1] = fn end
  end
  local chunk, err = loadfile(path, "t", env)
  if not chunk then return nil, err end
  local ok, e = xpcall(chunk, debug.traceback)
  if not ok then return nil, e end
  return root
end

-- ---- running ----------------------------------------------------------------------

local function chain(block, field, reverse)
  local list = {}
  while block do
    local fns = block[field]
    if reverse then
      for i = 1, #fns do list[#list + 1] = fns[i] end
    else
      for i = #fns, 1, -1 do table.insert(list, 1, fns[i]) end
    end
    block = block.parent
  end
  return list
end

local function run_test(t, filter, stats, opts)
  local name = full_name(t.block, t.name)
  if filter and not name:find(filter, 1, true) then return end
  if t.pending then
    stats.skipped = stats.skipped + 1
    print("  skip  " .. name)
    return
  end
  local ctx = { finally = {} }
  local t0 = rollout.now()
  local task = rollout.spawn(function()
    M._current = ctx
    local ok, err = xpcall(function()
      for _, f in ipairs(chain(t.block, "before")) do f() end
      t.fn()
    end, debug.traceback)
    for _, f in ipairs(ctx.finally) do
      local fok, ferr = xpcall(f, debug.traceback)
      if not fok and ok then ok, err = false, ferr end
    end
    for _, f in ipairs(chain(t.block, "after", true)) do
      local aok, aerr = xpcall(f, debug.traceback)
      if not aok and ok then ok, err = false, aerr end
    end
    return ok, err
  end)
  local timeout = t.opts.timeout or opts.timeout
  local r = table.pack(pcall(task.wait, task, timeout))
  local ok, err
  if not r[1] then
    ok, err = false, tostring(r[2])
  elseif r[2] == nil and r[3] == "timeout" and task:state() ~= "done" then
    task:cancel("timeout")
    for _, f in ipairs(ctx.finally) do pcall(f) end
    for _, f in ipairs(chain(t.block, "after", true)) do pcall(f) end
    ok, err = false, "timed out after " .. timeout .. " s"
  else
    ok, err = r[2], r[3]
  end
  local dt = rollout.now() - t0
  stats.tests[#stats.tests + 1] = { name = (stats.file and stats.file .. ": " or "") .. name, wall = dt }
  if ok then
    stats.passed = stats.passed + 1
    print(string.format("  ok    %s (%.3f s)", name, dt))
  else
    stats.failed = stats.failed + 1
    stats.failures[#stats.failures + 1] = { name = name, err = err }
    print(string.format("  FAIL  %s (%.3f s)\n%s", name, dt, M.indent(tostring(err))))
  end
  io.stdout:flush()
end

function M.indent(s)
  return (s:gsub("[^\n]+", function(l) return "        " .. l end))
end

local function has_tests(block, filter)
  for _, c in ipairs(block.children) do
    if c.test then
      if not filter or full_name(c.block, c.name):find(filter, 1, true) then return true end
    elseif has_tests(c, filter) then return true end
  end
  return false
end

local function run_block(block, filter, stats, opts)
  if not has_tests(block, filter) then return end
  for _, f in ipairs(block.setup) do
    local ok, err = xpcall(f, debug.traceback)
    if not ok then
      stats.failed = stats.failed + 1
      stats.failures[#stats.failures + 1] = { name = full_name(block, "setup"), err = err }
      print("  FAIL  " .. full_name(block, "setup") .. "\n" .. M.indent(tostring(err)))
      return
    end
  end
  for _, c in ipairs(block.children) do
    if c.test then run_test(c, filter, stats, opts) else run_block(c, filter, stats, opts) end
  end
  for _, f in ipairs(block.teardown) do
    local ok, err = xpcall(f, debug.traceback)
    if not ok then print("  teardown error in " .. block.name .. ": " .. tostring(err)) end
  end
end

local function find_specs(path, out)
  local st = fs.stat(path)
  if not st then error("no such file or directory: " .. path, 0) end
  if st.type == "dir" then
    for _, name in ipairs(fs.list(path)) do
      local p = path .. "/" .. name
      local s = fs.stat(p)
      if s and s.type == "dir" then find_specs(p, out)
      elseif name:match("_spec%.lua$") then out[#out + 1] = p end
    end
  else
    out[#out + 1] = path
  end
end

-- CPU seconds of this process and of the children it has waited for (user + system), from
-- /proc/self/stat (in USER_HZ = 100 ticks a second on Linux); nil where there is no /proc.
local function cpu_seconds()
  local stat = fs.read("/proc/self/stat")
  local rest = stat and stat:match("%) (.*)$")
  if not rest then return nil end
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  -- after "(comm) ": state is field 3, utime 14 .. cstime 17, so f[12] .. f[15]
  local own = (tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)
  local kids = (tonumber(f[14]) or 0) + (tonumber(f[15]) or 0)
  return (own + kids) / 100
end
M.cpu_seconds = cpu_seconds

-- The range of ports spec files may listen on (spec/support picks from it).
M.PORTS = { 20000, 32000 }

-- How long each file took last time (build/test-times in a source tree, one "SECONDS FILE"
-- a line), so the slowest start first; files it does not know go by size.
local TIMES = "build/test-times"

local function last_times()
  local t = {}
  for line in (fs.read(TIMES) or ""):gmatch("[^\n]+") do
    local secs, file = line:match("^([%d.]+) (.+)$")
    if secs then t[file] = tonumber(secs) end
  end
  return t
end

local function save_times(took)
  if (fs.stat("build") or {}).type ~= "dir" then return end
  local t = last_times()
  for file, secs in pairs(took) do t[file] = secs end
  local lines = {}
  for file, secs in pairs(t) do -- the tree's own spec files that still exist
    if file:sub(1, 1) ~= "/" and fs.stat(file) then lines[#lines + 1] = ("%.1f %s"):format(secs, file) end
  end
  table.sort(lines)
  fs.write_atomic(TIMES, table.concat(lines, "\n") .. "\n")
end

-- Run files in child processes, `jobs` at a time; adds to stats. The slowest files (last
-- time's, else the largest) start first, so the last one to finish started early.
-- A spec file that measures real time on this machine (request rates, latency
-- distributions, reload costs) says so in its first lines with `-- rollout-test: serial`:
-- it runs after the parallel ones, beside at most SERIAL_JOBS - 1 other such files (they
-- wait on clocks and sockets and use little CPU; the parallel batch uses a core or more),
-- so its bounds measure the code, not the neighbours. Everything else runs `jobs` at a
-- time. ROLLOUT_TEST_SERIAL_JOBS=1 runs each serial file alone.
M.SERIAL_JOBS = 2
local function is_serial(file)
  local head = (fs.read(file) or ""):sub(1, 2000)
  return head:find("%-%- rollout%-test: serial") ~= nil
end

local function run_parallel(files, jobs, filter, opts, stats)
  local order, serial, times, took = {}, {}, last_times(), {}
  local timings, tests = stats.timings, stats.tests
  for _, f in ipairs(files) do
    local st = fs.stat(f)
    -- a known time ranks first; a file never timed ranks by size (about 2 KB a second)
    local item = { file = f, weight = times[f] or (st and st.size or 0) / 2000 }
    item.serial = is_serial(f)
    if item.serial then serial[#serial + 1] = item else order[#order + 1] = item end
  end
  local function slowest_first(a, b) if a.weight ~= b.weight then return a.weight > b.weight end return a.file < b.file end
  table.sort(order, slowest_first)
  table.sort(serial, slowest_first)
  local root = assert(fs.mkdtemp("rollouttest")) -- no pattern characters: specs match paths
  assert(fs.chmod(root, tonumber("755", 8))) -- others may reach what specs open to them
  local span = (M.PORTS[2] - M.PORTS[1] + 1) // jobs
  local next_i, done = 1, 0
  local t0 = rollout.now()
  local function worker(slot)
    local lo = M.PORTS[1] + (slot - 1) * span
    while next_i <= #order do
      local item = order[next_i]
      next_i = next_i + 1
      local tmp = root .. "/" .. tostring(next_i - 1)
      assert(fs.mkdir(tmp))
      assert(fs.chmod(tmp, tonumber("1777", 8))) -- a TMPDIR like /tmp
      assert(fs.mkdir(tmp .. "/run"))
      local argv = { rollout.exe, "test", "--timeout", tostring(opts.timeout) }
      if filter then argv[#argv + 1] = "--filter"; argv[#argv + 1] = filter end
      argv[#argv + 1] = item.file
      local started = rollout.now()
      local r, err = proc.run({ argv = argv, timeout = 3600, max_output = "64Mi", env = {
        TMPDIR = tmp, XDG_RUNTIME_DIR = tmp .. "/run",
        ROLLOUT_TEST_PORTS = ("%d-%d"):format(lo, lo + span - 1) } })
      local out = r and r.stdout or ""
      local cpu = tonumber(out:match("\n%d+ files?, [%d.]+ s, ([%d.]+) s CPU\n"))
      out = out:gsub("\nFailures:\n.-\n\n", "\n"):gsub("\n%d+ files?, [%d.]+ s[^\n]*\n", "\n")
      local summary = out:match("tests: %d+ passed, %d+ failed[^\n]*\n?$")
      local body = (summary and out:sub(1, -#summary - 1) or out) .. (r and r.stderr or "")
      io.stdout:write((body:gsub("\n+$", "")), "\n")
      if summary then
        local p, f, k = summary:match("tests: (%d+) passed, (%d+) failed, (%d+) skipped")
        if not p then p, f = summary:match("tests: (%d+) passed, (%d+) failed"); k = 0 end
        stats.passed, stats.failed, stats.skipped = stats.passed + p, stats.failed + f, stats.skipped + k
        for line in body:gmatch("[^\n]+") do
          local name = line:match("^  FAIL  (.-) %([%d.]+ s%)$") or line:match("^  FAIL  (loading .*)$")
            or line:match("^  FAIL  (.*)$")
          if name then stats.failures[#stats.failures + 1] = { name = item.file .. ": " .. name } end
        end
      else
        stats.failed = stats.failed + 1
        local why = r and (r.code and ("exit code " .. r.code) or ("signal " .. tostring(r.signal))) or err
        stats.failures[#stats.failures + 1] = { name = item.file .. ": printed no summary (" .. tostring(why) .. ")" }
        print("  FAIL  " .. item.file .. " printed no summary (" .. tostring(why) .. ")")
      end
      io.stdout:flush()
      fs.rmtree(tmp)
      took[item.file] = rollout.now() - started
      timings[#timings + 1] = { file = item.file, wall = took[item.file], cpu = cpu, serial = item.serial,
        from = started - t0 }
      for name, secs in out:gmatch("\n  ok    ([^\n]-) %(([%d.]+) s%)") do
        tests[#tests + 1] = { name = item.file .. ": " .. name, wall = tonumber(secs) }
      end
      done = done + 1
    end
  end
  local function batch(n)
    local tasks = {}
    for slot = 1, math.min(n, #order - next_i + 1) do tasks[slot] = rollout.spawn(worker, slot) end
    for _, t in ipairs(tasks) do
      local ok, err = pcall(t.wait, t)
      if not ok then
        stats.failed = stats.failed + 1
        stats.failures[#stats.failures + 1] = { name = "runner: " .. tostring(err) }
      end
    end
  end
  batch(jobs)
  stats.parallel_wall = rollout.now() - t0
  for _, item in ipairs(serial) do order[#order + 1] = item end -- then the serial ones
  local serial_jobs = math.tointeger(tonumber(os.getenv("ROLLOUT_TEST_SERIAL_JOBS") or "")) or M.SERIAL_JOBS
  batch(math.max(1, math.min(jobs, serial_jobs)))
  fs.rmtree(root)
  if not filter then save_times(took) end -- a filtered run says little about a file
  return done
end

-- The --timings report: where the wall time and the CPU time went.
local function print_timings(stats, wall, cpu)
  local files, tests = stats.timings, stats.tests
  table.sort(files, function(a, b) return a.wall > b.wall end)
  table.sort(tests, function(a, b) return a.wall > b.wall end)
  local sum_wall, sum_cpu, serial_wall = 0, 0, 0
  print("\nTimings (wall s, CPU s; CPU counts each file's process and the children it waited for):")
  for i, t in ipairs(files) do
    sum_wall, sum_cpu = sum_wall + t.wall, sum_cpu + (t.cpu or 0)
    if t.serial then serial_wall = serial_wall + t.wall end
    if i <= 40 then
      print(("  %7.1f %7s  %s%s%s"):format(t.wall, t.cpu and ("%.1f"):format(t.cpu) or "-", t.file,
        t.serial and " (serial)" or "", t.from and (" [%.0f-%.0f s]"):format(t.from, t.from + t.wall) or ""))
    end
  end
  print("Slowest tests (wall s):")
  for i = 1, math.min(25, #tests) do print(("  %7.1f  %s"):format(tests[i].wall, tests[i].name)) end
  print(("Sums: %d files, %.1f s of file wall time (%.1f s of it serial), %.1f s CPU in the files; "
    .. "this run %.1f s wall%s"):format(#files, sum_wall, serial_wall, sum_cpu, wall,
    stats.parallel_wall and (", parallel batch %.1f s"):format(stats.parallel_wall) or "")
    .. (cpu and (", %.1f s CPU in all"):format(cpu) or ""))
end

--- rollout test [-j N] [--filter TEXT] [--timeout SECONDS] [--timings] [PATH...]
function M.main(args)
  local paths, filter, opts, jobs, timings = {}, nil, { timeout = 120 }, 1, false
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--filter" then filter = args[i + 1]; i = i + 1
    elseif a == "-j" or a == "--jobs" or a:match("^%-j%d+$") or a:match("^%-%-jobs=") then
      local n = a:match("^%-j(%d+)$") or a:match("^%-%-jobs=(.*)$")
      if not n then n = args[i + 1]; i = i + 1 end
      jobs = math.tointeger(tonumber(n))
      if not jobs or jobs < 1 then
        io.stderr:write("rollout test: -j wants a number of files at once, got " .. tostring(n) .. "\n")
        return 2
      end
    elseif a == "--timeout" then opts.timeout = tonumber(args[i + 1]); i = i + 1
    elseif a == "--timings" then timings = true
    elseif a:sub(1, 2) == "--" then
      io.stderr:write("rollout test: unknown option " .. a .. "\n")
      return 2
    else paths[#paths + 1] = a end
    i = i + 1
  end
  if #paths == 0 then paths = { "spec" } end
  local files = {}
  for _, p in ipairs(paths) do
    local ok, err = pcall(find_specs, p, files)
    if not ok then io.stderr:write("rollout test: " .. tostring(err) .. "\n"); return 2 end
  end
  local stats = { passed = 0, failed = 0, skipped = 0, failures = {}, timings = {}, tests = {} }
  local nfiles = #files
  local env_base = _G
  local t0 = rollout.now()
  if jobs > 1 and #files > 1 then
    run_parallel(files, jobs, filter, opts, stats)
    files = {} -- done
  end
  for _, file in ipairs(files) do
    print(file)
    stats.file = file
    local f0, c0 = rollout.now(), cpu_seconds()
    local root, err = collect(file, env_base)
    if not root then
      stats.failed = stats.failed + 1
      stats.failures[#stats.failures + 1] = { name = file, err = err }
      print("  FAIL  loading " .. file .. "\n" .. M.indent(tostring(err)))
    else
      run_block(root, filter, stats, opts)
    end
    local c1 = cpu_seconds()
    stats.timings[#stats.timings + 1] = { file = file, wall = rollout.now() - f0, cpu = c1 and c0 and c1 - c0 }
    io.stdout:flush()
  end
  if #stats.failures > 0 then
    print("\nFailures:")
    for _, f in ipairs(stats.failures) do print("  " .. f.name) end
  end
  local wall, cpu = rollout.now() - t0, cpu_seconds()
  if timings then print_timings(stats, wall, cpu) end
  print(string.format("\n%d files, %.1f s, %.1f s CPU", nfiles, wall, cpu or 0))
  local line = string.format("tests: %d passed, %d failed", stats.passed, stats.failed)
  if stats.skipped > 0 then line = line .. string.format(", %d skipped", stats.skipped) end
  print(line)
  if stats.failed > 0 or stats.passed == 0 then return 1 end
  return 0
end

return M

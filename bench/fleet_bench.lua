-- bench/fleet_bench.lua: one agent driving N concurrent simulated rollouts.
--
--   ./rollout bench/fleet_bench.lua [N ...] [--warmup S] [--measure S] [--etcd-sizes 100,1000] [--no-etcd]
--
-- Each N runs in its own `rollout` process (fresh heap and RSS): N rollouts of the runbook's
-- shape (five stages, five triggers, 10 s evaluations on the real clock), each an engine in
-- its own task with rollout.fleet's per-rollout sink (every event numbered and JSON-encoded,
-- as the agent journals it) and rollout.fleet_sim's synthetic source and simulated router.
-- They start spread over one interval, as a fleet's would, and one playbook and one
-- scenario are shared by all. After the warm-up the child measures its CPU (utime + stime
-- from /proc/self/stat) over the measured period and reads VmRSS from /proc/self/status.
--
-- The anchor, measured in the same run: the runbook drives a rollout with a shell process
-- and validates a stage with three `curl | jq` and a `bc` (~190 ms of CPU on these
-- machines); we time that pipeline against a local HTTP server and read a sleeping bash's
-- RSS, and scale both to N rollouts validating every 10 s.
-- Then the same with every event replicated to a real etcd, as the agent does (one fenced
-- transaction per event, the status key with it), for the --etcd-sizes (default 100, 1000):
-- the agent's CPU and etcd's own, side by side.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local fleet = require("rollout.fleet")
local fleet_sim = require("rollout.fleet_sim")
local scenario = require("rollout.sim.scenario")
local etcd = require("rollout.etcd")

local ROOT = (arg and arg[0] or "bench/fleet_bench.lua"):match("^(.*)/bench/[^/]*$") or "."
local PLAYBOOK = ROOT .. "/spec/fixtures/fleet/bench/playbook.lua"
local SCENARIO = ROOT .. "/spec/fixtures/fleet/bench/scenario.lua"
local INTERVAL = 10

local function proc_stat(pid)
  local s = fs.read("/proc/" .. (pid or "self") .. "/stat") or ""
  local rest = s:match("^%d+ %b() (.*)$") or ""
  local f = {}
  for x in rest:gmatch("%S+") do f[#f + 1] = x end
  -- fields from the 3rd on: utime is field 14 -> f[12], stime f[13], cutime f[14], cstime f[15]
  return tonumber(f[12]) or 0, tonumber(f[13]) or 0, tonumber(f[14]) or 0, tonumber(f[15]) or 0
end

local function vm(field, pid)
  local s = fs.read("/proc/" .. (pid or "self") .. "/status") or ""
  return tonumber(s:match(field .. ":%s+(%d+) kB")) or 0
end

local CLK_TCK = (function()
  local r = proc.run({ argv = { "getconf", "CLK_TCK" } })
  return r and tonumber(r.stdout) or 100
end)()

-- ---- the child: N rollouts in this process -------------------------------------------------

local function child(n, warmup, measure, etcd_url, etcd_pid)
  collectgarbage("collect")
  local rss0, heap0 = vm("VmRSS"), collectgarbage("count")
  local pb = assert(playbook.load(PLAYBOOK))
  local sc = assert(scenario.load(SCENARIO))
  fleet_sim.prepare(sc)
  local events, evaluations = 0, 0
  local stub = { name = "bench", K = fleet.keys("/bench-" .. n .. "/"), owned = {}, say = function() end,
    print = function(_, ev) events = events + 1; if ev.event == "evaluation" then evaluations = evaluations + 1 end end }
  local c, lease
  if etcd_url then -- replicate every event, fenced, as the agent does
    c = etcd.new({ url = etcd_url, timeout = 10 })
    stub.c = c
    lease = assert(c:grant(60))
    rollout.spawn(function() while true do rollout.sleep(15); c:keepalive(lease) end end)
  end
  local tokens = {}
  if c then -- take every rollout first (32 at a time), as agents would have over time
    local next_i, workers = 1, {}
    for w = 1, 32 do
      workers[w] = rollout.spawn(function()
        while next_i <= n do
          local i = next_i
          next_i = next_i + 1
          local t, holder, err = c:acquire(stub.K.owner("r" .. i), "bench", lease)
          if not t then error("acquire r" .. i .. ": " .. tostring(err or (holder and "held by " .. tostring(holder.value))), 0) end
          tokens[i] = t
        end
      end)
    end
    assert(rollout.wait_all(workers))
  end
  local runners = {}
  for i = 1, n do
    local r = fleet.new_runner(stub, "r" .. i, tokens[i] or "1")
    local src = fleet_sim.source(sc, { clock = function() return r.engine:elapsed() end })
    r.weight_sinks = { src }
    r.sources = { src }
    r.engine = engine.new(pb, { router = fleet_sim.router(), sources = r.sources, interactive = true, who = "bench",
      emit = function(ev) return r:sink(ev) end })
    runners[i] = r
    r.task = rollout.spawn(function()
      rollout.sleep((i - 1) / n * INTERVAL) -- spread over one interval
      return r.engine:run()
    end)
  end
  rollout.sleep(warmup)
  local eu0, es0 = 0, 0
  if etcd_pid then eu0, es0 = proc_stat(etcd_pid) end
  local u0, s0 = proc_stat()
  local t0, ev0, eval0 = rollout.now(), events, evaluations
  rollout.sleep(measure)
  local u1, s1 = proc_stat()
  local wall = rollout.now() - t0
  local cpu = (u1 + s1 - u0 - s0) / CLK_TCK
  local etcd_cpu
  if etcd_pid then
    local eu1, es1 = proc_stat(etcd_pid)
    etcd_cpu = (eu1 + es1 - eu0 - es0) / CLK_TCK / wall
  end
  local rss, hwm, heap = vm("VmRSS"), vm("VmHWM"), collectgarbage("count")
  local stages = 0
  for _, r in ipairs(runners) do if r.engine.state == "stage" then stages = stages + 1 end end
  print(json.encode({ n = n, cpu_share = cpu / wall, rss_kib = rss, hwm_kib = hwm, rss0_kib = rss0,
    heap_kib = heap, heap0_kib = heap0, events_per_s = (events - ev0) / wall, evaluations_per_s = (evaluations - eval0) / wall,
    in_stage = stages, wall = wall, etcd_cpu_share = etcd_cpu }))
  for _, r in ipairs(runners) do if r.task then r.task:cancel("done") end end
  if c then c:revoke(lease) end
  io.stdout:flush()
  return 0
end

-- ---- the anchor: the runbook's pipeline ------------------------------------------------------

local QUERY = [[{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.0,"0.0012"]}]}}]]

local function anchor()
  -- lazy: the spec support's server starter, only for the anchor (spec/ is on the path from the repository root)
  local servers = require("spec.support.servers")
  local ng, err = servers.nginx({ files = { ["query.json"] = QUERY } })
  if not ng then return { error = "nginx: " .. tostring(err) } end
  local url = ng.url .. "/query.json"
  local script = string.format([[
e=$(curl -s '%s' | jq -r '.data.result[0].value[1]')
p=$(curl -s '%s' | jq -r '.data.result[0].value[1]')
h=$(curl -s '%s' | jq -r '.data.result[0].value[1]')
echo "$e < 0.01 && $p < 0.5 && $h < 1" | bc -l >/dev/null
]], url, url, url)
  local runs = 20
  local _, _, cu0, cs0 = proc_stat()
  for _ = 1, runs do
    local r = proc.run({ argv = { "bash", "-c", script }, timeout = 30 })
    if not r or r.code ~= 0 then ng:stop(); return { error = "pipeline failed: " .. tostring(r and r.stderr or "") } end
  end
  local _, _, cu1, cs1 = proc_stat()
  ng:stop()
  local per = (cu1 + cs1 - cu0 - cs0) / CLK_TCK / runs
  -- a shell per rollout, waiting between validations
  local sh = proc.spawn({ argv = { "bash", "-c", "while true; do sleep 10; done" }, stdout = "null", stderr = "null" })
  rollout.sleep(0.3)
  local bash_rss = vm("VmRSS", sh:pid())
  sh:kill("KILL")
  sh:wait(5)
  return { validation_cpu = per, bash_rss_kib = bash_rss }
end

-- ---- the parent ------------------------------------------------------------------------------

local function parse(argv)
  local o = { sizes = {}, warmup = 12, measure = 20 }
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "--child" then o.child = tonumber(argv[i + 1]); i = i + 1
    elseif a == "--etcd-url" then o.etcd_url = argv[i + 1]; i = i + 1
    elseif a == "--etcd-pid" then o.etcd_pid = argv[i + 1]; i = i + 1
    elseif a == "--etcd-sizes" then
      o.etcd_sizes = {}
      for x in argv[i + 1]:gmatch("%d+") do o.etcd_sizes[#o.etcd_sizes + 1] = math.tointeger(tonumber(x)) end
      i = i + 1
    elseif a == "--no-etcd" then o.no_etcd = true
    elseif a == "--warmup" then o.warmup = tonumber(argv[i + 1]); i = i + 1
    elseif a == "--measure" then o.measure = tonumber(argv[i + 1]); i = i + 1
    elseif tonumber(a) then o.sizes[#o.sizes + 1] = math.tointeger(tonumber(a))
    else error("fleet_bench: unknown argument " .. a) end
    i = i + 1
  end
  if #o.sizes == 0 then o.sizes = { 100, 1000, 10000 } end
  return o
end

local o = parse(arg or {})
if o.child then return child(o.child, o.warmup, o.measure, o.etcd_url, o.etcd_pid) end

local function run_sizes(sizes, extra)
  local results = {}
  for _, n in ipairs(sizes) do
    local argv = { rollout.exe, arg[0], "--child", tostring(n), "--warmup", tostring(o.warmup), "--measure", tostring(o.measure) }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local r, err = proc.run({ argv = argv, timeout = o.warmup + o.measure + 300 })
    local res = r and r.code == 0 and json.decode(r.stdout:match("([^\n]+)\n*$") or "")
    if not res then
      print(string.format("  N = %d: FAILED: %s", n, tostring(err or (r and (r.stderr:sub(1, 300) .. " code " .. tostring(r.code))))))
    else
      results[#results + 1] = res
    end
  end
  return results
end

local function table_of(results, a, with_etcd)
  print(string.format("  %7s  %9s  %9s  %12s  %10s  %9s%s   |  %-26s", "N", "CPU share", "RSS MiB", "per rollout", "evals/s",
    "events/s", with_etcd and "  etcd CPU" or "", "runbook approach (anchor)"))
  for _, r in ipairs(results) do
    local per_kib = (r.rss_kib - r.rss0_kib) / r.n
    local anchor_txt = "n/a"
    if a.validation_cpu then
      anchor_txt = string.format("%.1f cores, %.0f MiB", r.n * a.validation_cpu / INTERVAL, r.n * a.bash_rss_kib / 1024)
    end
    print(string.format("  %7d  %8.2f%%  %9.1f  %8.1f KiB  %10.1f  %9.1f%s   |  %-26s", r.n, r.cpu_share * 100, r.rss_kib / 1024,
      per_kib, r.evaluations_per_s, r.events_per_s, with_etcd and string.format("  %7.1f%%", (r.etcd_cpu_share or 0) * 100) or "",
      anchor_txt))
  end
end

print(string.format("fleet: one agent, N concurrent simulated rollouts (synthetic sources, simulated routers, real clock, "
  .. "%d s evaluations)", INTERVAL))
print(string.format("       warm-up %d s, then CPU and RSS over %d s; each N in a fresh process", o.warmup, o.measure))
local a = anchor()
local results = run_sizes(o.sizes)
print()
table_of(results, a, false)
print()
if a.validation_cpu then
  print(string.format("  anchor (same run): one validation = 3 x curl | jq + bc = %.0f ms CPU (the issue says ~190 ms); "
    .. "a waiting bash per rollout = %.1f MiB RSS", a.validation_cpu * 1000, a.bash_rss_kib / 1024))
else
  print("  anchor: not measured (" .. tostring(a.error) .. "); the issue's figure: ~190 ms CPU per validation")
end
for _, r in ipairs(results) do
  if r.n == 10000 then
    local ok = r.rss_kib < 1024 * 1024 and r.cpu_share < 1
    print(string.format("  target: 10,000 rollouts in one process under 1 GiB RSS and under one core: %s (%.0f MiB, %.1f %% of a core)",
      ok and "met" or "NOT MET", r.rss_kib / 1024, r.cpu_share * 100))
  end
end

if not o.no_etcd then
  local server = require("spec.support.etcd").start()
  if not server then
    print("\n  with etcd: skipped (etcd did not start)")
  else
    print("\n  the same, every event replicated to a real etcd (one fenced transaction per event, status included):")
    local er = run_sizes(o.etcd_sizes or { 100, 1000 }, { "--etcd-url", server.url, "--etcd-pid", tostring(server.handle:pid()) })
    table_of(er, a, true)
    server:stop()
  end
end
return 0

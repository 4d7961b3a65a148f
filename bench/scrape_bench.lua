-- bench/scrape_bench.lua: how many /metrics targets the scrape source reads per second on
-- loopback, and the CPU each scrape costs us, with anchors from the same run: the same
-- GETs without parsing (the HTTP floor) and promtext's parse alone on the same body.
-- Usage: ./rollout bench/scrape_bench.lua [seconds=3] [targets=20]
--
-- Targets are sample-service instances (each carrying some traffic, so their latency
-- histogram has counts) scraped as 10 scrape sources of 2 versions each, all ticking at
-- once: one round = one tick of every source = `targets` scrapes. A second row scrapes
-- HAProxy's exporter (~50 KB, 2 servers) through the haproxy preset, `targets` at once.
-- CPU is os.clock() (this process only: the servers are other processes).
local rollout = require("rollout")
local http = require("rollout.http")
local bench_promtext = require("rollout.bench.promtext")
local sources = require("rollout.sources")
local support = require("spec.support.sources_support")

local seconds = tonumber(arg and arg[1]) or 3
local ntargets = math.tointeger(tonumber(arg and arg[2]) or 20) or 20
ntargets = ntargets + ntargets % 2

local started = {}
local function cleanup() support.stop(started) end

local function measure(round)
  collectgarbage()
  local c0, t0, n = os.clock(), rollout.now(), 0
  repeat n = n + round() until rollout.now() - t0 >= seconds
  local wall, cpu = rollout.now() - t0, os.clock() - c0
  return { rate = n / wall, cpu_us = cpu / n * 1e6, n = n, busy = cpu / wall }
end

local function all(tasks) for _, t in ipairs(tasks) do t:wait() end end

local function fetch_round(urls)
  return function()
    local tasks = {}
    for i, u in ipairs(urls) do tasks[i] = rollout.spawn(function() assert(http.get(u, { timeout = 5 })) end) end
    all(tasks)
    return #urls
  end
end

local function tick_round(srcs, per)
  return function()
    local tasks, now = {}, rollout.now()
    for i, s in ipairs(srcs) do tasks[i] = rollout.spawn(function() assert(s:tick(now)) end) end
    all(tasks)
    return #srcs * per
  end
end

local function parse_cost(body)
  local iters = math.max(1, math.floor(2e6 / #body))
  local r = bench_promtext.walk(body, iters)
  local t = type(r) == "table" and r.cpu or r -- {cpu=, wall=} (older builds: seconds)
  return t / iters * 1e6
end

local function row(label, r, extra)
  print(string.format("  %-44s %9.0f /s %9.1f us CPU each  (%2.0f %% of a core)%s", label, r.rate, r.cpu_us,
    r.busy * 100, extra or ""))
end

local ok, err = pcall(function()
  -- sample-service targets
  local targets = {}
  for i = 1, ntargets do
    local s = support.start { version = "v" .. i }
    started[#started + 1] = s
    targets[i] = s
  end
  local loads = {}
  for i, s in ipairs(targets) do loads[i] = rollout.spawn(support.load, s.url .. "/", 200, { concurrency = 4 }) end
  all(loads)
  local urls, srcs = {}, {}
  for i, s in ipairs(targets) do urls[i] = s.metrics end
  for i = 1, ntargets, 2 do
    srcs[#srcs + 1] = sources.new({ type = "scrape", memory_limit = "1Gi" },
      support.ctx(targets[i], targets[i + 1]))
  end
  local body = assert(http.get(urls[1])).body
  print(string.format("scrape: %d sample-service targets on loopback (%d B of exposition each), %g s per row",
    ntargets, #body, seconds))
  local anchor = measure(fetch_round(urls))
  local ours = measure(tick_round(srcs, 2))
  row("scrape source tick (GET + select + record)", ours,
    string.format("  %.2fx the GET-only CPU", ours.cpu_us / anchor.cpu_us))
  row("anchor: the same GETs, no parsing", anchor)
  print(string.format("  %-44s %9.1f us CPU per body", "anchor: promtext parse alone (walk)", parse_cost(body)))

  -- HAProxy's exporter: a big page, two versions per scrape
  local lb = support.haproxy { baseline = "127.0.0.1:" .. targets[1].port, canary = "127.0.0.1:" .. targets[2].port }
  started[#started + 1] = lb
  support.load(lb.url .. "/", 200)
  local hbody = assert(http.get(lb.metrics)).body
  local hsrcs, hurls = {}, {}
  for i = 1, ntargets do
    hsrcs[i] = sources.new({ type = "scrape", preset = "haproxy", url = lb.metrics, backend = "be" }, support.ctx())
    hurls[i] = lb.metrics
  end
  print(string.format("scrape: HAProxy 2.6 exporter (%d B), %d scrapes at once", #hbody, ntargets))
  local hanchor = measure(fetch_round(hurls))
  local hours = measure(tick_round(hsrcs, 1))
  row("scrape source tick, haproxy preset", hours,
    string.format("  %.2fx the GET-only CPU", hours.cpu_us / hanchor.cpu_us))
  row("anchor: the same GETs, no parsing", hanchor)
  print(string.format("  %-44s %9.1f us CPU per body", "anchor: promtext parse alone (walk)", parse_cost(hbody)))
end)
cleanup()
if not ok then
  io.stderr:write("scrape bench failed: ", tostring(err), "\n")
  return 1
end
return 0

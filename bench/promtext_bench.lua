-- promtext parsing throughput, beside python3-prometheus-client on the same bytes in the
-- same run. Usage: rollout bench/promtext_bench.lua [MB] (size of the generated input,
-- default 10). Times are CPU time (this process; for Python, its process), so a busy
-- neighbour on a shared machine inflates neither side.
local promtext = require("rollout.promtext")
local bench_promtext = require("rollout.bench.promtext")

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/bench/[^/]*$") or "."
local FIXTURES = ROOT .. "/spec/fixtures/promtext/"
local REF = ROOT .. "/tools/promtext_ref.py"
local TARGET_MB_S = 400

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function run(argv, timeout)
  -- lazy: optional, the rollout binary's host API (absent under a plain lua interpreter)
  local ok, proc = pcall(require, "rollout.proc")
  if ok then return proc.run { argv = argv, timeout = timeout } end
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = shell_quote(a) end
  local p = assert(io.popen(table.concat(quoted, " ") .. " 2>&1", "r"))
  local out = p:read("a")
  local _, _, code = p:close()
  return { code = code, stdout = out, stderr = out }
end

-- An exposition shaped like a large service's: `families` families (40 % counters, 30 %
-- gauges, 20 % histograms, 10 % summaries), HELP and TYPE for each, 6 labels on every
-- sample (5 + le on buckets), a few escaped label values. Deterministic.
local function generate(target_bytes, families)
  math.randomseed(650)
  local services = { "checkout", "cart", "payments", "search", "catalog", "auth", "shipping", "ledger" }
  local regions = { "eu-west-1", "eu-central-1", "us-east-1", "ap-south-1" }
  local methods = { "GET", "POST", "PUT", "DELETE" }
  local codes = { "200", "201", "304", "400", "404", "429", "500", "503" }
  local les = { "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf" }
  local per_family = target_bytes / families
  local out, size = {}, 0
  local function emit(line)
    out[#out + 1] = line
    size = size + #line + 1
  end
  local function labels(i, extra_name, extra_value)
    local path = i % 211 == 0 and 'say \\"hi\\" \\\\ bye' or services[i % #services + 1]
    local l = ('service="%s",instance="10.0.%d.%d:8080",region="%s",method="%s",'):format(
      path, i % 7, i % 251, regions[i % #regions + 1], methods[i % #methods + 1])
    if extra_name then return l .. ('code="%s",%s="%s"'):format(codes[i % #codes + 1], extra_name, extra_value) end
    return l .. ('code="%s",version="v1.%d.%d"'):format(codes[i % #codes + 1], i % 50, i % 9)
  end
  for f = 1, families do
    local kind = f % 10 < 4 and "counter" or f % 10 < 7 and "gauge" or f % 10 < 9 and "histogram" or "summary"
    local name = ("app_%s_metric_%d%s"):format(kind, f, kind == "counter" and "_total" or
      (kind == "histogram" or kind == "summary") and "_seconds" or "")
    emit(("# HELP %s Generated %s number %d for the parser benchmark."):format(name, kind, f))
    emit(("# TYPE %s %s"):format(name, kind))
    local start, series = size, 0
    while size - start < per_family do
      series = series + 1
      local i = f * 1000 + series
      if kind == "counter" then
        emit(("%s{%s} %d"):format(name, labels(i), math.random(0, 1e9)))
      elseif kind == "gauge" then
        emit(("%s{%s} %.6g"):format(name, labels(i), math.random() * 1e4))
      elseif kind == "histogram" then
        local count = 0
        for _, le in ipairs(les) do
          count = count + math.random(0, 1000)
          emit(("%s_bucket{%s} %d"):format(name, labels(i, "le", le), count))
        end
        emit(("%s_sum{%s} %.9g"):format(name, labels(i), count * 0.042))
        emit(("%s_count{%s} %d"):format(name, labels(i), count))
      else
        for _, q in ipairs { "0.5", "0.9", "0.99" } do
          emit(("%s{%s} %.9g"):format(name, labels(i, "quantile", q), math.random() * 2))
        end
        emit(("%s_sum{%s} %.9g"):format(name, labels(i), math.random() * 1e5))
        emit(("%s_count{%s} %d"):format(name, labels(i), math.random(0, 1e6)))
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- Repeat fn until at least `seconds` of CPU time have passed; returns CPU seconds per call.
local function cpu_per_call(fn, seconds)
  local n, t0 = 0, os.clock()
  repeat
    fn()
    n = n + 1
  until os.clock() - t0 >= seconds
  return (os.clock() - t0) / n
end

local function measure(label, text, path)
  local mb = #text / 1e6
  local iterations = math.max(1, math.floor(300e6 / #text))
  local walk = assert(bench_promtext.walk(text, iterations))
  local tables = cpu_per_call(function() assert(promtext.parse(text)) end, 1)
  local selectors = {
    { name = "haproxy_server_http_responses_total", labels = { code = "5xx" }, group_by = "server" },
    { name = "app_counter_metric_10_total", labels = { code = { re = "5.." } }, group_by = "service" },
    { histogram = "app_histogram_metric_17_seconds", labels = { region = "eu-west-1" } },
    { histogram = "etcd_disk_wal_fsync_duration_seconds" },
  }
  local select = cpu_per_call(function() assert(promtext.select(text, selectors)) end, 1)
  local r = run({ "/usr/bin/python3", REF, "bench", path, "2" }, 600)
  local py = tonumber(r.stdout:match("mb_per_s=([%d.]+)"))
  local walk_mb_s = mb * iterations / walk.cpu
  print(("%-26s %9d %8d %10.1f %11.1f %9.1f %10s %9s"):format(label, #text, walk.samples, walk_mb_s,
    mb / tables, mb / select, py and ("%.2f"):format(py) or "n/a", py and ("%.0fx"):format(walk_mb_s / py) or ""))
  if not py then print("  python3-prometheus-client failed: " .. tostring(r.stderr)) end
  return walk_mb_s
end

local mb_arg = tonumber(arg and arg[1]) or 10
local generated = generate(mb_arg * 1e6, 650)
local tmp = os.tmpname()
local f = assert(io.open(tmp, "wb"))
f:write(generated)
f:close()

print(("promtext: text format parsing, MB/s of CPU time (target >= %d MB/s for the C walk)"):format(TARGET_MB_S))
print("  walk = C parser through its callbacks, labels materialised (rollout.bench.promtext.walk)")
print("  tables = promtext.parse building the full Lua table; select = promtext.select, 4 selectors")
print("  python = python3-prometheus-client text_string_to_metric_families, same bytes, same run\n")
print(("%-26s %9s %8s %10s %11s %9s %10s %9s"):format("input", "bytes", "samples", "walk", "tables", "select",
  "python", "walk/py"))
local worst = measure(("generated (650 fam, 6 lbl)"), generated, tmp)
os.remove(tmp)
for _, name in ipairs { "prometheus-2.42.prom", "haproxy-2.6.prom", "etcd-3.4.prom" } do
  local mb_s = measure(name:gsub("%.prom$", "") .. " (real)", read(FIXTURES .. name), FIXTURES .. name)
  worst = math.min(worst, mb_s)
end
print(("\nslowest C walk %.0f MB/s: %s the %d MB/s target"):format(worst, worst >= TARGET_MB_S and "meets" or "MISSES",
  TARGET_MB_S))

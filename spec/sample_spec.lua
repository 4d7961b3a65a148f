-- rollout-test: serial (measures request rates and latency distributions on this machine)
-- sample-service and loadgen: the application a canary moves traffic between, and the
-- steady load that makes its metrics move. Both are real processes on loopback; every
-- statistical check uses a tolerance derived from the sample size, not a guess.
-- Needs `make sample-service loadgen` (make test builds them).
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local proc = require("rollout.proc")
local promtext = require("rollout.promtext")

local ROOT = assert(fs.realpath("."))
-- Overridable so a sanitizer build can be tested without replacing the binaries others use.
local SERVICE = os.getenv("SAMPLE_SERVICE") or ROOT .. "/sample-service"
local LOADGEN = os.getenv("LOADGEN") or ROOT .. "/loadgen"
local PYTHON = "/usr/bin/python3" -- Debian's, for raw-socket checks

-- ---- helpers ------------------------------------------------------------------------

local started = {} -- services of the running test, stopped in after_each

--- Start sample-service on a port the kernel picks (--listen :0, --port-file), so no two
--- runs race for a port. Returns {child=, url=, port=, dir=}.
local function start_service(args)
  local dir = assert(fs.mkdtemp("sample-spec"))
  local argv = { SERVICE, "--listen", "127.0.0.1:0", "--port-file", dir .. "/port" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local child = assert(proc.spawn{ argv = argv, stdout = "null", stderr = dir .. "/stderr" })
  local svc = { child = child, dir = dir }
  started[#started + 1] = svc
  local deadline = rollout.now() + 5
  while true do
    local port = tonumber(fs.read(dir .. "/port") or "")
    if port then
      svc.port, svc.url = port, "http://127.0.0.1:" .. port
      return svc
    end
    if not child:running() or rollout.now() > deadline then
      error("sample-service did not start: " .. tostring(fs.read(dir .. "/stderr")), 2)
    end
    rollout.sleep(0.005)
  end
end

--- SIGTERM, and insist on a clean exit 0: a sanitizer report or a hang fails the test.
local function stop_service(svc)
  if svc.stopped then return end
  svc.stopped = true
  if svc.child:running() then svc.child:kill("TERM") end
  local code, err = svc.child:wait(5)
  local log = fs.read(svc.dir .. "/stderr") or ""
  fs.rmtree(svc.dir)
  if code ~= 0 then
    error(string.format("sample-service did not exit 0 on SIGTERM (%s, %s):\n%s",
      tostring(code), tostring(err), log), 2)
  end
end

--- Run loadgen to the end; returns the summary and the list of interval lines.
local function loadgen(url, opts)
  local argv = { LOADGEN, "--url", url }
  for _, k in ipairs({ "rps", "duration", "connections", "report-interval", "timeout" }) do
    local v = opts[k] or opts[k:gsub("-", "_")]
    if v ~= nil then argv[#argv + 1] = "--" .. k; argv[#argv + 1] = tostring(v) end
  end
  local res = assert(proc.run{ argv = argv, timeout = opts.run_timeout or 30 })
  assert.equals(0, res.code, "loadgen failed: " .. res.stderr)
  local summary, intervals = nil, {}
  for line in res.stdout:gmatch("[^\n]+") do
    local obj = assert(json.decode(line))
    if obj.summary then summary = obj else intervals[#intervals + 1] = obj end
  end
  assert.is_table(summary, "loadgen printed no summary:\n" .. res.stdout)
  return summary, intervals
end

local function get(url)
  return assert(http.get(url, { timeout = 5 }))
end

local function post(url)
  return assert(http.request{ url = url, method = "POST", timeout = 5 })
end

--- The family named `name` from a /metrics scrape, via the real parser.
local function family(text, name)
  local parsed = assert(promtext.parse(text))
  for _, f in ipairs(parsed.families) do
    if f.name == name then return f end
  end
  return nil
end

--- Share of observations at or below `le` in the service's latency histogram.
local function share_below(text, le)
  local h = assert(promtext.select(text, { { histogram = "http_request_duration_seconds" } }))[1]
  for _, b in ipairs(h.buckets) do
    if math.abs(b.le - le) < 1e-9 then return b.count / h.count end
  end
  error("no bucket le=" .. le)
end

--- Four standard deviations of a binomial count: a correct service fails this check
--- about once in 16 000 runs.
local function binomial_tolerance(n, p)
  return 4 * math.sqrt(n * p * (1 - p))
end

after_each(function()
  local list = started
  started = {}
  local first_err
  for _, svc in ipairs(list) do -- stop them all, then report the first failure
    local ok, err = pcall(stop_service, svc)
    first_err = first_err or (not ok and err) or nil
  end
  if first_err then error(first_err, 0) end
end)

-- ---- the service ----------------------------------------------------------------------

describe("sample-service", function()
  it("answers /, /health and /ready, and prints its own version", function()
    local svc = start_service{ "--version", "v3.0.0" }
    local res = get(svc.url .. "/")
    assert.equals(200, res.status)
    assert.equals("v3.0.0\n", res.body)
    assert.equals("v3.0.0", res.headers["x-version"])
    assert.equals(200, get(svc.url .. "/health").status)
    assert.equals(200, get(svc.url .. "/ready").status)
    assert.equals(404, get(svc.url .. "/nope").status)
    local out = assert(proc.run{ argv = { SERVICE, "--print-version" }, timeout = 5 })
    assert.equals(0, out.code)
    assert.matches("^sample%-service %d+%.%d+%.%d+\n$", out.stdout)
  end)

  it("exposes Prometheus metrics in which only / counts", function()
    local svc = start_service{ "--version", "v2.9.0" }
    for _ = 1, 5 do get(svc.url .. "/") end
    get(svc.url .. "/health"); get(svc.url .. "/ready")
    assert.equals(200, assert(http.request{ url = svc.url .. "/", method = "OPTIONS" }).status, "a proxy's check")
    local res = get(svc.url .. "/metrics")
    assert.equals(200, res.status)
    assert.matches("^text/plain; version=0%.0%.4", res.headers["content-type"])
    local text = res.body
    for _, name in ipairs({ "http_request_duration_seconds", "http_requests_total", "process_cpu_seconds_total",
                            "process_resident_memory_bytes", "process_start_time_seconds" }) do
      assert.is_table(family(text, name), "family " .. name)
    end
    local hist = family(text, "http_request_duration_seconds")
    assert.equals("histogram", hist.type)
    local les = {}
    for _, s in ipairs(hist.samples) do
      assert.equals("v2.9.0", s.labels.version)
      if s.name == "http_request_duration_seconds_bucket" then les[#les + 1] = s.labels.le end
      if s.name == "http_request_duration_seconds_count" then assert.equals(5, s.value) end
    end
    assert.ge(#les, 41, "~10 buckets per decade from 1 ms to 10 s, plus +Inf")
    assert.equals("+Inf", les[#les])
    for _, le in ipairs({ "0.001", "0.01", "0.1", "1", "10" }) do
      local found = false
      for _, l in ipairs(les) do found = found or l == le end
      assert.truthy(found, "bucket le=" .. le)
    end
    local total = family(text, "http_requests_total")
    assert.equals("counter", total.type)
    assert.equals(1, #total.samples)
    assert.same({ version = "v2.9.0", method = "GET", code = "200" }, total.samples[1].labels)
    assert.equals(5, total.samples[1].value)
    assert.gt(family(text, "process_resident_memory_bytes").samples[1].value, 100000)
    assert.near(os.time(), family(text, "process_start_time_seconds").samples[1].value, 60)
  end)

  it("fails the configured share of requests (2000 requests, binomial tolerance)", function()
    local svc = start_service{ "--error-rate", "10%", "--seed", "7" }
    local s = loadgen(svc.url .. "/", { rps = 1000, duration = "2s", connections = 64, ["report-interval"] = 0 })
    local seen = json.encode(s)
    assert.equals(0, s.conn_errors + s.timeouts + s.errors_other, seen)
    local n = s.ok + s.errors_5xx
    assert.equals(s.sent, n, seen)
    assert.ge(n, 1950, "a stall of the machine may drop a few, not more: " .. seen)
    assert.near(0.1 * n, s.errors_5xx, binomial_tolerance(n, 0.1), seen)
    -- the service counted exactly what the client saw
    local total = family(get(svc.url .. "/metrics").body, "http_requests_total")
    local by_code = {}
    for _, smp in ipairs(total.samples) do by_code[smp.labels.code] = smp.value end
    assert.equals(s.errors_5xx, by_code["500"])
    assert.equals(s.ok, by_code["200"])
  end)

  it("draws latency from a log-normal with the configured p50 and p99", function()
    local svc = start_service{ "--latency-p50", "40ms", "--latency-p99", "200ms" }
    local s = loadgen(svc.url .. "/", { rps = 500, duration = "4s", connections = 200, ["report-interval"] = 0 })
    local seen = json.encode(s)
    assert.equals(2000, s.ok, seen)
    assert.equals(0, s.dropped, seen)
    assert.near(40, s.p50_ms, 40 * 0.3, "client p50: " .. seen)
    assert.near(200, s.p99_ms, 200 * 0.3, "client p99: " .. seen)
    -- the server's own histogram agrees: half below 40 ms, 99 % below 200 ms
    local text = get(svc.url .. "/metrics").body
    assert.near(0.5, share_below(text, 0.04), 0.06, "share <= 40 ms")
    assert.near(0.99, share_below(text, 0.2), 0.01, "share <= 200 ms")
  end)

  it("serves hundreds of slow requests at once without blocking", function()
    local svc = start_service{ "--latency-p50", "300ms" }
    local s = loadgen(svc.url .. "/", { rps = 1000, duration = "2s", connections = 500, ["report-interval"] = 0 })
    local seen = json.encode(s)
    assert.equals(2000, s.ok, "every request answered: " .. seen)
    assert.equals(0, s.dropped + s.conn_errors + s.timeouts, seen)
    -- served one after another, 2000 x 300 ms would take 10 minutes
    assert.near(300, s.p50_ms, 30, "a fixed 300 ms delay, not queued behind others: " .. seen)
    assert.lt(s.p99_ms, 1000, seen)
  end)

  it("switches to failing after N requests", function()
    local svc = start_service{ "--fail-after-requests", "20" }
    for i = 1, 20 do assert.equals(200, get(svc.url .. "/").status, "request " .. i) end
    for i = 21, 30 do assert.equals(500, get(svc.url .. "/").status, "request " .. i) end
    local state = json.decode(get(svc.url .. "/admin/fault").body)
    assert.is_true(state.failing)
    assert.equals(1, state.error_rate)
  end)

  it("switches to failing after a time, with a later latency if asked", function()
    local svc = start_service{ "--fail-after-seconds", "0.3", "--fail-error-rate", "0",
                               "--fail-latency-p50", "150ms" }
    local t0 = rollout.now()
    assert.equals(200, get(svc.url .. "/").status)
    assert.lt(rollout.now() - t0, 0.1)
    rollout.sleep(0.4)
    t0 = rollout.now()
    assert.equals(200, get(svc.url .. "/").status, "fail-error-rate 0 keeps answering 200")
    assert.near(0.15, rollout.now() - t0, 0.05, "the later latency applies")
  end)

  it("crashes with a non-zero exit after N requests, or after a time", function()
    local svc = start_service{ "--crash-after-requests", "3" }
    for _ = 1, 3 do assert.equals(200, get(svc.url .. "/").status) end
    local res, err = http.get(svc.url .. "/", { timeout = 5 })
    assert.is_nil(res, "the 4th request finds the process gone")
    assert.is_string(err)
    local code = svc.child:wait(5)
    assert.equals(1, code)
    svc.stopped = true
    fs.rmtree(svc.dir)

    local t0 = rollout.now()
    local svc2 = start_service{ "--crash-after-seconds", "0.3" }
    assert.equals(1, svc2.child:wait(5))
    assert.near(0.3, rollout.now() - t0, 0.25)
    svc2.stopped = true
    fs.rmtree(svc2.dir)
  end)

  it("changes faults live through /admin/fault", function()
    local svc = start_service{}
    local state = json.decode(get(svc.url .. "/admin/fault").body)
    assert.equals(0, state.error_rate)
    assert.equals(200, get(svc.url .. "/").status)

    assert.equals(200, post(svc.url .. "/admin/fault?error_rate=1").status)
    for _ = 1, 5 do assert.equals(500, get(svc.url .. "/").status) end

    local res = post(svc.url .. "/admin/fault?error_rate=0&latency_p50=120ms&latency_p99=120ms")
    assert.equals(120, json.decode(res.body).latency_p50_ms)
    local t0 = rollout.now()
    assert.equals(200, get(svc.url .. "/").status)
    assert.near(0.12, rollout.now() - t0, 0.05)

    res = post(svc.url .. "/admin/fault?bogus=1")
    assert.equals(400, res.status)
    assert.matches('"bogus"', res.body)
    assert.equals(400, post(svc.url .. "/admin/fault?latency_p99=10ms").status, "p99 below p50")
    assert.equals(400, post(svc.url .. "/admin/fault?error_rate=2").status)
    local after = json.decode(get(svc.url .. "/admin/fault").body)
    assert.equals(120, after.latency_p50_ms, "a refused change changes nothing")

    assert.equals(200, post(svc.url .. "/admin/fault?unhealthy=1&ready=0").status)
    assert.equals(503, get(svc.url .. "/health").status)
    assert.equals(503, get(svc.url .. "/ready").status)
  end)

  it("--unhealthy and --slow-health shape the liveness answer", function()
    local svc = start_service{ "--unhealthy", "--slow-health", "200ms" }
    local t0 = rollout.now()
    assert.equals(503, get(svc.url .. "/health").status)
    assert.near(0.2, rollout.now() - t0, 0.1)
  end)

  it("answers pipelined requests in order and refuses oversized or malformed ones", function()
    local svc = start_service{ "--latency-p50", "50ms" }
    local script = [[
import socket, sys
def exchange(data):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk: break
        out += chunk
    return out.decode("latin-1")
pipelined = (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n\r\n"
             b"GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n")
print(exchange(pipelined).replace("\r\n", "|").replace("\n", "|"))
print(exchange(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n").split("\r\n")[0])
print(exchange(b"NOT HTTP AT ALL\r\n\r\n").split("\r\n")[0])
print(exchange(b"POST /admin/fault HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").split("\r\n")[0])
]]
    local res = assert(proc.run{ argv = { PYTHON, "-c", script, tostring(svc.port) }, timeout = 10 })
    assert.equals(0, res.code, res.stderr)
    local lines = {}
    for l in res.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local statuses, bodies = {}, {}
    for st in lines[1]:gmatch("HTTP/1%.1 (%d+)") do statuses[#statuses + 1] = tonumber(st) end
    for body in lines[1]:gmatch("||([^|]+)|?") do bodies[#bodies + 1] = body end
    assert.same({ 200, 200, 200 }, statuses)
    assert.same({ "v1.0.0", "ok", "ready" }, bodies, "in request order despite the delayed first one")
    assert.equals("HTTP/1.1 400 Bad Request", lines[2], "a 20 kB request line")
    assert.equals("HTTP/1.1 400 Bad Request", lines[3])
    assert.equals("HTTP/1.1 400 Bad Request", lines[4], "chunked request bodies are refused")
    assert.equals(200, get(svc.url .. "/health").status, "still serving")
  end)

  it("exits 0 on SIGTERM and SIGINT", function()
    local a, b = start_service{}, start_service{}
    assert.equals(200, get(a.url .. "/").status)
    a.child:kill("TERM")
    b.child:kill("INT")
    assert.equals(0, a.child:wait(5))
    assert.equals(0, b.child:wait(5))
  end)

  it("refuses bad flags with a message naming the flag", function()
    for _, args in ipairs({ { "--error-rate", "1.5" }, { "--latency-p50", "soon" },
                            { "--latency-p99", "10ms" }, { "--bogus" } }) do
      local argv = { SERVICE }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      local res = assert(proc.run{ argv = argv, timeout = 5 })
      assert.equals(2, res.code, table.concat(args, " "))
      assert.truthy(res.stderr:find(args[1]:sub(3), 1, true), res.stderr)
    end
  end)
end)

-- ---- the load generator -----------------------------------------------------------------

describe("loadgen", function()
  it("holds 300 rps for 3 s and counts responses by body", function()
    local svc = start_service{ "--version", "v3.0.0", "--error-rate", "0.2" }
    local s, intervals = loadgen(svc.url .. "/", { rps = 300, duration = "3s", ["report-interval"] = "1s" })
    assert.near(900, s.sent, 45, "total within 5 %")
    assert.near(300, s.rps, 15, "rate within 5 %")
    assert.equals(0, s.dropped + s.conn_errors + s.timeouts, json.encode(s))
    assert.le(s.late, 45, "only a stall of this machine makes a request wait for a connection")
    -- the first three lines are the three whole seconds; a last one may hold a straggler
    local sum = 0
    for i, iv in ipairs(intervals) do
      if i <= 3 then assert.near(300, iv.sent, 15, "interval " .. i .. " at t=" .. iv.t) end
      sum = sum + iv.sent
    end
    assert.ge(#intervals, 3)
    assert.equals(s.sent, sum, "intervals add up to the summary")
    -- 200 and 500 answers both start with the version line: one key
    assert.same({ ["v3.0.0"] = 900 }, s.by_body)
    assert.equals(s.sent, s.by_code["200"] + s.by_code["500"])
    assert.near(180, s.errors_5xx, binomial_tolerance(900, 0.2))
  end)

  it("keys by_body on the first line of other bodies too", function()
    local svc = start_service{}
    local s = loadgen(svc.url .. "/health", { rps = 200, duration = "0.5s", ["report-interval"] = 0 })
    assert.same({ ok = 100 }, s.by_body)
  end)

  it("drops requests rather than slowing down when every connection is busy", function()
    local svc = start_service{ "--latency-p50", "100ms" }
    local s = loadgen(svc.url .. "/", { rps = 100, duration = "1s", connections = 1, ["report-interval"] = 0 })
    assert.equals(100, s.sent + s.dropped, "the schedule is kept")
    assert.near(10, s.sent, 2, "one connection x 100 ms = 10 per second")
    assert.ge(s.late, s.sent - 1, "all but the first waited in the backlog")
    assert.gt(s.p50_ms, 150, "latency counts the wait: measured from when a request was due")
  end)

  it("counts connection errors and timeouts, and keeps going", function()
    local svc = start_service{ "--latency-p50", "300ms" }
    local s = loadgen(svc.url .. "/", { rps = 50, duration = "1s", connections = 64, timeout = "100ms",
                                        ["report-interval"] = 0 })
    assert.equals(50, s.sent)
    assert.equals(50, s.timeouts)
    assert.equals(0, s.ok)
    assert.equals(json.null, s.p50_ms, "no latency without answers")

    stop_service(svc)
    local dead = loadgen(svc.url .. "/", { rps = 50, duration = "0.5s", ["report-interval"] = 0 })
    assert.gt(dead.conn_errors, 0)
    assert.equals(0, dead.ok)
  end)

  it("prints its summary when stopped by SIGTERM", function()
    local svc = start_service{}
    local dir = assert(fs.mkdtemp("loadgen-spec"))
    finally(function() fs.rmtree(dir) end)
    local child = assert(proc.spawn{ argv = { LOADGEN, "--url", svc.url .. "/", "--rps", "100",
                                              "--report-interval", "0.25s" },
                                     stdout = dir .. "/out", stderr = "null" })
    rollout.sleep(1.1)
    child:kill("TERM")
    assert.equals(0, child:wait(5))
    local lines = {}
    for l in assert(fs.read(dir .. "/out")):gmatch("[^\n]+") do lines[#lines + 1] = assert(json.decode(l)) end
    local summary = lines[#lines]
    assert.is_true(summary.summary)
    assert.near(110, summary.sent, 10)
    assert.ge(#lines, 5, "four intervals and the summary")
  end)
end)

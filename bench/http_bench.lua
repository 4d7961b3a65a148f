-- bench/http_bench.lua: GET requests per second through http.get from N tasks (keep-alive)
-- against a local NGINX serving a small static file, with wrk against the same server in
-- the same run as the anchor. Usage: ./rollout bench/http_bench.lua [seconds=5] [tasks=50]
--
-- Reference (2 shared cores, Debian 12): wrk -t1 -c50 ~74k req/s; a bare C libcurl-multi +
-- libev client ~31.6k req/s (0.43 x wrk). Target for http.get: >= 0.35 x wrk.
package.path = "./?.lua;" .. package.path
local rollout = require("rollout")
local http = require("rollout.http")
local servers = require("spec.support.servers")

local seconds = tonumber(arg and arg[1]) or 5
local concurrency = tonumber(arg and arg[2]) or 50

local function wrk(url)
  local cmd = string.format("wrk -t1 -c%d -d%ds %s 2>&1", concurrency, math.ceil(seconds), url)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
  if not rps then error("could not read wrk's output:\n" .. out) end
  return rps, tonumber(out:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0
end

local function ours(url, duration)
  local done, failed, last_err = 0, 0, nil
  local deadline = rollout.now() + duration
  local tasks = {}
  local t0 = rollout.now()
  for i = 1, concurrency do
    tasks[i] = rollout.spawn(function()
      while rollout.now() < deadline do
        local res, err = http.get(url)
        if res and res.status == 200 then done = done + 1
        else failed = failed + 1; last_err = err or res.status end
      end
    end)
  end
  rollout.wait_all(tasks)
  return done / (rollout.now() - t0), failed, last_err
end

local ng = assert(servers.nginx{ files = { ["index.html"] = "Hello, world\n" } })
local url = ng.url .. "/index.html"
local ok, err = pcall(function()
  ours(url, 0.5) -- warm up: connections, pool, page cache
  local wrk_rps, wrk_bad = wrk(url)
  local rps, failed, last_err = ours(url, seconds)
  local ratio = rps / wrk_rps
  print(string.format("http.get   %3d tasks, %g s: %9.0f req/s  (%d failed%s)", concurrency, seconds, rps,
    failed, last_err and ", last: " .. tostring(last_err) or ""))
  print(string.format("wrk -t1 -c%d -d%gs:        %9.0f req/s  (%d non-2xx)", concurrency, seconds, wrk_rps, wrk_bad))
  print(string.format("ratio http.get / wrk: %.2f   (target >= 0.35; bare libcurl-multi + libev: 0.43)", ratio))
end)
ng:stop()
if not ok then error(err, 0) end

-- bench/routers_bench.lua: how long a traffic shift takes, from set_weights to confirmed.
-- Usage: ./rollout bench/routers_bench.lua [haproxy_shifts=200] [nginx_shifts=20]
--
--   HAProxy: set_weights -> `set weight` x2 -> `get weight` read-back equal. Target: median
--     <= 5 ms. Anchor: one bare runtime-API round trip (`show cli level`) in the same run:
--     a shift is ~4 of them (read current, set, read back), so ~4x the anchor is the floor.
--   NGINX: set_weights -> write include, `nginx -t`, reload, status shows the new generation
--     twice. Target: median <= 500 ms. Beside it, in the same run, when a request through the
--     proxy first reached the new weights (an independent probe, shifting 0 <-> 100 so one
--     response tells), and the anchor `nginx -t` alone (the fixed cost of validating).
package.path = "./?.lua;" .. package.path
local rollout = require("rollout")
local http = require("rollout.http")
local net = require("rollout.net")
local proc = require("rollout.proc")
local routers = require("rollout.routers")
local support = require("spec.support.routers_support")

local haproxy_shifts = tonumber(arg and arg[1]) or 200
local nginx_shifts = tonumber(arg and arg[2]) or 20

local function stats(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  return s[(#s + 1) // 2], s[#s]
end

local function ms(t0) return (rollout.now() - t0) * 1000 end

local function bench_haproxy(b)
  local hx = support.haproxy(b)
  local ok, err = pcall(function()
    local r = routers.new{ type = "haproxy", socket = hx.socket, backend = "be", baseline = "baseline", canary = "canary" }
    local anchor, shift = {}, {}
    for i = 1, haproxy_shifts do
      local t0 = rollout.now()
      local c = assert(net.connect_unix(hx.socket, 2))
      c:send("show cli level\n")
      c:receive("a", 2)
      c:close()
      anchor[#anchor + 1] = ms(t0)
      t0 = rollout.now()
      assert(r:set_weights{ canary = (i % 4 + 1) * 25 - 20 }) -- 5, 30, 55, 80
      shift[#shift + 1] = ms(t0)
    end
    local med, max = stats(shift)
    local amed, amax = stats(anchor)
    print(string.format("haproxy  set_weights -> confirmed  %4d shifts: median %6.2f ms  max %6.2f ms  (target <= 5 ms median)",
      #shift, med, max))
    print(string.format("         anchor: one runtime-API round trip  median %6.2f ms  max %6.2f ms  (shift = %.1f x anchor)",
      amed, amax, med / amed))
  end)
  support.cleanup(hx)
  if not ok then error(err, 0) end
end

local function bench_nginx(b)
  local ng = support.nginx_proxy(b)
  local ok, err = pcall(function()
    local r = routers.new(ng.cfg)
    local confirm, serve, anchor = {}, {}, {}
    for i = 1, nginx_shifts do
      local p = (i % 2 == 1) and 100 or 0
      local want = p == 100 and "v2" or "v1"
      -- The probe: fresh connections through the proxy until one answers with the version
      -- the new weights send everything to.
      local t0 = rollout.now()
      local probe = rollout.spawn(function()
        while true do
          local res = http.request{ url = ng.url .. "/", headers = { Connection = "close" }, timeout = 2 }
          if res and res.body:match("^(%w+)") == want then return ms(t0) end
          rollout.sleep(0.002)
        end
      end)
      assert(r:set_weights{ baseline = 100 - p, canary = p })
      confirm[#confirm + 1] = ms(t0)
      serve[#serve + 1] = assert(probe:wait(10))
      local a0 = rollout.now()
      assert(proc.run{ argv = r:_nginx_argv("-t", "-q") })
      anchor[#anchor + 1] = ms(a0)
    end
    local cmed, cmax = stats(confirm)
    local smed, smax = stats(serve)
    local amed, amax = stats(anchor)
    print(string.format("nginx    set_weights -> confirmed  %4d shifts: median %6.0f ms  max %6.0f ms  (target <= 500 ms median)",
      #confirm, cmed, cmax))
    print(string.format("         first request on new weights        median %6.0f ms  max %6.0f ms", smed, smax))
    print(string.format("         anchor: nginx -t alone              median %6.0f ms  max %6.0f ms  (shift = %.1f x anchor)",
      amed, amax, cmed / amed))
  end)
  support.cleanup(ng)
  if not ok then error(err, 0) end
end

local b = support.backends()
local ok, err = pcall(function()
  bench_haproxy(b)
  bench_nginx(b)
end)
b.stop()
if not ok then io.stderr:write("routers_bench: ", tostring(err), "\n"); return 3 end
return 0

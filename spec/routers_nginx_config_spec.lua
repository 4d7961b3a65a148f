-- routers.nginx against a real NGINX (2 workers) in front of two sample-service backends,
-- without load: validation, the include file it writes, confirmation by generation, verify,
-- and faults (a generation that never goes live, NGINX not running, check()). The cases
-- that count requests under load are in spec/routers_nginx_spec.lua, which runs alone.
local rollout = require("rollout")
local fs = require("rollout.fs")
local nginx = require("rollout.routers.nginx")
local routers = require("rollout.routers")
local support = require("spec.support.routers_support")

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

describe("routers.nginx", function()
  local backends, ng

  local function new(extra, opts)
    local cfg = {}
    for k, v in pairs(ng.cfg) do cfg[k] = v end
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return routers.new(cfg, opts)
  end

  setup(function()
    backends = support.backends()
    ng = support.nginx_proxy(backends)
  end)
  teardown(function()
    support.cleanup(ng)
    backends.stop()
  end)
  before_each(function()
    local r = new()
    assert(r:set_weights{ baseline = 100, canary = 0 })
    assert(r:header_override(false))
  end)

  describe("validate", function()
    it("names each bad key by its path", function()
      assert.same({
        "canary[2]: expected an address (\"host:port\" or \"unix:/path\"), got 5",
        "include: required string (path of the file the router writes)",
        "reload_timeout: expected a duration (seconds or \"250ms\", \"5m\", \"1h30m\"), got boolean",
        "status: expected \"host:port\", got \"8080\"",
        "upstream: must be letters, digits, '_', '.' or '-'",
      }, nginx.validate{ type = "nginx", upstream = "a b", baseline = "127.0.0.1:1", canary = { "127.0.0.1:2", 5 },
        status = "8080", reload_timeout = true })
      assert.same({}, nginx.validate(ng.cfg))
    end)
  end)

  describe("the include file", function()
    it("writes weights, down for 0, the override map and the status location", function()
      local cfg = { upstream = "app", baseline = "10.0.0.1:80", canary = { "10.0.0.2:80", "10.0.0.3:80" },
        include = "/x", status = "127.0.0.1:9000" }
      local text = nginx.render(cfg, { baseline = 95, canary = 5 }, 7, { name = "X-Canary", value = "true" })
      assert.matches("# rollout%-generation: 7\n", text)
      -- two canary servers: each side's total keeps the 95 : 5 ratio
      assert.matches("server 10%.0%.0%.1:80 weight=190;", text)
      assert.matches("server 10%.0%.0%.2:80 weight=5;", text)
      assert.matches("server 10%.0%.0%.3:80 weight=5;", text)
      assert.matches("map %$http_x_canary %$rollout_app {\n    default app;\n    \"true\" app_canary;\n}", text)
      assert.matches("listen 127%.0%.0%.1:9000;", text)
      assert.matches('"generation":7,"baseline":95,"canary":5', text)
      local zero = nginx.render(cfg, { baseline = 100, canary = 0 }, 8, false)
      assert.matches("server 10%.0%.0%.2:80 down;", zero)
      assert.matches('"header":null', zero)
      assert.is_nil(zero:find("app_canary;", 1, true))
    end)
  end)

  describe("weights", function()
    it("confirms by the generation the new workers serve, with a reload event", function()
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      local before = select(2, r:get_weights()).generation
      local times = {}
      for i = 1, 8 do
        local t0 = rollout.now()
        assert(r:set_weights{ canary = i % 2 == 0 and 25 or 50 })
        times[#times + 1] = (rollout.now() - t0) * 1000
      end
      local after = select(2, r:get_weights()).generation
      assert.equals(before + 8, after)
      assert.equals(8, rec.count("reload"))
      assert.equals(after, rec.last("reload").generation)
      local med = median(times)
      print(string.format("      nginx set -> confirmed: median %.0f ms, max %.0f ms", med, times[#times]))
      assert.lt(med, 2000)
    end, { timeout = 60 })

    it("re-applies confirmed weights when the live config differs (verify)", function()
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      assert(r:set_weights{ baseline = 50, canary = 50 })
      assert(new():set_weights{ baseline = 90, canary = 10 }) -- someone else
      assert(r:verify())
      assert.equals(1, rec.count("weights_reapplied"))
      assert.same({ baseline = 90, canary = 10 }, rec.last("weights_reapplied").observed)
      assert.same({ baseline = 50, canary = 50 }, (r:get_weights()))
    end, { timeout = 60 })
  end)

  describe("faults", function()
    it("fails when the new generation never goes live", function()
      -- The status location moves to a port a backend holds: `nginx -t` passes (it does not
      -- bind), the reload fails to bind, and the old config keeps serving. The router never
      -- sees its generation, reports that, and puts the previous file back.
      local r = new()
      assert(r:set_weights{ baseline = 75, canary = 25 })
      local before = fs.read(ng.include)
      local moved = new{ status = backends.v1, reload_timeout = 0.5 }
      local ok, err = moved:set_weights({ baseline = 50, canary = 50 }, { attempts = 1 })
      assert.is_nil(ok)
      assert.matches("not live 0%.5 s after the reload", err)
      assert.equals(before, fs.read(ng.include))
      assert.same({ baseline = 75, canary = 25 }, (r:get_weights()))
      assert(r:set_weights{ baseline = 50, canary = 50 }, "the router still works afterwards")
    end, { timeout = 60 })

    it("fails when NGINX is not running", function()
      local r = new{ pid_file = ng.dir .. "/missing.pid" }
      local ok, err = r:set_weights({ baseline = 50, canary = 50 }, { attempts = 1 })
      assert.is_nil(ok)
      assert.matches("reload failed: NGINX pid file: .*missing%.pid", err)
      assert.same({ baseline = 100, canary = 0 }, (new():get_weights()))
    end)

    it("check() names what is wrong", function()
      local function by_name(items)
        local t = {}
        for _, i in ipairs(items) do t[i.name] = i end
        return t
      end
      local good = by_name(new():check())
      for name, i in pairs(good) do assert.is_true(i.ok, name .. ": " .. tostring(i.detail)) end
      local bad = by_name(new{ include = "/nonexistent/dir/app.conf", status = "127.0.0.1:1",
        conf = ng.dir .. "/missing.conf" }:check())
      assert.is_false(bad["include writable"].ok)
      assert.matches("cannot create files in /nonexistent/dir", bad["include writable"].detail)
      assert.is_false(bad["config valid"].ok)
      assert.matches("missing%.conf", bad["config valid"].detail)
      assert.is_false(bad["status endpoint"].ok)
      assert.is_false(bad["include managed"].ok)
    end)
  end)
end)

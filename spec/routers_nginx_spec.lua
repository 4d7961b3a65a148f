-- rollout-test: serial (counts requests at 2,500 req/s through reloads)
-- routers.nginx against a real NGINX (2 workers) in front of two sample-service backends
-- (v1 = baseline, v2 = canary): the router writes the upstream include, checks it with
-- `nginx -t`, reloads, and confirms through the status location that the new generation
-- serves. Load from ./loadgen. The cases here count requests under load, so this file runs
-- alone; spec/routers_nginx_config_spec.lua has the ones that send no load.
local rollout = require("rollout")
local fs = require("rollout.fs")
local routers = require("rollout.routers")
local support = require("spec.support.routers_support")

local function share(summary)
  local v1, v2 = summary.by_body.v1 or 0, summary.by_body.v2 or 0
  return 100 * v2 / math.max(1, v1 + v2), v1 + v2
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

  describe("weights", function()
    it("sends each stage's share of 2,000+ requests to the canary within 2 points", function()
      local r = new()
      for _, p in ipairs({ 5, 25, 50, 75, 100 }) do
        assert(r:set_weights{ baseline = 100 - p, canary = p })
        assert.same({ baseline = 100 - p, canary = p }, (r:get_weights()))
        local s = support.load(ng.url .. "/", { rps = 2500, duration = 1 })
        local got, n = share(s)
        print(string.format("      nginx %3d %%: canary share %6.2f %% of %d requests, %d failed", p, got, n, s.failed))
        assert.ge(n, 2000, "requests at " .. p .. " %")
        assert.near(p, got, 2, "canary share at " .. p .. " %")
      end
    end, { timeout = 120 })
  end)

  describe("header override", function()
    it("sends every flagged request to the canary at 5 %", function()
      local r = new()
      assert(r:set_weights{ baseline = 95, canary = 5 })
      assert(r:header_override{ name = "canary", value = "true" })
      local flagged = support.load(ng.url .. "/", { rps = 2000, duration = 1, headers = { "canary: true" } })
      print(string.format("      nginx flagged at 5 %%: %d of %d to the canary", flagged.by_body.v2 or 0, flagged.ok))
      assert.gt(flagged.ok, 1500)
      assert.equals(flagged.ok, flagged.by_body.v2)
      local plain = support.load(ng.url .. "/", { rps = 2000, duration = 1 })
      assert.near(5, share(plain), 2)
      -- the override survives a weight change (it lives in the same file)
      assert(r:set_weights{ baseline = 100, canary = 0 })
      local at0 = support.load(ng.url .. "/", { rps = 1000, duration = 0.5, headers = { "canary: true" } })
      assert.equals(at0.ok, at0.by_body.v2)
    end, { timeout = 60 })
  end)

  describe("under load", function()
    it("reports failed requests per reload while weights step 5 -> 100 -> 0", function()
      local r = new()
      local steps = { 5, 25, 50, 75, 100, 75, 50, 25, 5, 0 }
      local load = support.load_async(ng.url .. "/", { rps = 2000, duration = #steps * 0.5 + 0.6, connections = 64 })
      rollout.sleep(0.3)
      for _, p in ipairs(steps) do
        assert(r:set_weights{ baseline = 100 - p, canary = p })
        rollout.sleep(0.5)
      end
      local s = load:wait()
      print(string.format("      nginx under load: %d requests, %d failed over %d reloads = %.1f failed per reload "
        .. "(5xx %d, other %d, conn %d, timeouts %d; loadgen dropped %d)", s.sent, s.failed, #steps, s.failed / #steps,
        s.errors_5xx or 0, s.errors_other or 0, s.conn_errors or 0, s.timeouts or 0, s.dropped or 0))
      assert.gt(s.sent, 5000)
      assert.gt(s.by_body.v2 or 0, 1000)
    end, { timeout = 90 })
  end)

  describe("faults", function()
    it("leaves the old weights when NGINX refuses the config, and says why", function()
      local r = new()
      assert(r:set_weights{ baseline = 75, canary = 25 })
      local before = fs.read(ng.include)
      local bad = new{ server_options = "max_fails=lots" }
      local rec = support.recorder()
      bad.emit_fn = rec.emit
      local ok, err = bad:set_weights({ baseline = 50, canary = 50 }, { attempts = 2, backoff = 0.01 })
      assert.is_nil(ok)
      assert.matches("NGINX refused the new config", err)
      assert.matches("invalid parameter \"max_fails=lots\"", err)
      assert.equals(2, rec.count("router_error"))
      assert.equals(before, fs.read(ng.include), "the previous include is back")
      assert.same({ baseline = 75, canary = 25 }, (r:get_weights()))
      local s = support.load(ng.url .. "/", { rps = 2000, duration = 1 })
      assert.near(25, share(s), 2, "still serving the old weights")
      local items = bad:check()
      for _, i in ipairs(items) do assert.is_true(i.ok, i.name .. " " .. tostring(i.detail)) end -- the file on disk is fine
    end, { timeout = 60 })


  end)
end)

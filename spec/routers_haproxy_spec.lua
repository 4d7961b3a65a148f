-- routers.haproxy against a real HAProxy (runtime API on a Unix socket) in front of two
-- sample-service backends (v1 = baseline, v2 = canary), load from ./loadgen.
local rollout = require("rollout")
local fs = require("rollout.fs")
local haproxy = require("rollout.routers.haproxy")
local routers = require("rollout.routers")
local support = require("spec.support.routers_support")

local function share(summary)
  local v1, v2 = summary.by_body.v1 or 0, summary.by_body.v2 or 0
  return 100 * v2 / math.max(1, v1 + v2), v1 + v2
end

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

describe("routers.haproxy", function()
  local backends, hx

  local function new(extra, opts)
    local cfg = { type = "haproxy", socket = hx.socket, backend = "be", baseline = "baseline", canary = "canary",
      override_acl = hx.acl, override_header = "canary" }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return routers.new(cfg, opts)
  end

  setup(function()
    backends = support.backends()
    hx = support.haproxy(backends)
  end)
  teardown(function()
    support.cleanup(hx)
    backends.stop()
  end)
  before_each(function()
    if not hx.server or hx.server.stopped then hx.start() end
    local r = new()
    assert(r:set_weights{ baseline = 100, canary = 0 })
    assert(r:header_override(false))
  end)

  describe("validate", function()
    it("names each bad key by its path, with no side effects", function()
      assert.same({ "backend: required string", "bogus: unknown key", "socket: expected a string, got integer" },
        haproxy.validate{ type = "haproxy", socket = 3, baseline = "a", canary = "b", bogus = true })
      assert.same({ "canary: must differ from baseline" },
        haproxy.validate{ socket = "/x", backend = "be", baseline = "a", canary = "a" })
      assert.same({ "type: unknown router type 'haproxyy' (one of exec, haproxy, istio, nginx)" },
        routers.validate{ type = "haproxyy" })
      assert.has_error(function() routers.new{ type = "haproxy" } end, "socket: required")
    end)

    it("raises on weights that are not a split of 100", function()
      local r = new()
      assert.has_error(function() r:set_weights{ baseline = 80, canary = 30 } end, "must be 100")
      assert.has_error(function() r:set_weights{ canary = 120 } end, "0..100")
      assert.has_error(function() r:set_weights({ canary = 5 }, { bogus = 1 }) end, "unknown option bogus")
    end)
  end)

  describe("weights", function()
    it("maps percent to absolute weights and reads them back", function()
      local r = new()
      assert(r:set_weights{ baseline = 75, canary = 25 })
      local w, detail = r:get_weights()
      assert.same({ baseline = 75, canary = 25 }, w)
      assert.same({ baseline = 75, canary = 25 }, detail.absolute)
      assert.same({ baseline = 100, canary = 0 }, detail.initial)
      assert(r:set_weights{ canary = 100 })
      assert.same({ baseline = 0, canary = 100 }, (r:get_weights()))
    end)

    it("sends each stage's share of 2,000+ requests to the canary within 2 points", function()
      local r = new()
      for _, p in ipairs({ 5, 25, 50, 75, 100 }) do
        assert(r:set_weights{ baseline = 100 - p, canary = p })
        -- 3,000 due: a busy neighbour (spec files run side by side) may delay a few
        local s = support.load(hx.url .. "/", { rps = 2500, duration = 1.2 })
        local got, n = share(s)
        print(string.format("      haproxy %3d %%: canary share %6.2f %% of %d requests, %d failed", p, got, n, s.failed))
        assert.ge(n, 2000, "requests at " .. p .. " %")
        assert.equals(0, s.failed)
        assert.near(p, got, 2, "canary share at " .. p .. " %")
      end
    end, { timeout = 120 })

    it("emits requested and confirmed events with the numbers", function()
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      assert(r:set_weights{ baseline = 50, canary = 50 })
      assert.same({ "weight_requested", "weight_confirmed" }, rec.kinds())
      local f = rec.last("weight_confirmed")
      assert.same({ baseline = 50, canary = 50 }, f.requested)
      assert.same({ baseline = 50, canary = 50 }, f.observed)
      assert.equals(1, f.attempt)
      assert.is_number(f.elapsed)
      assert.equals("haproxy", f.router)
      assert.is_nil(f.rollback)
      rec.clear()
      assert(r:set_weights({ baseline = 100, canary = 0 }, { attempts = 1, rollback = true }))
      assert.is_true(rec.last("weight_confirmed").rollback, "the engine's rollback flag marks the events")
    end)

    it("confirms a shift in a few milliseconds", function()
      local r = new()
      local times = {}
      for i = 1, 40 do
        local t0 = rollout.now()
        assert(r:set_weights{ canary = i % 2 == 0 and 25 or 50 })
        times[#times + 1] = (rollout.now() - t0) * 1000
      end
      local med = median(times)
      print(string.format("      haproxy confirm latency: median %.2f ms, max %.2f ms", med, times[#times]))
      assert.lt(med, 20)
    end)
  end)

  describe("header override", function()
    it("sends every flagged request to the canary at 5 % and at 0 %", function()
      local r = new()
      assert(r:set_weights{ baseline = 95, canary = 5 })
      assert(r:header_override{ name = "canary", value = "true" })
      local flagged = support.load(hx.url .. "/", { rps = 2000, duration = 1, headers = { "canary: true" } })
      print(string.format("      haproxy flagged at 5 %%: %d of %d to the canary", flagged.by_body.v2 or 0, flagged.sent))
      assert.equals(flagged.ok, flagged.by_body.v2, "every flagged request reached the canary")
      assert.gt(flagged.ok, 1500)
      local plain = support.load(hx.url .. "/", { rps = 2000, duration = 1, headers = { "canary: false" } })
      assert.near(5, share(plain), 2, "unflagged traffic keeps the weights")
      assert(r:set_weights{ baseline = 100, canary = 0 })
      local at0 = support.load(hx.url .. "/", { rps = 1000, duration = 0.5, headers = { "canary: true" } })
      assert.equals(at0.ok, at0.by_body.v2, "flagged requests reach the canary at weight 0 too")
    end, { timeout = 60 })

    it("reads the override back and refuses a header the config does not match", function()
      local r = new()
      assert(r:header_override{ name = "canary", value = "yes" })
      assert(r:header_override{ name = "canary", value = "true" })
      local d = r:describe()
      assert.same({ name = "canary", value = "true" }, d.live_header_override)
      local ok, err = r:header_override({ name = "x-other", value = "1" }, { attempts = 1 })
      assert.is_nil(ok)
      assert.matches("matches header 'canary'", err)
      assert.has_error(function() r:header_override{ name = "canary", value = "a b" } end, "without spaces")
    end)
  end)

  describe("under load", function()
    it("loses no request while weights step 5 -> 100 -> 0", function()
      local r = new()
      local steps = { 5, 25, 50, 75, 100, 75, 50, 25, 5, 0 }
      local load = support.load_async(hx.url .. "/", { rps = 2000, duration = #steps * 0.3 + 0.6, connections = 64 })
      rollout.sleep(0.3)
      for _, p in ipairs(steps) do
        assert(r:set_weights{ baseline = 100 - p, canary = p })
        rollout.sleep(0.3)
      end
      local s = load:wait()
      print(string.format("      haproxy under load: %d requests, %d failed, %d v1 / %d v2, across %d shifts (loadgen dropped %d: all connections busy)",
        s.sent, s.failed, s.by_body.v1 or 0, s.by_body.v2 or 0, #steps, s.dropped or 0))
      assert.gt(s.sent, 5000)
      assert.equals(0, s.failed, "failed requests")
      assert.gt(s.by_body.v2 or 0, 1000)
    end, { timeout = 60 })
  end)

  describe("faults", function()
    it("names a missing socket path", function()
      local path = hx.dir .. "/missing.sock"
      local r = new{ socket = path }
      local ok, err = r:set_weights({ baseline = 95, canary = 5 }, { attempts = 2, backoff = 0.01 })
      assert.is_nil(ok)
      assert.truthy(err:find(path, 1, true), "the error names the path: " .. err)
      assert.matches("2 attempts", err)
      local items = r:check()
      assert.equals("socket", items[1].name)
      assert.is_false(items[1].ok)
      assert.truthy(items[1].detail:find(path, 1, true), items[1].detail)
    end)

    it("fails while HAProxy is down and re-applies on its return", function()
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      assert(r:set_weights{ baseline = 75, canary = 25 })
      hx.kill()
      local ok, err = r:set_weights({ baseline = 50, canary = 50 }, { attempts = 3, backoff = 0.01 })
      assert.is_nil(ok)
      assert.matches("unreachable", err)
      assert.equals(3, rec.count("router_error"))
      assert.same({ baseline = 75, canary = 25 }, r:confirmed(), "the last confirmed weights stand")
      local vok, verr = r:verify()
      assert.is_nil(vok)
      assert.matches("unreachable", verr)
      hx.start() -- back with its config weights, 100 / 0
      assert.same({ baseline = 100, canary = 0 }, (r:get_weights()))
      rec.clear()
      assert(r:verify())
      assert.equals(1, rec.count("weights_reapplied"))
      local f = rec.last("weights_reapplied")
      assert.same({ baseline = 100, canary = 0 }, f.observed)
      assert.same({ baseline = 75, canary = 25 }, f.requested)
      assert.same({ baseline = 75, canary = 25 }, (r:get_weights()))
      assert(r:verify())
      assert.equals(1, rec.count("weights_reapplied"), "nothing to re-apply the second time")
    end, { timeout = 60 })

    it("re-applies a lost header override with the weights", function()
      local r = new()
      assert(r:set_weights{ baseline = 90, canary = 10 })
      assert(r:header_override{ name = "canary", value = "true" })
      hx.stop()
      hx.start()
      assert(r:verify())
      assert.same({ name = "canary", value = "true" }, r:describe().live_header_override)
    end, { timeout = 60 })

    it("keeps retrying a rollback until its deadline", function()
      local rec = support.recorder()
      local r = new{ socket = hx.dir .. "/missing.sock" }
      r.emit_fn = rec.emit
      local t0 = rollout.now()
      local ok, err = r:set_weights({ baseline = 100, canary = 0 }, { deadline = 0.5, backoff = 0.05 })
      local dt = rollout.now() - t0
      assert.is_nil(ok)
      assert.ge(dt, 0.45)
      assert.lt(dt, 1.5)
      assert.ge(rec.count("router_error"), 4, "every attempt is an event")
      assert.matches("not confirmed after %d+ attempts", err)
    end)

    it("rolls back as soon as HAProxy is back, within the deadline", function()
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      assert(r:set_weights{ baseline = 50, canary = 50 })
      hx.kill()
      local restarter = rollout.spawn(function() rollout.sleep(0.7); hx.start() end)
      local t0 = rollout.now()
      assert(r:rollback(10))
      local dt = rollout.now() - t0
      restarter:wait()
      assert.ge(dt, 0.7)
      assert.lt(dt, 5)
      assert.ge(rec.count("router_error"), 2, "the attempts while HAProxy was down")
      assert.same({ baseline = 100, canary = 0 }, r:confirmed())
      assert.same({ baseline = 100, canary = 0 }, (r:get_weights()))
    end, { timeout = 60 })

    it("rejects bad backend and server names in check()", function()
      local function by_name(items)
        local t = {}
        for _, i in ipairs(items) do t[i.name] = i end
        return t
      end
      local good = by_name(new():check())
      for name, i in pairs(good) do assert.is_true(i.ok, name .. ": " .. tostring(i.detail)) end
      assert.truthy(good["backend be"])
      assert.matches("baseline 127.0.0.1:%d+ weight 100, up, ready", good["server be/baseline"].detail)

      local bad_backend = by_name(new{ backend = "nope" }:check())
      assert.is_false(bad_backend["backend nope"].ok)
      assert.matches("Can't find backend", bad_backend["backend nope"].detail)

      local bad_server = by_name(new{ canary = "canary2" }:check())
      assert.is_true(bad_server["server be/baseline"].ok)
      assert.is_false(bad_server["server be/canary2"].ok)
      assert.matches("no server 'canary2' in backend be %(has: baseline, canary%)", bad_server["server be/canary2"].detail)
      local ok, err = new{ canary = "canary2" }:set_weights({ canary = 5 }, { attempts = 1 })
      assert.is_nil(ok)
      assert.matches("No such server", err)

      local bad_acl = by_name(new{ override_acl = "/nope.acl" }:check())
      assert.is_false(bad_acl["override acl /nope.acl"].ok)
    end)

    it("flags a server in maintenance", function()
      local r = new()
      local conn = assert(require("rollout.net").connect_unix(hx.socket, 2))
      conn:send("set server be/canary state maint\n")
      conn:receive("a", 2)
      conn:close()
      finally(function()
        local c = assert(require("rollout.net").connect_unix(hx.socket, 2))
        c:send("set server be/canary state ready\n"); c:receive("a", 2); c:close()
      end)
      local bad
      for _, i in ipairs(r:check()) do if i.name == "server be/canary" then bad = i end end
      assert.is_false(bad.ok)
      assert.matches("maint", bad.detail)
      local d = r:describe()
      assert.equals("maint", d.servers.canary.admin)
    end)
  end)

  it("describes itself", function()
    local r = new()
    assert(r:set_weights{ baseline = 95, canary = 5 })
    local d = r:describe()
    assert.equals("haproxy", d.type)
    assert.same({ baseline = 95, canary = 5 }, d.confirmed)
    assert.same({ baseline = 95, canary = 5 }, d.live)
    assert.equals(5, d.servers.canary.weight)
    assert.equals("up", d.servers.baseline.state)
    assert.is_true(fs.stat(hx.socket) ~= nil)
  end)
end)

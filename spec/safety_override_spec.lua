-- The header override ends with the rollout (issue: traffic safety, item 5). A rollback,
-- an abort and a failed run remove the `canary: true` rule and confirm it by read-back;
-- a promotion removes it once finalize has run. Through the real proxies: HAProxy
-- (demo/stack.lua, `rollout run playbooks/demo.lua`, a canary failing 30 % from
-- stage 2), NGINX (spec/support/routers_support.lua, aborted through the control socket),
-- and Istio against the Kubernetes contract server (a failed finalize, and a promotion).
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")
local support = require("spec.support.routers_support")

local function say(fmt, ...) print("        " .. string.format(fmt, ...)) end

-- The version that answers `/` through url with the header (the body's first word).
local function flagged(url, n)
  local seen = {}
  for _ = 1, n or 10 do
    local r = assert(http.request({ url = url, headers = { canary = "true", Connection = "close" }, timeout = 5 }))
    local v = r.body:match("^(%S+)") or ("HTTP " .. r.status)
    seen[v] = (seen[v] or 0) + 1
  end
  return seen
end

local function removals(events)
  return demo_stack.find(events, "header_override", function(ev) return ev.removed end)
end

local function dump(res_or_events, out)
  local lines = {}
  for _, ev in ipairs(res_or_events.events or res_or_events) do
    if ev.event ~= "router" and ev.event ~= "source" then lines[#lines + 1] = json.encode(ev) end
  end
  return table.concat(lines, "\n"):sub(-5000) .. "\n" .. tostring(out or res_or_events.output or ""):sub(-1500)
end

describe("header override through HAProxy", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  it("is gone after a rollback: `canary: true` reaches the baseline", function()
    s = assert(demo_stack.start({ rps = 200 }))
    local during
    s:on_weight(25, function()
      during = flagged(s.haproxy_proc.url .. "/", 5)
      assert(s.canary:fault({ error_rate = 0.3 }))
    end)
    local sets = s:sets()
    sets[#sets + 1] = 'stages=[{"name":"Ramp-Up","weight":25,"hold":"20s"},{"name":"Full","weight":100,"hold":"2s"}]'
    local res = assert(s:run({ sets = sets, timeout = 60 }))
    assert.equals(1, res.code, dump(res))
    assert.equals("trigger:error_rate", res.reason, dump(res))
    assert.same({ ["v3.0.0"] = 5 }, during, "while the rollout ran the header reached the canary")
    local after = flagged(s.haproxy_proc.url .. "/", 20)
    say("flagged requests after the rollback: %s", json.encode(after))
    assert.same({ ["v2.9.0"] = 20 }, after, "after the rollback the header reaches the baseline")
    local rm = removals(res.events)
    assert.equals(1, #rm, dump(res))
    assert.is_true(rm[1].ok)
    -- removed before the outcome, after 0 % was confirmed
    local out = demo_stack.find(res.events, "outcome")[1]
    assert.is_true(rm[1].ts <= out.ts)
  end, { timeout = 120 })
end)

-- A playbook file for a proxy the spec started: router cfg, versions and sources given.
local function write_playbook(dir, name, fields)
  local pb = {
    name = name, service = name,
    header_override = { name = "canary", value = "true" },
    interval = "500ms", trigger_window = "2s", gate_window = "2s", max_rollback_time = "10s",
    policy = { inconclusive = "rollback" },
  }
  for k, v in pairs(fields) do pb[k] = v end
  local hooks = fields.finalize_fails and 'pb.hooks = { finalize = function() error("finalize failed on purpose") end }\n' or ""
  pb.finalize_fails = nil
  local path = dir .. "/" .. name .. ".lua"
  assert(fs.write_atomic(path, 'local pb = require("rollout.json").decode([==[' .. json.encode(pb) .. ']==])\n'
    .. hooks .. "return pb\n"))
  return path
end

local function spawn_run(dir, playbook)
  local out = dir .. "/run.out"
  local child = assert(proc.spawn({ argv = { rollout.exe, "run", playbook, "--journal", dir .. "/journal",
    "--run-dir", dir .. "/run" }, stdout = out, stderr = out }))
  return child, out
end

-- The run's events so far (none before its journal file exists: the directory comes first).
local function journal_events(dir)
  local file = demo_stack.journal_file(dir .. "/journal")
  return file and demo_stack.read_events(file) or {}
end

describe("header override through NGINX", function()
  local b, ng, dir
  after_each(function()
    support.cleanup(ng); ng = nil
    if b then b.stop() end; b = nil
    if dir then fs.rmtree(dir) end; dir = nil
  end)

  it("is gone after an abort: `canary: true` reaches the baseline", function()
    b = support.backends()
    ng = support.nginx_proxy(b)
    dir = assert(fs.mkdtemp("rollout-override"))
    local pbfile = write_playbook(dir, "override-nginx", {
      versions = {
        baseline = { name = "baseline", version = "v1", url = "http://" .. b.v1, metrics = "http://" .. b.v1 .. "/metrics" },
        canary = { name = "canary", version = "v2", url = "http://" .. b.v2, metrics = "http://" .. b.v2 .. "/metrics" },
      },
      router = ng.cfg,
      sources = { { type = "scrape" } },
      stages = { { name = "Half", weight = 50, hold = "60s" }, { name = "Full", weight = 100, hold = "1s" } },
    })
    local child, out = spawn_run(dir, pbfile)
    local url = "http://127.0.0.1:" .. ng.port .. "/"
    local at50 = demo_stack.wait_for(function()
      local evs = fs.stat(dir .. "/journal") and journal_events(dir) or {}
      return #demo_stack.find(evs, "weight_confirmed", function(ev) return ev.canary == 50 end) > 0
    end, 30, 0.1)
    assert.truthy(at50, "the rollout never reached 50 %:\n" .. tostring(fs.read(out)))
    assert.same({ v2 = 5 }, flagged(url, 5), "while the rollout ran the header reached the canary")
    local sock = dir .. "/run/override-nginx.sock"
    local r = assert(proc.run({ argv = { rollout.exe, "ctl", sock, "abort" }, timeout = 10 }))
    assert.equals(0, r.code, r.stderr)
    local code = child:wait(30)
    local evs = journal_events(dir)
    assert.equals(1, code, dump(evs, fs.read(out)))
    local after = flagged(url, 20)
    say("NGINX: flagged requests after the abort: %s", json.encode(after))
    assert.same({ v1 = 20 }, after, "after the abort the header reaches the baseline")
    assert.is_nil(fs.read(ng.include):find('"true"', 1, true), "the include still maps the header")
    local rm = removals(evs)
    assert.equals(1, #rm, dump(evs))
    assert.is_true(rm[1].ok)
  end, { timeout = 90 })
end)

describe("header override through Istio (contract server)", function()
  local k8s, b, dir
  setup(function()
    k8s = support.contract()
    b = support.backends()
  end)
  teardown(function()
    support.cleanup(k8s)
    if b then b.stop() end
  end)
  before_each(function()
    k8s:control("/_contract/state", support.runbook_state())
    dir = assert(fs.mkdtemp("rollout-override"))
  end)
  after_each(function() if dir then fs.rmtree(dir) end; dir = nil end)

  local function header_routes()
    local n = 0
    for _, route in ipairs(k8s:vs().spec.http) do if route.match then n = n + 1 end end
    return n
  end

  local function run_istio(name, extra)
    local fields = {
      versions = {
        baseline = { name = "baseline", version = "v1", url = "http://" .. b.v1 },
        canary = { name = "canary", version = "v2", url = "http://" .. b.v2 },
      },
      router = { type = "istio", api = k8s.api, ca_file = k8s.ca, token_file = k8s.token_file,
        namespace = "production", virtualservice = "dwcp-v3", baseline = "dwcp-v3-baseline",
        canary = "dwcp-v3-canary", poll_interval = 0.05 },
      -- no traffic flows through a contract server: synthetic requests are the only evidence
      sources = { { type = "probe", rate = 20, health_interval = "500ms" } },
      stages = { { name = "Full", weight = 100, hold = "1s" } },
    }
    for k, v in pairs(extra or {}) do fields[k] = v end
    if fields.strategy == "blue_green" then fields.stages = nil end
    local child, out = spawn_run(dir, write_playbook(dir, name, fields))
    local code = child:wait(60)
    return code, journal_events(dir), fs.read(out)
  end

  it("is gone after a failed run (finalize failed)", function()
    local code, evs, out = run_istio("override-istio-failed", { finalize_fails = true })
    assert.equals(3, code, dump(evs, out))
    assert.equals("failed", demo_stack.find(evs, "outcome")[1].outcome, dump(evs, out))
    assert.equals(0, header_routes(), "the header route outlived the failed run:\n" .. json.encode(k8s:vs().spec.http))
    local rm = removals(evs)
    assert.equals(1, #rm, dump(evs, out))
    assert.is_true(rm[1].ok)
    assert.equals(0, #k8s:violations())
  end, { timeout = 90 })

  it("is removed after a blue-green promotion (the preview's route ends with it)", function()
    local code, evs, out = run_istio("override-istio-bluegreen", { strategy = "blue_green",
      blue_green = { pre_promotion = { hold = "1s" }, post_promotion = { hold = "1s" }, scale_down_delay = "0s" } })
    assert.equals(0, code, dump(evs, out))
    assert.equals("promoted", demo_stack.find(evs, "outcome")[1].outcome, dump(evs, out))
    assert.equals(0, header_routes(), "the header route outlived the promotion:\n" .. json.encode(k8s:vs().spec.http))
    local rm = removals(evs)
    assert.equals(1, #rm, dump(evs, out))
    assert.is_true(rm[1].ok)
    assert.equals(0, #k8s:violations())
  end, { timeout = 90 })

  it("is removed after a promotion, once finalize has run", function()
    local code, evs, out = run_istio("override-istio-promoted")
    assert.equals(0, code, dump(evs, out))
    assert.equals(0, header_routes(), "the header route outlived the promotion:\n" .. json.encode(k8s:vs().spec.http))
    local rm = removals(evs)
    assert.equals(1, #rm, dump(evs, out))
    assert.is_true(rm[1].ok)
    assert.equals(0, #k8s:violations())
  end, { timeout = 90 })
end)

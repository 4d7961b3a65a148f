-- rollout-test: serial (times a re-apply within one interval and a rollback within max_rollback_time)
-- Never promote on evidence the engine does not have (issue: traffic safety, items 1, 2, 9
-- and 10), end to end: `rollout run playbooks/demo.lua` against real HAProxy, two real
-- sample-service processes and load through HAProxy (demo/stack.lua), with short
-- stages set on the command line so that each case takes seconds.
--
--   HAProxy restarted during a hold: the weights are read back and re-applied within one
--   evaluation interval (`weights_reapplied`), and no gate passes on the missing traffic;
--   a canary that HAProxy drains (weight unchanged, no requests) never passes a gate.
--   Frozen canary metrics (the service's /metrics stops advancing): no gate passes on the
--   probe's synthetic requests alone.
--   A hung HAProxy (SIGSTOP) during a rollback: the rollback gives up within
--   max_rollback_time (5 s in the demo), the journal holds the weights last read back, and
--   nothing queued applies later.
--   Sources that cannot answer: `rollout check` fails, `run` shifts no traffic.
local rollout = require("rollout")
local net = require("rollout.net")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

local function say(fmt, ...) print("        " .. string.format(fmt, ...)) end

local function dump(res)
  if not res then return "(no run)" end
  local lines = {}
  for _, ev in ipairs(res.events or {}) do
    if ev.event ~= "router" and ev.event ~= "source" and ev.event ~= "log" then
      lines[#lines + 1] = require("rollout.json").encode(ev)
    end
  end
  return string.format("exit %s %s, outcome %s (%s)\n%s\n%s", tostring(res.code), tostring(res.signal or ""),
    tostring(res.outcome), tostring(res.reason), table.concat(lines, "\n"):sub(-6000), (res.output or ""):sub(-1500))
end

local THRESHOLDS = '"thresholds":{"health":0.98,"error_rate":"2%","p99":"600ms"}'
local function stage(name, weight, hold)
  return string.format('{"name":"%s","weight":%d,"hold":"%s",%s}', name, weight, hold, THRESHOLDS)
end

-- `rollout run playbooks/demo.lua` on the stack with these stages and extra --set values.
local function run(s, stages, extra, opts)
  local sets = s:sets({ extra = extra })
  sets[#sets + 1] = "stages=[" .. table.concat(stages, ",") .. "]"
  local o = { sets = sets, timeout = 60 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(s:run(o))
end

local function haproxy_cli(s, line)
  local conn = assert(net.connect_unix(s.haproxy_proc.socket, 2))
  conn:send(line .. "\n")
  local reply = conn:receive("a", 2)
  conn:close()
  return reply
end

local function signal(pid, sig)
  local r = proc.run({ argv = { "kill", "-" .. sig, tostring(pid) }, timeout = 5 })
  assert(r and r.code == 0, "kill -" .. sig .. " " .. pid)
end

-- Restart HAProxy on the same port and socket (its runtime weights and ACL are lost: it
-- comes back with the config's baseline 100 / canary 0). Returns when the new process
-- answers on its admin socket, with that time (epoch).
local function restart_haproxy(s)
  local old = s.haproxy_proc
  old:stop(3)
  local p = assert(s:spawn("haproxy-2", { "haproxy", "-db", "-f", old.cfg }))
  p.socket, p.acl, p.cfg, p.exporter, p.port, p.url = old.socket, old.acl, old.cfg, old.exporter, old.port, old.url
  s.haproxy_proc = p
  local up = demo_stack.wait_for(function()
    local conn = net.connect_unix(p.socket, 0.2)
    if not conn then return nil end
    conn:send("show cli level\n")
    local r = conn:receive("a", 0.5)
    conn:close()
    return r and r:find("admin") and rollout.time()
  end, 10, 0.02)
  return assert(up, "HAProxy did not come back:\n" .. p:tail())
end

local function events(res, name, pred) return demo_stack.find(res.events, name, pred) end

describe("evidence: HAProxy restarted during a hold", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  it("reads the weights back, re-applies them within one interval, and passes no gate on the missing traffic",
    function()
    s = assert(demo_stack.start({ rps = 200 }))
    local restarted_at, up_at, acl
    s:on_weight(50, function()
      rollout.sleep(2.5)
      restarted_at = rollout.time()
      up_at = restart_haproxy(s)
      -- the header override comes back with the weights (promotion removes it later)
      acl = demo_stack.wait_for(function()
        local r = haproxy_cli(s, "show acl " .. s.haproxy_proc.acl)
        return r and r:match("0x%x+ true") and r
      end, 3, 0.05)
    end)
    -- Full holds 3 s: 30 health checks, enough evidence for health >= 0.98 (2 s, 20 checks, is
    -- not: the run would pause at 100 % until the spec's timeout stopped it)
    local res = run(s, { stage("Half", 50, "8s"), stage("Full", 100, "3s") })
    assert.truthy(up_at, "HAProxy was never restarted")
    assert.equals(0, res.code, dump(res))
    assert.equals("promoted", res.outcome, dump(res))
    say("HAProxy restarted at +2.5 s of the hold; back %.2f s later", up_at - restarted_at)
    local re = events(res, "weights_reapplied", function(ev) return ev.by == "evaluation" end)
    assert.is_true(#re >= 1, "no weights_reapplied after the restart:\n" .. dump(res))
    local first = re[1]
    assert.same({ baseline = 50, canary = 50 }, first.want, dump(res))
    assert.same({ baseline = 100, canary = 0 }, first.got, dump(res))
    -- within one evaluation interval (1 s) of HAProxy answering again, plus slack for load
    say("weights_reapplied %.2f s after HAProxy answered again", first.ts - up_at)
    assert.lt(first.ts - up_at, 1.0 + 0.5, "re-applied within one interval")
    local confirmed = events(res, "weight_confirmed", function(ev) return ev.ts >= first.ts and ev.canary == 50 end)
    assert.is_true(#confirmed >= 1, "the re-applied weights were confirmed by read-back:\n" .. dump(res))
    assert.truthy(acl, "the header override is re-applied after the restart")
    -- every gate that passed at 50 % had the canary's share of real requests near its weight
    for _, g in ipairs(events(res, "gate", function(ev) return ev.stage == "Half" end)) do
      if g.result == "pass" then
        assert.is_nil(g.canary_share and g.canary_share.far_below, "a gate passed on missing evidence:\n" .. dump(res))
        assert.truthy(g.canary and g.canary.requests and g.canary.requests > 0)
        say("gate Half passed with canary share %.1f %% of %d requests (weight 50)", g.canary_share.share, g.canary_share.requests)
      end
    end
  end, { timeout = 120 })

  it("never passes a gate while the canary gets far less than its weight (drained in HAProxy)", function()
    s = assert(demo_stack.start({ rps = 200 }))
    s:on_weight(25, function()
      -- weight stays 25 (the read-back agrees), but HAProxy sends the canary nothing
      haproxy_cli(s, "set server " .. demo_stack.BACKEND .. "/canary state drain")
    end)
    local res = run(s, { stage("Ramp-Up", 25, "3s"), stage("Full", 100, "2s") }, { "policy.inconclusive=rollback" })
    local gates = events(res, "gate", function(ev) return ev.stage == "Ramp-Up" end)
    for _, g in ipairs(gates) do
      assert.is_true(g.result ~= "pass", "a gate passed on a canary that got no traffic:\n" .. dump(res))
      assert.is_true(g.canary_share.far_below, dump(res))
    end
    assert.is_true(#gates >= 2, "the hold was extended before it was inconclusive")
    assert.equals(1, res.code, dump(res))
    assert.equals("rolled_back", res.outcome, dump(res))
    assert.equals("inconclusive:canary_share", res.reason, dump(res))
    say("drained canary: %d gates, last share %.2f %% of %d requests at weight 25 -> %s", #gates,
      gates[#gates].canary_share.share, gates[#gates].canary_share.requests, res.reason)
    assert.equals(0, s:canary_weight())
  end, { timeout = 120 })
end)

describe("evidence: frozen canary metrics", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  it("a canary whose /metrics stops advancing never passes a gate on probe requests", function()
    s = assert(demo_stack.start({ rps = 200 }))
    local frozen = assert(s.canary:fault({ metrics_frozen = 1 }))
    assert.is_true(frozen.metrics_frozen)
    local res = run(s, { stage("Ramp-Up", 25, "3s"), stage("Full", 100, "2s") }, { "policy.inconclusive=rollback" })
    local gates = events(res, "gate", function(ev) return ev.stage == "Ramp-Up" end)
    assert.is_true(#gates >= 1, dump(res))
    for _, g in ipairs(gates) do
      assert.is_true(g.result ~= "pass", "a gate passed on frozen canary metrics:\n" .. dump(res))
      -- the scrape saw no new canary requests: no error rate from the probe stands in
      assert.equals(0, g.canary.requests, dump(res))
      assert.is_nil(g.canary.error_rate, dump(res))
    end
    assert.equals(1, res.code, dump(res))
    assert.equals("rolled_back", res.outcome, dump(res))
    assert.matches("^inconclusive:", res.reason, dump(res))
    -- the service did answer real requests all along (only its metrics were frozen)
    local served = s.load:read()
    assert.is_true(#served > 0)
    say("frozen canary: %d gates, none passed; outcome %s", #gates, res.reason)
  end, { timeout = 120 })
end)

describe("maxRollbackTime against a hung HAProxy", function()
  local s, stopped_pid
  after_each(function()
    if stopped_pid then pcall(signal, stopped_pid, "CONT") end
    stopped_pid = nil
    if s then s:stop() end
    s = nil
  end)

  it("gives up within max_rollback_time (5 s), journals the last read-back, and nothing applies later", function()
    s = assert(demo_stack.start({ rps = 200 }))
    local aborted
    s:on_weight(25, function()
      rollout.sleep(1.5) -- a read-back or two at 25 %
      stopped_pid = s.haproxy_proc.pid
      signal(stopped_pid, "STOP")
      local sock = s.dir .. "/run-" .. s.nrun .. "/" .. demo_stack.SERVICE .. ".sock"
      local r = proc.run({ argv = { rollout.exe, "ctl", sock, "abort", "--timeout", "5s" }, timeout = 10 })
      aborted = r and r.code
    end)
    local res = run(s, { stage("Ramp-Up", 25, "20s"), stage("Full", 100, "2s") })
    assert.equals(0, aborted, "rollout ctl abort")
    assert.equals(3, res.code, dump(res))
    assert.equals("failed", res.outcome, dump(res))
    assert.equals("error:rollback_unconfirmed", res.reason, dump(res))
    local started = events(res, "rollback_started")[1]
    local gave_up = events(res, "rollback_unconfirmed")[1]
    local outcome = events(res, "outcome")[1]
    local took = outcome.ts - started.ts
    say("hung HAProxy: rollback gave up after %.2f s (max_rollback_time %s s), %d attempts",
      took, tostring(gave_up.max_rollback_time), gave_up.attempts)
    assert.lt(took, 5 + 0.5, "the whole rollback within max_rollback_time")
    assert.gt(took, 4.0, "it kept trying until the limit")
    -- the journal holds what HAProxy last said
    assert.same({ baseline = 75, canary = 25 }, gave_up.read_back, dump(res))
    assert.truthy(gave_up.read_back_ts)
    -- HAProxy wakes up: nothing queued applies, so it still serves what the journal says
    signal(stopped_pid, "CONT")
    stopped_pid = nil
    rollout.sleep(1.0)
    assert.equals(25, s:canary_weight(), "a write queued in the hung HAProxy applied after we gave up")
    -- the manual rollback reads the proxy, not the journal, and finishes the job
    local argv = { rollout.exe, demo_stack.ROOT .. "/playbooks/rollback.lua", demo_stack.ROOT .. "/playbooks/demo.lua",
      "--reason", "HAProxy hung during the rollback" }
    for _, x in ipairs(s:sets()) do argv[#argv + 1] = "--set"; argv[#argv + 1] = x end
    local r = assert(proc.run({ argv = argv, timeout = 60, cwd = s.dir }))
    assert.equals(0, r.code, (r.stdout or "") .. (r.stderr or ""))
    assert.equals(0, s:canary_weight())
  end, { timeout = 120 })
end)

describe("sources that cannot answer", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  local function check(sets)
    local argv = { rollout.exe, "check", demo_stack.ROOT .. "/playbooks/demo.lua" }
    for _, x in ipairs(sets) do argv[#argv + 1] = "--set"; argv[#argv + 1] = x end
    local r = assert(proc.run({ argv = argv, timeout = 60 }))
    return r.code, (r.stdout or "") .. (r.stderr or "")
  end

  it("rollout check asks every source and fails on one that cannot answer (exit 3)", function()
    s = assert(demo_stack.start({ rps = 50 }))
    local code, out = check(s:sets())
    assert.equals(0, code, out) -- the real sources answer
    assert.matches("ok   source metrics %(scrape, sources%[1%]%)", out)
    assert.matches("ok   source probe %(probe, sources%[2%]%)", out)
    local sets = s:sets()
    sets[#sets + 1] = "sources[1].type=prometheus"
    sets[#sets + 1] = "sources[1].url=http://127.0.0.1:1"
    code, out = check(sets)
    assert.equals(3, code, out)
    assert.matches("FAIL source metrics %(prometheus, sources%[1%]%): [^\n]*127%.0%.0%.1:1", out)
    -- Alertmanager too
    sets = s:sets()
    sets[#sets + 1] = "sources[3].type=alertmanager"
    sets[#sets + 1] = "sources[3].url=http://127.0.0.1:1"
    code, out = check(sets)
    assert.equals(3, code, out)
    assert.matches("FAIL source alertmanager %(alertmanager, sources%[3%]%): [^\n]*127%.0%.0%.1:1", out)
  end, { timeout = 90 })

  it("run shifts no traffic until every source has answered: the monitoring pre-flight check fails", function()
    s = assert(demo_stack.start({ rps = 50 }))
    local res = run(s, { stage("Initial", 5, "2s"), stage("Full", 100, "2s") },
      { "versions.canary.metrics=http://127.0.0.1:1/metrics" }, { timeout = 30 })
    for _, w in ipairs(s.weights) do assert.equals(0, w.canary, "traffic moved:\n" .. dump(res)) end
    assert.equals(0, #events(res, "weight_requested"), dump(res))
    assert.equals("aborted", res.outcome, dump(res))
    assert.equals("preflight:monitoring", res.reason, dump(res))
    assert.equals(3, res.code)
  end, { timeout = 90 })

  it("run shifts no traffic until every source has answered, also without pre-flight checks", function()
    s = assert(demo_stack.start({ rps = 50 }))
    local res = run(s, { stage("Initial", 5, "2s"), stage("Full", 100, "2s") },
      { "versions.canary.metrics=http://127.0.0.1:1/metrics", "preflight=[]" }, { timeout = 30 })
    for _, w in ipairs(s.weights) do assert.equals(0, w.canary, "traffic moved:\n" .. dump(res)) end
    assert.equals(0, #events(res, "weight_requested"), dump(res))
    assert.equals("aborted", res.outcome, dump(res))
    assert.equals("error:sources", res.reason, dump(res))
    local pf = events(res, "sources_checked")[1]
    assert.equals("fail", pf.status)
    assert.matches("127.0.0.1:1", pf.detail)
  end, { timeout = 90 })
end)

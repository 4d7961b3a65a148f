-- rollout-test: serial (times a re-apply within one interval and a rollback within max_rollback_time)
-- Never promote on evidence the engine does not have (issue: traffic safety, items 1, 2, 9
-- and 10), end to end: `rollout run playbooks/demo.lua` against real HAProxy, two real
-- sample-service processes and load through HAProxy (demo/stack.lua), with short
-- stages set on the command line so that each case takes seconds. The cases here time
-- what the engine does, so this file runs alone; spec/safety_evidence_gates_spec.lua has
-- the others (a drained or frozen canary, sources that cannot answer).
--
--   HAProxy restarted during a hold: the weights are read back and re-applied within one
--   evaluation interval (`weights_reapplied`), and no gate passes on the missing traffic.
--   A hung HAProxy (SIGSTOP) during a rollback: the rollback gives up within
--   max_rollback_time (5 s in the demo), the journal holds the weights last read back, and
--   nothing queued applies later.
local rollout = require("rollout")
local net = require("rollout.net")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")
local E = require("spec.support.evidence")
local say, dump, stage, run, haproxy_cli, signal, events = E.say, E.dump, E.stage, E.run, E.haproxy_cli, E.signal, E.events

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

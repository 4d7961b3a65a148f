-- End to end: `rollout run playbooks/demo.lua` (the runbook's policy, time / 60) against real
-- HAProxy, real sample-service processes and real traffic (./loadgen, 200 req/s), and the
-- `make demo` orchestrator itself. Every component comes from demo/stack.lua on free
-- loopback ports in a temp dir, and is stopped in after_each whatever happened.
--
-- Each rollback test prints what it measured: the requests that failed for users while the
-- bad canary was live (loadgen's own count, through HAProxy), and the seconds from the
-- trigger's condition holding (its trigger_pending event + its `for`) to HAProxy confirming
-- canary 0 % (the engine's read-back, cross-checked by our own poll of the runtime API).
-- Bounds are generous: a loaded 2-core machine must not fail them; a broken engine must.
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

local function say(fmt, ...) print("        " .. string.format(fmt, ...)) end

local function dump(res)
  if not res then return "(no run)" end
  local tail = (res.output or ""):sub(-3000)
  return string.format("exit %s %s, outcome %s (%s)\n%s", tostring(res.code), tostring(res.signal or ""),
    tostring(res.outcome), tostring(res.reason), tail)
end

-- The figures of a rolled-back run, printed, and checked against generous bounds.
local function measure(s, res, fault_at, label)
  local t = demo_stack.rollback_timing(res.events)
  assert(t and t.confirmed, "no weight_confirmed canary 0 after rollback_started:\n" .. dump(res))
  -- `rollout run` exits right after its confirmation; our 20 ms poll may be a beat behind
  local polled = demo_stack.wait_for(function() return s:zero_at(fault_at or t.rollback_started) end, 2)
  if not polled then
    local seen = {}
    for _, w in ipairs(s.weights) do seen[#seen + 1] = string.format("%.3f:%d", w.t, w.canary) end
    error(string.format("our own poll of HAProxy never read canary 0 after %.3f (engine: %.3f); it saw %s",
      fault_at or t.rollback_started, t.confirmed, table.concat(seen, " ")))
  end
  s.load:stop()
  local failed, sent = s.load:failed_between(fault_at or t.rollback_started, t.confirmed + 1)
  say("%s: %d of %d requests failed for users while the bad canary was live", label, failed, sent)
  if t.seconds then
    say("%s: condition held (trigger %s pending at +%.2f s, for %s s) -> HAProxy confirmed 0 %%: %.2f s "
      .. "(our poll saw 0 %% %.2f s after the condition held)", label, t.reason:gsub("^trigger:", ""),
      t.pending - (fault_at or t.pending), t["for"], t.seconds, polled - t.holding)
  end
  if fault_at then say("%s: fault -> HAProxy 0 %%: %.2f s", label, t.confirmed - fault_at) end
  -- the engine confirmed by reading back; our poll agrees within a poll period and a bit
  assert.near(t.confirmed, polled, 1.0, "engine's confirmation vs our poll of HAProxy")
  return t, failed, sent
end

describe("end to end on loopback (HAProxy, sample-service, loadgen)", function()
  local s
  after_each(function()
    if s then s:stop() end
    s = nil
  end)

  it("rolls back a canary that fails 20 % of requests from stage 2 (trigger error_rate)", function()
    s = assert(demo_stack.start({ rps = 200 }))
    local fault_at
    s:on_weight(25, function() assert(s.canary:fault({ error_rate = 0.2 })); fault_at = s.canary.fault_at end)
    local res = assert(s:run({ timeout = 90, json = true }))
    assert.equals(1, res.code, dump(res))
    assert.equals("rolled_back", res.outcome, dump(res))
    assert.equals("trigger:error_rate", res.reason, dump(res))
    assert.equals("Ramp-Up", res.stage)
    assert.truthy(fault_at, "the fault was never injected")
    assert.equals(0, s:canary_weight())
    local t, failed = measure(s, res, fault_at, "bad canary")
    -- 20 % of ~50 req/s for the detection time: tens of requests, not hundreds
    assert.gt(failed, 0, "a canary failing 20 % must have failed someone")
    assert.lt(failed, 400)
    -- policy: pending at the first evaluation after the fault, `for` 2 s, then the router
    assert.lt(t.confirmed - fault_at, 8, "fault to 0 %")
    assert.lt(t.seconds, 3.5, "condition held to 0 %")
    -- the summary line (JSON mode) is the last line
    local last = res.output:match("([^\n]+)\n?$")
    assert.matches('"outcome":"rolled_back"', last)
  end, { timeout = 150 })

  it("promotes a healthy canary through all five stages", function()
    s = assert(demo_stack.start({ rps = 200 }))
    -- the demo's stages with shorter holds (5/5/5/3/3 s, not 5/10/15/15/10): each still long
    -- enough for its gate's evidence (health checks, min_samples); make demo runs them in full
    local sets = s:sets({ extra = { "stages[2].hold=5s", "stages[3].hold=5s", "stages[4].hold=3s", "stages[5].hold=3s" } })
    local res = assert(s:run({ timeout = 150, sets = sets }))
    assert.equals(0, res.code, dump(res))
    assert.equals("promoted", res.outcome, dump(res))
    assert.equals(100, s:canary_weight())
    local gates = demo_stack.find(res.events, "gate", function(ev) return ev.result == "pass" end)
    assert.equals(5, #gates, "five gates passed")
    local weights = {}
    for _, w in ipairs(s.weights) do weights[#weights + 1] = w.canary end
    assert.same({ 0, 5, 25, 50, 75, 100 }, weights, "HAProxy saw exactly the runbook's steps")
    s.load:stop()
    local _, summary = s.load:read()
    say("good canary: %d requests through HAProxy, %d failed, promoted at %.1f s", summary.sent, summary.failed, res.at)
    assert.equals(0, summary.failed, "a healthy rollout fails nobody")
    assert.gt(summary.by_body["v3.0.0"] or 0, 0)
  end, { timeout = 240 })

  it("rolls back a crash-looping canary (trigger crash_loop)", function()
    s = assert(demo_stack.start({ rps = 200 }))
    local loop_at
    s:on_weight(5, function() s.canary:crash_loop(1); loop_at = s.canary.crash_loop_at end)
    local res = assert(s:run({ timeout = 90 }))
    assert.equals(1, res.code, dump(res))
    assert.equals("trigger:crash_loop", res.reason, dump(res))
    assert.equals(0, s:canary_weight())
    local fired = demo_stack.find(res.events, "trigger_fired")[1]
    say("crash loop: %d restarts seen by the supervisor; trigger value %s", s.canary.restarts, tostring(fired.value))
    assert.ge(fired.value, 3)
    local t = measure(s, res, loop_at, "crash loop")
    assert.lt(t.confirmed - loop_at, 15)
  end, { timeout = 150 })

  it("rolls back when Alertmanager has a critical alert for the service (trigger critical_alert)", function()
    s = assert(demo_stack.start({ rps = 200, alertmanager = true }))
    local alert_at
    s:on_weight(25, function()
      alert_at = assert(s:post_alert({ alertname = "DWCPDown", severity = "critical", service = demo_stack.SERVICE }))
    end)
    local res = assert(s:run({ timeout = 90 }))
    assert.equals(1, res.code, dump(res))
    assert.equals("trigger:critical_alert", res.reason, dump(res))
    assert.equals(0, s:canary_weight())
    local t = measure(s, res, alert_at, "critical alert")
    -- fires at once (no `for`): the next evaluation, then the router
    assert.lt(t.confirmed - alert_at, 5)
    local fired = demo_stack.find(res.events, "trigger_fired")[1]
    assert.equals("DWCPDown", fired.value)
  end, { timeout = 150 })
end)

describe("make demo's orchestrator (demo/run.lua)", function()
  local function stack_dir(out)
    return out:match("runtime API (/[^ ]+)/haproxy%.sock")
  end

  -- Processes whose command line mentions dir (what the demo started there).
  local function leftovers(dir)
    local found = {}
    for _, pid in ipairs(fs.list("/proc") or {}) do
      if pid:match("^%d+$") then
        local cmd = fs.read("/proc/" .. pid .. "/cmdline")
        if cmd and cmd:find(dir, 1, true) then found[#found + 1] = pid .. ": " .. cmd:gsub("%z", " ") end
      end
    end
    return found
  end

  local child
  after_each(function()
    if child and child:running() then child:kill("KILL"); child:wait(5) end
    child = nil
  end)

  it("rolls the bad canary back, exits 0 ('as designed') and leaves nothing running", function()
    local dir = assert(fs.mkdtemp("rollout-e2e"))
    finally(function() fs.rmtree(dir) end)
    local out = dir .. "/demo.out"
    local argv = { rollout.exe, demo_stack.ROOT .. "/demo/run.lua", "--out", dir .. "/record" }
    child = assert(proc.spawn({ argv = argv, stdout = out, stderr = out, cwd = demo_stack.ROOT }))
    local code = child:wait(120)
    local text = fs.read(out) or ""
    assert.equals(0, code, text)
    assert.matches("outcome: rolled_back %(trigger:error_rate%)", text)
    assert.matches("as designed", text)
    assert.matches("failing canary was live; %d+ failed", text)
    local sd = assert(stack_dir(text), "the demo did not say where its stack lives")
    assert.same({}, leftovers(sd))
    assert.is_nil(fs.stat(sd), "the stack's temp dir is removed")
  end, { timeout = 150 })

  it("stops everything it started on Ctrl-C (SIGINT) mid-rollout", function()
    local dir = assert(fs.mkdtemp("rollout-e2e"))
    finally(function() fs.rmtree(dir) end)
    local out = dir .. "/demo.out"
    local argv = { rollout.exe, demo_stack.ROOT .. "/demo/run.lua", "--good", "--out", dir .. "/record" }
    child = assert(proc.spawn({ argv = argv, stdout = out, stderr = out, cwd = demo_stack.ROOT }))
    local started = demo_stack.wait_for(function() return (fs.read(out) or ""):find("stage Initial", 1, true) end, 60)
    assert(started, "the rollout never reached stage 1:\n" .. (fs.read(out) or ""))
    local sd = assert(stack_dir(fs.read(out)))
    assert.is_true(#leftovers(sd) >= 4, "HAProxy, two services and loadgen run during the demo")
    child:kill("INT")
    local code, how = child:wait(40)
    local text = fs.read(out) or ""
    assert.equals(130, code, tostring(how) .. "\n" .. text)
    assert.matches("SIGINT: stopping everything", text)
    assert.same({}, leftovers(sd))
  end, { timeout = 120 })
end)

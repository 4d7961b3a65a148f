-- Blue-green (strategy = "blue_green", playbooks/blue-green.lua): validation, simulation of
-- the labelled blue-green scenarios through `rollout verify`, and end to end on the real
-- stack (demo/stack.lua: HAProxy, sample services, loadgen at 200 req/s, plus 20 req/s
-- of `canary: true` preview traffic), with our own 20 ms poll of HAProxy's weights.
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")
local bg = require("tools.blue_green_run")

local function say(fmt, ...) print("        " .. string.format(fmt, ...)) end

local function cli(...)
  return assert(proc.run({ argv = { rollout.exe, ... }, timeout = 60 }))
end

local function find(events, kind, pred)
  for _, ev in ipairs(events) do if ev.event == kind and (not pred or pred(ev)) then return ev end end
end

local function dump(res)
  return string.format("exit %s, outcome %s (%s)\n%s", tostring(res and res.code), tostring(res and res.outcome),
    tostring(res and res.reason), ((res and res.output) or ""):sub(-3000))
end

-- the canary weights our poll saw, in order, each once
local function weight_steps(s)
  local out = {}
  for _, w in ipairs(s.weights or {}) do out[#out + 1] = w.canary end
  return out
end

describe("blue-green: the playbook language", function()
  it("checks playbooks/blue-green.lua: two phases, preview at 0 % and active at 100 %", function()
    local r = cli("check", "playbooks/blue-green.lua", "--offline")
    assert.equals(0, r.code, r.stderr)
    assert.matches("2 stages", r.stdout)
  end)

  it("rejects what blue-green cannot use, with file, line and key (exit 2)", function()
    local d = fs.mkdtemp("bg")
    local function pb(body)
      local p = d .. "/pb.lua"
      assert(fs.write_atomic(p, "return {\n  name = 'x', strategy = 'blue_green',\n  versions = { baseline = { version = 'a' }, canary = { version = 'b' } },\n"
        .. "  router = { type = 'exec', set = { 'true' }, get = { 'true' } },\n" .. body .. "\n}\n"))
      return cli("check", p, "--offline")
    end
    local r = pb("  header_override = { name = 'canary', value = 'true' },\n  stages = { { weight = 50, hold = '1m' } },\n"
      .. "  blue_green = { pre_promotion = { hold = '1m', weight = 10 }, post_promotion = { hold = '2m' }, scale_down_delay = 'soon' },")
    assert.equals(2, r.code)
    assert.matches("pb%.lua:6: stages: not used with strategy \"blue_green\"", r.stderr)
    assert.matches("pb%.lua:7: blue_green%.pre_promotion%.weight: not used", r.stderr)
    assert.matches("pb%.lua:7: blue_green%.scale_down_delay: malformed duration", r.stderr)
    r = pb("  blue_green = { pre_promotion = { hold = '1m' }, post_promotion = { hold = '2m' } },")
    assert.equals(2, r.code)
    assert.matches("header_override: required", r.stderr)
    r = pb("  header_override = { name = 'canary', value = 'true' },\n  blue_green = { pre_promotion = { hold = '1m' } },")
    assert.equals(2, r.code)
    assert.matches("blue_green%.post_promotion: required", r.stderr)
    r = pb("  strategy = 'red_black',")
    assert.equals(2, r.code)
    assert.matches("strategy: must be \"canary\" or \"blue_green\"", r.stderr)
    fs.rmtree(d)
  end)

  it("decides the labelled blue-green scenarios as they say (rollout verify, simulated)", function()
    local r = cli("verify", "playbooks/blue-green.lua", "scenarios/blue-green")
    assert.equals(0, r.code, r.stdout .. r.stderr)
    for _, n in ipairs({ "healthy", "bad%-preview", "fails%-after%-switch", "fails%-in%-scale%-down%-delay" }) do
      assert.matches("\n" .. n .. "%s+.-%s+ok\n", r.stdout)
    end
  end)

  it("in simulation: one switch to 100 %, the switch back after a failure, the delay before scale_down", function()
    local sim = require("spec.support.sim")
    local summary, events = sim.simulate("playbooks/blue-green.lua", "scenarios/blue-green/fails-after-switch.lua")
    assert.equals("rolled_back", summary.outcome)
    local w = {}
    for _, ev in ipairs(events) do if ev.event == "weight_confirmed" then w[#w + 1] = ev.canary end end
    assert.same({ 0, 100, 0 }, w)
    summary, events = sim.simulate("playbooks/blue-green.lua", "scenarios/blue-green/healthy.lua")
    assert.equals("promoted", summary.outcome)
    local wait = find(events, "scale_down_waiting")
    local hook = find(events, "hook_skipped", function(e) return e.hook == "scale_down" end)
    assert.truthy(wait and hook)
    assert.equals(300, wait.delay)
    assert.near(wait.t + 300, hook.t, 1e-6)
    -- the journal says which strategy, and the report's type follows it
    assert.equals("blue_green", find(events, "rollout_started").strategy)
    local d = fs.mkdtemp("bg-report")
    local r = assert(proc.run({ argv = { rollout.exe, "simulate", "playbooks/blue-green.lua", "--scenario",
      "scenarios/blue-green/healthy.lua", "--json" }, timeout = 60 }))
    assert(fs.write_atomic(d .. "/run.jsonl", r.stdout))
    r = cli("report", d .. "/run.jsonl", "--markdown", d .. "/report.md", "--json", d .. "/report.json")
    assert.equals(0, r.code, r.stderr)
    assert.matches("%*%*Type:%*%* Blue%-green", fs.read(d .. "/report.md"))
    assert.equals("blue_green", require("rollout.json").decode(fs.read(d .. "/report.json")).strategy)
    fs.rmtree(d)
  end)
end)

describe("blue-green end to end on HAProxy", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  it("a healthy green: preview through the header, one atomic switch, no failed requests at it, blue retired after the delay", function()
    s = assert(demo_stack.start({ rps = 200 }))
    local preview = assert(bg.preview(s, 20))
    local res = bg.run(s, { timeout = 90 })
    assert.equals(0, res.code, dump(res))
    assert.equals("promoted", res.outcome)
    -- the preview: the header rule was set and green answered the preview requests
    local ho = find(res.events, "header_override")
    assert.truthy(ho and ho.ok, "header override set")
    local gate = find(res.events, "gate", function(e) return e.stage == "preview" and e.result == "pass" end)
    assert.truthy(gate, dump(res))
    assert.truthy(gate.canary.rps >= 10, "green saw the preview's 20 req/s, not only the 1/s probe: " .. tostring(gate.canary.rps))
    local pi = preview:read()
    assert.truthy(#pi > 0)
    -- the switch: HAProxy went from canary 0 to 100 with nothing in between
    local sw = assert(bg.switch(res), "no confirmed switch")
    assert.truthy(demo_stack.wait_for(function() return weight_steps(s)[2] == 100 end, 2), "our poll never saw canary 100")
    rollout.sleep(0.2)
    assert.same({ 0, 100 }, weight_steps(s))
    s.load:stop()
    local failed, sent = s.load:failed_between(sw.at - 1, sw.at + 1)
    say("blue-green switch: %d of %d requests failed in the 2 s around it", failed, sent)
    assert.truthy(sent > 100, "load was running at the switch")
    assert.truthy(failed <= 5, "no more than a handful of failed requests at the switch: " .. failed)
    -- blue stays up for the delay, then scale_down
    local wait = assert(find(res.events, "scale_down_waiting"))
    local hook = assert(find(res.events, "hook_started", function(e) return e.hook == "scale_down" end))
    assert.equals(3, wait.delay)
    assert.truthy(hook.t - wait.t >= 3 - 0.05, "scale_down after the delay")
    assert.equals(100, s:canary_weight())
  end, { timeout = 150 })

  it("green fails after the switch: the trigger switches everything back to blue at once", function()
    s = assert(demo_stack.start({ rps = 200 }))
    assert(bg.preview(s, 20))
    local fault_at
    s:on_weight(100, function() assert(s.canary:fault({ error_rate = 0.3 })); fault_at = s.canary.fault_at end)
    local res = bg.run(s, { timeout = 90 })
    assert.equals(1, res.code, dump(res))
    assert.equals("trigger:error_rate", res.reason)
    assert.equals("active", res.stage)
    local sw, back = assert(bg.switch(res)), assert(bg.back(res), "no switch back")
    -- `rollout run` exits right after its confirmation; our 20 ms poll may be a beat behind
    assert.truthy(demo_stack.wait_for(function() return s:zero_at(sw.at) end, 2), "our poll never saw canary 0")
    assert.same({ 0, 100, 0 }, weight_steps(s))
    assert.equals(0, s:canary_weight())
    assert.truthy(fault_at)
    s.load:stop()
    local failed, sent = s.load:failed_between(sw.at, back.at + 1)
    say("blue-green bad green: %d of %d requests failed between the switch and the switch back (%.2f s)", failed, sent, back.at - sw.at)
    assert.truthy(failed > 0, "a green failing 30 % must have failed someone")
    assert.truthy(back.at - fault_at < 8, "fault to switch back: " .. (back.at - fault_at))
    assert.truthy(find(res.events, "hook_started", function(e) return e.hook == "on_rollback" end))
    assert.falsy(find(res.events, "hook_started", function(e) return e.hook == "scale_down" end), "blue is not retired")
  end, { timeout = 150 })
end)

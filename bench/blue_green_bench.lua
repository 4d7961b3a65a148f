-- bench/blue_green_bench.lua: what users see of a blue-green release, beside the canary's
-- figure, on one stack (demo/stack.lua: HAProxy, sample-service v2.9.0 / v3.0.0,
-- ./loadgen at 200 req/s through HAProxy, plus 20 req/s of `canary: true` preview traffic
-- for the blue-green runs), times / 60 as playbooks/demo.lua scales the canary:
--
--   blue-green, healthy green    the failed requests in the 2 s around the switch to 100 %
--                                (one router call; in-flight requests finish on blue)
--   blue-green, bad green        green fails 30 % of requests from the switch: the failed
--                                requests until the trigger switched everything back
--   canary, bad canary           playbooks/demo.lua, the canary fails 30 % from stage 2
--                                (25 %): the failed requests until HAProxy gave it 0 %
--
-- A bad version costs a blue-green release more users than a canary (all traffic is on it
-- until the trigger fires), a healthy one costs nothing at the switch.
--
--   ./rollout bench/blue_green_bench.lua
local ROOT = ((arg and arg[0] or "bench/x"):match("^(.*)/[^/]*$") or "bench") .. "/.."
package.path = ROOT .. "/?.lua;" .. package.path

local rollout = require("rollout")
local demo_stack = require("demo.stack")
local bg = require("tools.blue_green_run")

local RPS, FAULT = 200, { error_rate = 0.3 }

local s, err = demo_stack.start({ rps = RPS, load = false })
if not s then
  print("blue-green: FAILED: " .. tostring(err))
  return 1
end

local function round(label, fault_at_weight, run)
  s:reset()
  s.load = assert(s:loadgen({ rps = RPS }))
  local preview = run == "canary" and nil or assert(bg.preview(s, 20))
  rollout.sleep(1)
  if fault_at_weight then s:on_weight(fault_at_weight, function() assert(s.canary:fault(FAULT)) end) end
  local res
  if run == "canary" then res = assert(s:run({ sets = s:sets(), timeout = 120, json = true }))
  else res = assert(bg.run(s, { timeout = 120 })) end
  rollout.sleep(1) -- our 20 ms poll of HAProxy catches up
  s.load:stop()
  if preview then preview.proc:stop(2) end
  local row = { label = label, outcome = res.outcome, reason = res.reason }
  local sw = bg.switch(res)
  if run == "switch" and sw then
    row.failed, row.sent = s.load:failed_between(sw.at - 1, sw.at + 1)
    row.window = "2 s around the switch"
  elseif fault_at_weight then
    local fault = s.canary.fault_at
    local zero = fault and s:zero_at(fault)
    if fault and zero then
      row.failed, row.sent = s.load:failed_between(fault, zero + 1)
      row.window = string.format("fault -> 0 %%: %.2f s", zero - fault)
    end
  end
  return row
end

local rows = {}
local ok, perr = pcall(function()
  rows[#rows + 1] = round("blue-green, healthy green (switch)", nil, "switch")
  rows[#rows + 1] = round("blue-green, bad green (from the switch)", 100, "blue_green")
  rows[#rows + 1] = round("canary, bad canary (from stage 2)", 25, "canary")
end)
s:stop()
if not ok then
  print("blue-green: FAILED: " .. tostring(perr))
  return 1
end

print(string.format("blue-green vs canary: %d req/s through HAProxy, bad version fails %d %% of its requests, times / 60",
  RPS, math.floor(FAULT.error_rate * 100)))
print(string.format("  %-42s %-12s %12s  %s", "release", "outcome", "failed/sent", "window"))
local bad = false
for _, r in ipairs(rows) do
  print(string.format("  %-42s %-12s %12s  %s", r.label, tostring(r.outcome),
    r.failed and string.format("%d/%d", r.failed, r.sent) or "-", r.window or "(not measured)"))
  if not r.failed then bad = true end
end
if rows[1].failed and rows[1].failed > 5 then
  print(string.format("blue-green: FAILED: %d failed requests at the switch (a handful at most)", rows[1].failed))
  return 1
end
return bad and 1 or 0

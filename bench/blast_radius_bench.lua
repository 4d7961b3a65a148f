-- bench/blast_radius_bench.lua: how many users a bad canary hurts, and for how long, when
-- the engine watches it versus the runbook's shell approach. One run, one stack
-- (demo/stack.lua: HAProxy, sample-service v2.9.0 / v3.0.0, Prometheus scraping both
-- every 1 s, ./loadgen at 200 req/s through HAProxy), the same scripted fault each time: when
-- HAProxy first gives the canary 25 % (stage 2), it starts failing 20 % of its requests.
--
--   engine (scrape)       rollout run playbooks/demo.lua, metrics scraped from the services
--   engine (prometheus)   the same playbook reading the same Prometheus the shell queries
--   runbook shell         spec/fixtures/e2e/runbook_canary.sh: shift, sleep the hold,
--                         validate with curl | jq | bc against Prometheus, roll back
--
-- For each: the failed requests users saw (loadgen's count through HAProxy) and the seconds
-- from the fault to HAProxy serving canary 0 % (our own 20 ms poll of its runtime API), and
-- the ratios to the engine. Anchors from the same run: the runbook only looks at the end of
-- a hold, so its floor is the stage-2 hold (10 s) after the fault; the physical limit of
-- any watcher is one evaluation interval plus the router's confirm time (measured here);
-- the engine adds its policy's `for` (2 s for the error-rate trigger) on top of that.
--
--   ./rollout bench/blast_radius_bench.lua [--rounds N]
local ROOT = ((arg and arg[0] or "bench/x"):match("^(.*)/[^/]*$") or "bench") .. "/.."
package.path = ROOT .. "/?.lua;" .. package.path

local rollout = require("rollout")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

local RPS = 200
local FAULT = { error_rate = 0.2 }
local rounds = 1
for i = 1, #(arg or {}) do if arg[i] == "--rounds" then rounds = tonumber(arg[i + 1]) or 1 end end

for _, exe in ipairs({ "prometheus", "jq", "bc", "curl", "socat" }) do
  local r = proc.run({ argv = { "sh", "-c", "command -v " .. exe }, timeout = 5 })
  if not r or r.code ~= 0 then
    print("blast radius: skipped: " .. exe .. " is not installed (make deps)")
    return 0
  end
end

local s = assert(demo_stack.start({ prometheus = true, load = false }))

local function one(label, runner)
  s:reset()
  rollout.sleep(6) -- Prometheus's [5s] windows forget the previous round
  s.load = assert(s:loadgen({ rps = RPS }))
  rollout.sleep(1)
  s:on_weight(25, function() assert(s.canary:fault(FAULT)) end)
  local t0 = rollout.time()
  local detail = runner()
  local fault = s.canary.fault_at
  rollout.sleep(1) -- our poll (every 20 ms) may not have seen the last change yet
  local zero = fault and s:zero_at(fault)
  s.load:stop()
  local failed, sent = 0, 0
  if fault and zero then failed, sent = s.load:failed_between(fault, zero + 1) end
  local _, summary = s.load:read()
  if fault and not zero then
    local seen = {}
    for _, w in ipairs(s.weights) do seen[#seen + 1] = string.format("%.3f:%d", w.t, w.canary) end
    print(label .. ": no 0 after the fault " .. string.format("%.3f", fault) .. "; HAProxy weights seen: " .. table.concat(seen, " "))
  end
  return { label = label, fault = fault, zero = zero, seconds = zero and fault and zero - fault, failed = failed,
    sent = sent, total_failed = summary and summary.failed, detail = detail, started = t0 }
end

local function engine(sets_opts)
  return function()
    local res = assert(s:run({ sets = s:sets(sets_opts), timeout = 120 }))
    local t = demo_stack.rollback_timing(res.events) or {}
    local confirm
    for _, ev in ipairs(res.events) do
      if ev.event == "rollback_started" then confirm = ev.ts end
      if confirm and ev.event == "weight_confirmed" and ev.canary == 0 then confirm = ev.ts - confirm; break end
    end
    return { outcome = res.outcome, reason = res.reason, confirm = confirm, timing = t,
      output = res.outcome ~= "rolled_back" and res.output or nil }
  end
end

local function shell()
  local r = assert(proc.run({ argv = { "bash", ROOT .. "/spec/fixtures/e2e/runbook_canary.sh", s.haproxy_proc.socket,
    s.prom.url, demo_stack.CANARY }, timeout = 120 }))
  local outcome = r.stdout:find("rolled back at", 1, true) and "rolled_back" or (r.code == 0 and "promoted" or "failed")
  return { outcome = outcome, reason = r.stdout:match("VALIDATION FAILED: ([^\n]+)"), output = r.stdout .. r.stderr }
end

local results = {}
local ok, err = pcall(function()
  for round = 1, rounds do
    local sfx = rounds > 1 and (" #" .. round) or ""
    results[#results + 1] = one("engine (scrape, 1 s evaluations)" .. sfx, engine({}))
    results[#results + 1] = one("engine (Prometheus source)" .. sfx, engine({ prometheus = true }))
    results[#results + 1] = one("runbook shell (sleep, curl|jq|bc)" .. sfx, shell)
  end
end)
s:stop()
if not ok then
  print("blast radius: FAILED: " .. tostring(err))
  return 1
end

local base = results[1]
print(string.format("blast radius: canary fails %d %% of requests from stage 2 (25 %%), %d req/s through HAProxy,",
  math.floor(FAULT.error_rate * 100), RPS))
print("holds 5/10/15/15/10 s (runbook / 60), the same fault and stack for every row")
print(string.format("  %-36s %8s %10s %14s %8s %8s", "approach", "outcome", "failed", "fault -> 0 %", "x failed", "x time"))
local bad = false
for _, r in ipairs(results) do
  local rf = base.failed > 0 and r.failed / base.failed or 0
  local rt = base.seconds and r.seconds and r.seconds / base.seconds or 0
  print(string.format("  %-36s %8s %6d/%-5d %12s %8.1f %8.1f", r.label, tostring(r.detail.outcome), r.failed, r.sent,
    r.seconds and string.format("%.2f s", r.seconds) or "never", rf, rt))
  if r.detail.outcome ~= "rolled_back" or not r.seconds then bad = true end
end
local confirms = {}
for _, r in ipairs(results) do if r.detail.confirm then confirms[#confirms + 1] = r.detail.confirm end end
table.sort(confirms)
local confirm = confirms[math.max(1, #confirms // 2)] or 0
print("anchors (same run):")
print(string.format("  runbook floor: it validates only when the stage-2 hold ends, 10.00 s after the shift (= the fault)"))
print(string.format("  physical limit of a watcher: one evaluation interval (1.00 s) + HAProxy confirm (%.3f s) = %.2f s",
  confirm, 1 + confirm))
print(string.format("  engine's policy on top: error_rate trigger `for` 2 s -> expected about %.2f-%.2f s", 2 + confirm,
  3 + confirm))
for _, r in ipairs(results) do
  if r.detail.timing and r.detail.timing.seconds then
    print(string.format("  %s: condition held -> HAProxy 0 %%: %.2f s", r.label, r.detail.timing.seconds))
  end
end
if bad then
  for _, r in ipairs(results) do
    print(string.format("%s: %s (%s), fault at %s", r.label, tostring(r.detail.outcome), tostring(r.detail.reason), tostring(r.fault)))
    if r.detail.output then print(r.detail.output) end
  end
  return 1
end
return 0

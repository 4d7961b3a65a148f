-- tools/blue_green_run.lua: playbooks/blue-green.lua on a demo/stack.lua stack, with
-- time scaled as playbooks/demo.lua scales the canary (a runbook minute is about a second),
-- shared by spec/blue_green_spec.lua and bench/blue_green_bench.lua.
--
--   local bg = require("tools.blue_green_run")
--   local s = assert(demo_stack.start{rps = 200})
--   local preview = assert(bg.preview(s, 20))     -- `canary: true` requests through HAProxy
--   local res = bg.run(s, {timeout = 90})         -- rollout run playbooks/blue-green.lua
--   local sw = bg.switch(res)                     -- when the switch to 100 % was confirmed
--   local failed, sent = s.load:failed_between(sw.at - 1, sw.at + 1)
--
-- Error policy: preview() returns nil, err when loadgen cannot start; run() returns what
-- demo_stack's S:run returns.
local rollout = require("rollout")
local json = require("rollout.json")
local fs = require("rollout.fs")
local demo_stack = require("demo.stack")

local M = {}

M.PLAYBOOK = demo_stack.ROOT .. "/playbooks/blue-green.lua"

-- the demo's sources (scrape the services, probe /health) and times / 60; evidence does not
-- scale with time (docs/semantics.md, gates on proportions): /health every 100 ms gives a 3 s
-- gate window 30 checks, enough to see a green 15x worse than a limit (policy.detect)
M.SCALED = {
  'sources=[{"type":"scrape","name":"metrics"},{"type":"probe","name":"probe","rate":1,"health_interval":"100ms","health_timeout":"500ms"}]',
  "policy.detect=15",
  "router.override_header=canary",
  "interval=1s", "trigger_window=3s", "gate_window=3s", "max_rollback_time=10s",
  "blue_green.pre_promotion.hold=5s", "blue_green.pre_promotion.min_samples=20",
  "blue_green.post_promotion.hold=8s", "blue_green.post_promotion.min_samples=100",
  "blue_green.scale_down_delay=3s",
  "triggers.error_rate.duration=1s", "triggers.latency_p99.duration=2s", "triggers.health_score.duration=1s",
  "triggers.crash_loop.within=5s",
}

--- sets(s, extra) -> the --set list: the stack's addresses, the scaled times, then extra
function M.sets(s, extra)
  local out = s:sets()
  for _, v in ipairs(M.SCALED) do out[#out + 1] = v end
  for _, v in ipairs(extra or {}) do out[#out + 1] = v end
  return out
end

--- preview(s, rps) -> a loadgen handle (demo_stack's) sending `canary: true` through HAProxy
function M.preview(s, rps)
  s.npreview = (s.npreview or 0) + 1
  local file = s.dir .. "/preview-" .. s.npreview .. ".jsonl"
  local started = rollout.time()
  local p, err = s:spawn("preview-" .. s.npreview, { demo_stack.ROOT .. "/loadgen", "--url", s.haproxy_proc.url .. "/",
    "--rps", tostring(rps or 20), "--connections", "4", "--header", "canary: true", "--report-interval", "1s",
    "--timeout", "5s" }, { stdout = file })
  if not p then return nil, err end
  return setmetatable({ proc = p, file = file, started = started, rps = rps or 20 }, getmetatable(s.load))
end

--- run(s, opts) -> result of `rollout run playbooks/blue-green.lua` (demo_stack S:run)
function M.run(s, opts)
  opts = opts or {}
  return s:run({ playbook = M.PLAYBOOK, sets = M.sets(s, opts.sets), json = true, timeout = opts.timeout or 90,
    args = opts.args })
end

--- switch(res) -> {at = epoch of the confirmation of 0/100, t = rollout time} | nil
--- back(res)   -> the same for the switch back (100/0 after it), or nil
local function confirmed(res, canary, after)
  for _, ev in ipairs(res.events or {}) do
    if ev.event == "weight_confirmed" and ev.canary == canary and (not after or ev.t > after) then
      return { at = ev.ts, t = ev.t }
    end
  end
end
function M.switch(res) return confirmed(res, 100) end
function M.back(res)
  local sw = M.switch(res)
  return sw and confirmed(res, 0, sw.t)
end

M.json, M.fs = json, fs -- (kept for callers that decode loadgen files themselves)
return M

-- DWCP v3 as a blue-green release (strategy = "blue_green", rollout.strategies.blue_green):
-- blue is v2.9.0 (the playbook's `baseline`), green v3.0.0 (its `canary`).
--
--   1. deploy green; it takes no users' traffic (weight 0);
--   2. preview: the header override sends `canary: true` requests to green while the
--      pre-promotion analysis runs (5 m, green's own numbers against the thresholds);
--   3. switch: all traffic to green in one router call (weights 0 / 100, read back);
--   4. post-promotion analysis for 10 m with the triggers armed: a trigger or a failed gate
--      switches everything back to blue at once;
--   5. blue stays up for scale_down_delay (5 m, triggers still armed: a late failure still
--      switches back), then the scale_down hook retires it.
--
--   rollout check    playbooks/blue-green.lua
--   rollout simulate playbooks/blue-green.lua --scenario scenarios/blue-green-bad-green.lua
--   rollout run      playbooks/blue-green.lua --set router.socket=/run/haproxy/admin.sock
--
-- The pre-flight checks, the deploy and rollback procedures, the router and the sources are
-- the canary runbook's (canary.lua); commands come from params (argv lists) and an unset one
-- is skipped with a stated reason.
local canary = include("canary.lua")

local function run_param(ctx, key, what)
  local argv = (ctx.engine.pb.params or {})[key]
  if not argv then ctx.log(key .. " not set: " .. what .. " skipped"); return true end
  local r, err = proc.run({ argv = argv, timeout = 600 })
  if not r then error(key .. ": " .. err, 0) end
  if r.code ~= 0 then error(string.format("%s: %s exited %d: %s", key, argv[1], r.code, (r.stderr or ""):sub(1, 200)), 0) end
  ctx.log(key .. ": ok")
  return true
end

local procedures = include("procedures.lua")

return {
  name = "dwcp-v3-blue-green",
  service = "dwcp-v3",
  description = "DWCP v3 blue-green: v2.9.0 (blue) -> v3.0.0 (green)",
  strategy = "blue_green",
  params = canary.params,

  versions = canary.versions,
  router = canary.router,
  header_override = canary.header_override, -- the preview's traffic: `canary: true` reaches green
  sources = canary.sources,

  interval = "10s",
  trigger_window = "1m",
  gate_window = "5m",

  thresholds = { error_rate = "1%", p99 = "500ms", p95 = "400ms", health = 0.99 },

  blue_green = {
    -- green's preview traffic only: few requests, so the evidence is a count, not a rate
    pre_promotion = { hold = "5m", min_samples = 100 },
    post_promotion = { hold = "10m", min_samples = 5000, thresholds = { error_rate = "2%", p99 = "600ms" } },
    scale_down_delay = "5m",
  },

  -- at 100 % every second counts: shorter `for` than the canary's
  triggers = {
    error_rate = { condition = "error_rate > 5%", duration = "30s" },
    latency_p99 = { condition = "latency_p99 > 1s", duration = "1m" },
    health_score = { condition = "health_score < 0.90", duration = "30s" },
    critical_alert = { alert = { severity = "critical" } },
    crash_loop = { restarts = 3, within = "5m" },
  },

  preflight = canary.preflight,
  hooks = {
    deploy = procedures.deploy,          -- green up and ready
    on_rollback = procedures.on_rollback, -- after the switch back: scale green down, check blue
    scale_down = function(ctx) return run_param(ctx, "scale_down_blue_command", "retiring " .. ctx.version) end,
  },

  policy = { inconclusive = "pause", consecutive_error_limit = 4 },
  max_rollback_time = "1m",
}

-- The runbook's canary (playbooks/canary.lua) on one machine, with time scaled so that a
-- runbook minute is a demo second: holds 5/10/15/15/10 s, gate window 5 s, trigger `for`
-- 2 s (error rate) / 5 s (P99) / 3 s (health), crash loop "3 restarts within 5 s". The
-- policy stays the runbook's: the same stages, weights, thresholds and triggers, read from
-- canary.lua and scaled here, never restated. Counts scale with time (min_samples 1000 in
-- 5 min is 17 in 5 s at the same request rate); rates (min_rps 100) do not.
--
-- Two things cannot shrink sixty-fold: evaluations run every 1 s (10 s / 60 is shorter
-- than a scrape), and triggers look at a 3 s window (1 m / 60 would be a single scrape;
-- three keep a rate steady at the demo's 200 req/s).
--
-- `make demo` (demo/run.lua) starts HAProxy, the sample service as v2.9.0 and v3.0.0 and
-- load, then runs this with its addresses:
--   rollout run playbooks/demo.lua --set router.socket=DIR/haproxy.sock \
--     --set router.override_acl=DIR/canary.acl \
--     --set versions.baseline.url=http://127.0.0.1:P1 --set versions.baseline.metrics=http://127.0.0.1:P1/metrics \
--     --set versions.canary.url=http://127.0.0.1:P2 --set versions.canary.metrics=http://127.0.0.1:P2/metrics
-- Metrics come from scraping the services (sources[1], scrape: their latency histogram,
-- request counters and process metrics, whose start time gives restarts); a probe
-- (sources[2]) checks /health every second for `health` (and fills in for a version the
-- scrape has no requests for). With a real Prometheus:
--   --set sources[1].type=prometheus --set sources[1].url=http://127.0.0.1:PROM
-- and with Alertmanager, for the critical_alert trigger:
--   --set sources[3].type=alertmanager --set sources[3].url=http://127.0.0.1:AM
local units = require("rollout.units")

local SCALE = 60 -- runbook seconds per demo second

local function scaled(d) return units.duration(d) / SCALE end

local pb = include("canary.lua")

pb.name = "dwcp-v3-demo"
pb.description = "DWCP v3 canary on loopback, runbook time / " .. SCALE .. ": v2.9.0 -> v3.0.0"

pb.versions.baseline.url = "http://127.0.0.1:8081"
pb.versions.baseline.metrics = "http://127.0.0.1:8081/metrics"
pb.versions.canary.url = "http://127.0.0.1:8082"
pb.versions.canary.metrics = "http://127.0.0.1:8082/metrics"

pb.router.socket = "/tmp/rollout-demo/haproxy.sock"
pb.router.override_acl = "/tmp/rollout-demo/canary.acl"
pb.router.override_header = pb.header_override.name

pb.sources = {
  { type = "scrape", name = "metrics" },
  -- /health every second, and one synthetic request per second to each version: a
  -- version with no users' traffic (the baseline at 100 %) still has numbers, its own
  { type = "probe", name = "probe", rate = 1, health_interval = "100ms", health_timeout = "500ms" },
}

-- Evidence (rollout.proportion) does not scale with time: a 5 s gate window holds ~50
-- health checks and ~50 canary requests at 5 %, enough to see a canary 10x worse than a
-- limit (health 0.90 against 0.99, 10 % errors against 1 %), not the default 3x.
pb.policy.detect = 10

pb.interval = "1s"
pb.trigger_window = "3s"
pb.gate_window = scaled(pb.gate_window)
pb.max_rollback_time = scaled(pb.max_rollback_time)

for _, stage in ipairs(pb.stages) do
  stage.hold = scaled(stage.hold)
  if stage.min_samples then stage.min_samples = math.ceil(stage.min_samples / SCALE) end
end

for _, trigger in pairs(pb.triggers) do
  if trigger.duration then trigger.duration = scaled(trigger.duration) end
  if trigger.within then trigger.within = scaled(trigger.within) end
end

return pb

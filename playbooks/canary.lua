-- The DWCP v3 canary runbook as a playbook: five stages 5 → 25 → 50 → 75 → 100 %, the
-- runbook's per-stage validation, its golden signals, its five automatic rollback
-- triggers, its ten pre-flight checks, and its rollback and finalize procedures.
--
--   rollout check    playbooks/canary.lua
--   rollout simulate playbooks/canary.lua --scenario scenarios/healthy.lua
--   rollout run      playbooks/canary.lua --set router.socket=/run/haproxy/admin.sock
--
-- Targets (proxy socket, Prometheus, Alertmanager, commands) are settings: override them
-- with --set (e.g. --set sources[1].url=http://prom:9090 --set params.database_command=...)
-- or --config. Unset commands are skipped with a stated reason, never silently passed.
local params = {
  prometheus_url = "http://127.0.0.1:9090",
  alertmanager_url = "http://127.0.0.1:9093",
  -- commands of the runbook's checks and procedures; unset ones are skipped with a reason
  capacity_command = nil, baseline_status_command = nil, database_command = nil,
  canary_image_command = nil, external_health_url = nil,
  -- where the service reads its feature flags (one of): a URL, a file, or a command's output
  -- (JSON, YAML or name=value lines), compared with feature_flags below
  feature_flags_url = nil, feature_flags_file = nil, feature_flags_command = nil,
  rollback_ready_command = nil, deploy_command = nil, scale_down_command = nil,
  promote_command = nil, deployment_api = nil,
}

return playbook {
  name = "dwcp-v3",
  service = "dwcp-v3",
  description = "DWCP v3 canary: v2.9.0 -> v3.0.0",
  params = params,

  versions = {
    baseline = { name = "baseline", version = "v2.9.0" },
    canary = { name = "canary", version = "v3.0.0" },
  },

  router = { type = "haproxy", socket = "/run/haproxy/admin.sock", backend = "dwcp", baseline = "baseline", canary = "canary" },
  -- the runbook's VirtualService: `canary: true` always reaches the canary
  header_override = { name = "canary", value = "true" },

  sources = {
    -- the runbook's labels: deployment="baseline"|"canary" (the versions' names), 5xx as status
    { type = "prometheus", url = params.prometheus_url, selector = 'deployment="{{name}}"', errors = 'status=~"5.."' },
    { type = "alertmanager", url = params.alertmanager_url, matchers = { 'severity="critical"', 'service="{{service}}"' } },
  },

  interval = "10s",        -- evaluations (docs/semantics.md)
  trigger_window = "1m",
  gate_window = "5m",      -- the runbook's rate(...[5m])

  -- goldenSignals: apply to every stage unless the stage sets its own
  thresholds = {
    p50 = "200ms", p95 = "400ms", p99 = "500ms",
    min_rps = 100,
    error_rate = "2%",
    cpu = "80%", memory = "85%", disk = "90%",
  },

  stages = {
    { name = "Initial",  weight = 5,   hold = "5m",  min_samples = 1000,
      thresholds = { health = 0.99, error_rate = "1%", p99 = "500ms" } },
    { name = "Ramp-Up",  weight = 25,  hold = "10m", min_samples = 5000,
      thresholds = { health = 0.99, error_rate = "1%", p99 = "500ms" } },
    { name = "Half",     weight = 50,  hold = "15m", min_samples = 10000,
      thresholds = { health = 0.98, error_rate = "2%", p99 = "600ms" } },
    { name = "Majority", weight = 75,  hold = "15m",
      thresholds = { health = 0.98, error_rate = "2%", p99 = "600ms" } },
    { name = "Full",     weight = 100, hold = "10m",
      thresholds = { health = 0.98, error_rate = "2%" } },
  },

  -- rollback.triggers, plus the runbook's "critical alert fired" and "pod crash loop"
  triggers = {
    error_rate = { condition = "error_rate > 5%", duration = "2m" },
    latency_p99 = { condition = "latency_p99 > 1s", duration = "5m" },
    health_score = { condition = "health_score < 0.90", duration = "3m" },
    critical_alert = { alert = { severity = "critical" } },
    crash_loop = { restarts = 3, within = "5m" },
  },

  preflight = include("preflight.lua"),
  hooks = include("procedures.lua"),

  policy = { inconclusive = "pause", consecutive_error_limit = 4 },
  max_rollback_time = "5m",   -- rollback.maxRollbackTime

  feature_flags = { dwcp_v3_protocol = true, neural_routing = true, adaptive_batching = true },
  ab_test = { enabled = true, metric = "latency_p99", significance = 0.05, min_samples = 10000 },
}

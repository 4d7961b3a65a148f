-- The DWCP v3 runbook on Kubernetes with Istio, natively: every step through the Kubernetes
-- API (rollout.k8s), no kubectl and no command to fill in for the standard path.
--
--   rollout check playbooks/canary-k8s.lua       -- validates, then asks the API server
--                                                   (SelfSubjectAccessReview) for every
--                                                   permission below; exit 3 if one is missing
--   rollout run   playbooks/canary-k8s.lua [--set router.kubeconfig=~/.kube/ci.yaml]
--   rollout playbooks/finalize.lua playbooks/canary-k8s.lua    -- Step 7, after a promotion
--
-- Credentials are the Istio router's: `router.api` + token_file/ca_file, else
-- router.kubeconfig / router.context, else the in-cluster service account, else
-- $KUBECONFIG or ~/.kube/config. The permissions it needs are in
-- contrib/kubernetes/rbac.yaml (derived from the same list `rollout check` asks about).
--
-- Steps: the ten pre-flight checks (Step 4), the canary Deployment of the runbook's
-- manifest and its pods ready (Step 5), five stages on the VirtualService keeping the
-- `canary: true` header route (Step 6), on rollback 0 %, the canary scaled to 0 and its pods
-- gone, and finalize (Step 7) -- each confirmed by reading the object back.
-- Commands stay possible: params.database_command (pre-flight 3) and deploy_command
-- (run after the canary is ready, e.g. a smoke test) are argv lists.
local k8s = require("rollout.k8s")
local runbook = include("canary.lua")

local params = {
  prometheus_url = "http://127.0.0.1:9090",
  alertmanager_url = "http://127.0.0.1:9093",
  external_health_url = nil,   -- pre-flight 9: e.g. https://api.external-service.com/health
  database_command = nil,      -- pre-flight 3: e.g. ["psql", "postgres://db/app", "-c", "SELECT 1"]
  deploy_command = nil,        -- run after the canary's pods are ready (argv)
  kubernetes = {
    namespace = "production",
    app = "dwcp-v3",
    service = "dwcp-v3",                      -- repointed at the new version by finalize
    baseline_deployment = "dwcp-v3-baseline",
    canary_deployment = "dwcp-v3-canary",
    canary_replicas = 2,
    baseline_replicas = nil,                  -- finalize: nil = the live baseline's replicas
    image = "novacron/dwcp:v3.0.0",
    manifest = nil,                           -- a YAML Deployment with ${DEPLOY_ID}, ${IMAGE}...
    canary_virtualservice = "dwcp-v3-canary", -- deleted by finalize
    feature_flags = "feature-flags",          -- the ConfigMap pre-flight 8 compares
    monitoring = { namespace = "monitoring", apps = { "prometheus", "grafana" } },
    destination_rule = nil,
    ready_timeout = "300s", gone_timeout = "60s", baseline_timeout = "60s", interval = "1s",
  },
}

local function check(name, description)
  return { name = name, description = description, run = function(ctx) return k8s.runbook_check(name, ctx) end }
end

local function get_ok(url, what)
  local r, err = http.request({ method = "GET", url = url, timeout = 5 })
  if not r then return false, what .. ": " .. err end
  if r.status < 200 or r.status > 299 then return false, string.format("%s: %s answered %d", what, url, r.status) end
  return true, string.format("%s answered %d", url, r.status)
end

local function source_url(ctx, kind)
  for _, s in ipairs(ctx.engine.pb.sources) do if s.type == kind then return s.url end end
end

local function run_command(ctx, key)
  local argv = (ctx.engine.pb.params or {})[key]
  if not argv then return "skip", "params." .. key .. " not set" end
  local r, err = proc.run({ argv = argv, timeout = 60 })
  if not r then return false, err end
  if r.code ~= 0 then return false, string.format("%s exited %d: %s", argv[1], r.code, (r.stderr or ""):sub(1, 200)) end
  return true, (r.stdout or ""):gsub("%s+$", ""):sub(1, 200)
end

return playbook {
  name = "dwcp-v3",
  service = "dwcp-v3",
  description = "DWCP v3 canary on Kubernetes/Istio: v2.9.0 -> v3.0.0",
  params = params,

  versions = {
    baseline = { name = "baseline", version = "v2.9.0" },
    canary = { name = "canary", version = "v3.0.0" },
  },

  router = { type = "istio", namespace = "production", virtualservice = "dwcp-v3",
    baseline = "dwcp-v3-baseline", canary = "dwcp-v3-canary" },
  header_override = { name = "canary", value = "true" },

  sources = {
    { type = "prometheus", url = params.prometheus_url },
    { type = "alertmanager", url = params.alertmanager_url, matchers = { 'severity="critical"', 'service="{{service}}"' } },
    -- pod restarts per version for crash_loop (credentials as the router's: set them alike)
    { type = "kubernetes", namespace = "production" },
  },

  interval = "10s",
  trigger_window = "1m",
  gate_window = "5m",

  -- the runbook's golden signals, five stages and rollback triggers: canary.lua's, one copy
  thresholds = runbook.thresholds,
  stages = runbook.stages,
  triggers = runbook.triggers,

  -- Step 4, the ten checks, in the runbook's order
  preflight = {
    check("cluster_capacity", "1. cluster capacity (allocatable minus requests vs the canary's requests)"),
    check("baseline_status", "2. baseline deployment rolled out"),
    { name = "database", description = "3. database connectivity",
      run = function(ctx) return run_command(ctx, "database_command") end },
    check("traffic_routing", "4. traffic routing at 100 % baseline"),
    check("monitoring", "5. monitoring pods Running"),
    { name = "alertmanager", description = "6. Alertmanager up",
      run = function(ctx)
        local url = source_url(ctx, "alertmanager")
        if not url then return "skip", "no alertmanager source configured" end
        return get_ok(url .. "/api/v2/status", "alertmanager")
      end },
    check("canary_image", "7. canary image (manifest accepted; pods pull it at deploy)"),
    check("feature_flags", "8. feature flags in the ConfigMap"),
    { name = "external_dependencies", description = "9. external dependencies",
      run = function(ctx)
        local url = ctx.engine.pb.params.external_health_url
        if not url then return "skip", "params.external_health_url not set" end
        return get_ok(url, "external dependency")
      end },
    check("rollback_ready", "10. rollback readiness (baseline Deployment serving)"),
  },

  hooks = {
    deploy = function(ctx)
      k8s.runbook_deploy(ctx)
      if ctx.engine.pb.params.deploy_command then
        local ok, detail = run_command(ctx, "deploy_command")
        if ok ~= true then error("deploy_command: " .. tostring(detail), 0) end
        ctx.log("deploy_command: ok")
      end
      return true
    end,
    on_rollback = function(ctx) return k8s.runbook_rollback(ctx) end,
    finalize = function(ctx) return k8s.runbook_finalize(ctx) end,
  },

  policy = { inconclusive = "pause", consecutive_error_limit = 4 },
  max_rollback_time = "5m",

  feature_flags = { dwcp_v3_protocol = true, neural_routing = true, adaptive_batching = true },
  ab_test = { enabled = true, metric = "latency_p99", significance = 0.05, min_samples = 10000 },
}

-- rollout.k8s.runbook: the runbook's Kubernetes steps, natively (no kubectl, no commands).
--
-- For playbooks/canary-k8s.lua (through the playbook API's `k8s` module):
--   runbook.check(name, ctx)  one of the ten pre-flight checks -> true|false|"skip", detail
--   runbook.deploy(ctx)       apply the canary Deployment, wait until its pods are ready
--   runbook.on_rollback(ctx)  (traffic already at 0 %) scale the canary to 0, wait until its
--                             pods are gone, confirm the baseline rolled out
--   runbook.finalize(ctx)     label, scale to the baseline's replicas, wait ready, scale down
--                             and delete the baseline, repoint the Service, delete the canary
--                             VirtualService, annotate completed -- each confirmed by read-back
--   runbook.permissions(pb)   every {verb, group, resource, subresource, namespace} these steps
--                             and the Istio router use (for `rollout check` and contrib RBAC)
--
-- Configuration: the playbook's params.kubernetes (see M.config); the client is the Istio
-- router's (same credentials), else one made from params.kubernetes.client.
-- ctx: the engine's hook context ({engine = {pb=, router=}, log=, weights=}).
--
-- Error policy: a bad params.kubernetes raises naming the key path; steps raise (error(msg,
-- 0)) when the cluster does not do what was asked, so the engine records a failed hook;
-- checks return false, reason.
local fs = require("rollout.fs")
local units = require("rollout.units")
local client = require("rollout.k8s.client")
local deployments = require("rollout.k8s.deployments")
local res = require("rollout.k8s.resources")
local schema = require("rollout.schema")

local M = {}

local function dur(v, default, key)
  if v == nil then return default end
  local d = units.parse("duration", v)
  if not d then error("params.kubernetes." .. key .. ": expected a duration, got " .. tostring(v), 0) end
  return d
end

-- params.kubernetes, declared (rollout.schema): its base kinds (strings `nonempty`,
-- durations may be 0) and the runbook's own kinds below.
local KINDS = schema.kinds()
function KINDS.name(v) if not res.name_ok(v) then return "must be a Kubernetes name (lower-case letters, digits, '-', '.')" end end
function KINDS.label(v)
  if type(v) ~= "string" or #v > 63 or not v:match("^[%w%._-]+$") or not v:match("^%w") or not v:match("%w$") then
    return "must be a label value (letters, digits, '-', '_', '.'; at most 63)"
  end
end
function KINDS.replicas(v) if math.type(v) ~= "integer" or v < 1 then return "expected an integer >= 1" end end
function KINDS.replicas0(v) if math.type(v) ~= "integer" or v < 0 then return "expected an integer >= 0" end end
function KINDS.port(v) if math.type(v) ~= "integer" or v < 1 or v > 65535 then return "expected a port number" end end

local FIELDS = {}
for key, kind in pairs({
  namespace = "name", app = "label", service = "name", canary_deployment = "name", baseline_deployment = "name",
  canary_replicas = "replicas", baseline_replicas = "replicas0", image = "string", manifest = "string",
  canary_virtualservice = "name", feature_flags = "name", monitoring = "table", destination_rule = "name",
  container = "name", port = "port", resources = "table", manifest_vars = "table", client = "table",
  ready_timeout = "duration", gone_timeout = "duration", baseline_timeout = "duration", interval = "duration",
}) do FIELDS[key] = { kind = kind, nonempty = kind == "string" or nil, zero = kind == "duration" or nil } end
FIELDS.monitoring.check = function(m)
  local out = {}
  if m.namespace ~= nil and not res.name_ok(m.namespace) then out[#out + 1] = schema.at("namespace", "must be a Kubernetes name") end
  if m.apps ~= nil and type(m.apps) ~= "table" then out[#out + 1] = schema.at("apps", "expected a list") end
  return out
end

--- Problems with a params.kubernetes table as rollout.schema errors {path = {...},
--- message =} (paths relative to it; empty when fine). (runbook.check is a pre-flight check.)
function M.check_config(k)
  if type(k) ~= "table" then return { { path = {}, message = "expected a table" } } end
  local errs = schema.check(k, FIELDS, { kinds = KINDS })
  for _, e in ipairs(errs) do
    if e.message == "unknown key" then
      local names = {}
      for n in pairs(FIELDS) do names[#names + 1] = n end
      table.sort(names)
      e.message = "unknown key (" .. table.concat(names, ", ") .. ")"
    end
  end
  if k.image == nil and k.manifest == nil then errs[#errs + 1] = { path = { "image" }, message = "required (or manifest)" } end
  return errs
end

--- Problems with a params.kubernetes table as "key: message" strings (empty when fine).
function M.validate(k) return schema.strings(M.check_config(k), true) end

--- params.kubernetes with defaults: namespace, app, service, canary_deployment,
--- baseline_deployment, canary_replicas (2), baseline_replicas (nil: the live baseline's),
--- image, canary_virtualservice, feature_flags (ConfigMap name), monitoring = {namespace=,
--- apps = {...}}, manifest (YAML path, relative to the playbook's directory; ${DEPLOY_ID}...
--- substituted), destination_rule,
--- ready_timeout (5m), gone_timeout (60s), baseline_timeout (60s), interval (1s), client.
function M.config(pb)
  local k = ((pb.params or {}).kubernetes)
  if type(k) ~= "table" then error("params.kubernetes: required table (the runbook's cluster objects)", 0) end
  local svc = pb.service
  local c = {
    namespace = k.namespace or (pb.router and pb.router.namespace) or "default",
    app = k.app or svc, service = k.service or svc,
    canary_deployment = k.canary_deployment or (svc .. "-canary"),
    baseline_deployment = k.baseline_deployment or (svc .. "-baseline"),
    canary_replicas = k.canary_replicas or 2, baseline_replicas = k.baseline_replicas,
    image = k.image, canary_virtualservice = k.canary_virtualservice,
    feature_flags = k.feature_flags, monitoring = k.monitoring, manifest = k.manifest,
    manifest_vars = k.manifest_vars or {}, destination_rule = k.destination_rule,
    container = k.container or "app", port = k.port, resources = k.resources,
    ready_timeout = dur(k.ready_timeout, 300, "ready_timeout"), gone_timeout = dur(k.gone_timeout, 60, "gone_timeout"),
    baseline_timeout = dur(k.baseline_timeout, 60, "baseline_timeout"), interval = dur(k.interval, 1, "interval"),
    client = k.client,
    baseline_version = pb.versions.baseline.version, canary_version = pb.versions.canary.version,
    playbook_dir = type(pb.file) == "string" and pb.file:match("^(.*)/[^/]*$") or nil,
  }
  for _, key in ipairs({ "namespace", "canary_deployment", "baseline_deployment", "service" }) do
    if not res.name_ok(c[key]) then error("params.kubernetes." .. key .. ": must be a Kubernetes name, got " .. tostring(c[key]), 0) end
  end
  if math.type(c.canary_replicas) ~= "integer" or c.canary_replicas < 1 then
    error("params.kubernetes.canary_replicas: expected an integer >= 1", 0)
  end
  if not c.image and not c.manifest then error("params.kubernetes.image: required (or params.kubernetes.manifest)", 0) end
  return c
end

--- The k8s client for a hook context: the Istio router's, else one from params.kubernetes.client.
function M.client(ctx, cfg)
  local r = ctx.engine and ctx.engine.router
  if r and r.client then return r.client end
  local cc = {}
  for key, v in pairs(cfg.client or {}) do cc[key] = v end
  cc.namespace = cc.namespace or cfg.namespace
  return client.new(cc)
end

local function selector(cfg, version) return { app = cfg.app, version = version } end

-- The engine's deployment id (rollout.datetime's, of the rollout's start: the one its
-- notifications name, kept across a resume); without an engine, one of now.
local function deploy_id(ctx)
  local e = ctx.engine
  local id = e and e.deployment_id and e:deployment_id()
  if type(id) ~= "string" or id == "" or id:find("${", 1, true) then
    id = (e and e.pb and e.pb.service or "rollout") .. "-canary-" .. os.date("!%Y%m%d-%H%M%S", math.floor(e and e.started_ts or os.time()))
  end
  return id
end

--- The canary Deployment: the manifest file rendered (vars DEPLOY_ID, IMAGE, VERSION,
--- REPLICAS, NAME, NAMESPACE, APP and manifest_vars), else the runbook's Step 5 manifest.
function M.manifest(ctx, cfg)
  local id = deploy_id(ctx)
  if cfg.manifest then
    local path = cfg.manifest
    if path:sub(1, 1) ~= "/" and cfg.playbook_dir then path = cfg.playbook_dir .. "/" .. path end
    local text, err = fs.read(path)
    if not text then error("params.kubernetes.manifest: " .. err, 0) end
    local vars = { DEPLOY_ID = id, IMAGE = cfg.image, VERSION = cfg.canary_version, REPLICAS = cfg.canary_replicas,
      NAME = cfg.canary_deployment, NAMESPACE = cfg.namespace, APP = cfg.app }
    for key, v in pairs(cfg.manifest_vars) do vars[key] = v end
    local m, merr = deployments.render(text, vars, cfg.manifest)
    if not m then error(merr, 0) end
    return m
  end
  local port = cfg.port or 8080
  return deployments.manifest{
    name = cfg.canary_deployment, namespace = cfg.namespace, image = cfg.image, replicas = cfg.canary_replicas,
    labels = { app = cfg.app, version = cfg.canary_version, ["deployment-type"] = "canary", ["deployment-id"] = id },
    selector = selector(cfg, cfg.canary_version),
    template_labels = { ["deployment-id"] = false },
    container = cfg.container, port = port,
    env = { DEPLOYMENT_ID = id, DEPLOYMENT_TYPE = "canary" },
    resources = cfg.resources or { requests = { cpu = "1000m", memory = "2Gi" }, limits = { cpu = "2000m", memory = "4Gi" } },
    readiness_path = "/ready", liveness_path = "/health",
  }
end

local function fmt_cpu(x) return string.format("%.1f cpu", x) end
local function fmt_mem(x) return string.format("%.1f GiB", x / 2 ^ 30) end

-- ---- the ten pre-flight checks --------------------------------------------------------

local CHECKS = {}

-- 1. cluster capacity: free allocatable (after the requests of running pods) on Ready nodes
-- against what the canary's replicas request.
function CHECKS.cluster_capacity(ctx, cfg, c)
  local free, err = res.capacity(c)
  if not free then return false, err end
  if free.nodes == 0 then return false, "no Ready schedulable node" end
  local per = res.pod_requests(M.manifest(ctx, cfg).spec.template.spec)
  local n = M.manifest(ctx, cfg).spec.replicas
  local need = { cpu = per.cpu * n, memory = per.memory * n }
  local detail = string.format("free %s / %s on %d node(s); the canary's %d replica(s) request %s / %s",
    fmt_cpu(free.cpu), fmt_mem(free.memory), free.nodes, n, fmt_cpu(need.cpu), fmt_mem(need.memory))
  return free.cpu >= need.cpu and free.memory >= need.memory, detail
end

-- 2. baseline rolled out, as `kubectl rollout status --timeout=60s` decides.
function CHECKS.baseline_status(_, cfg, c)
  local ok, msg = deployments.rollout_status(c, cfg.namespace, cfg.baseline_deployment,
    { timeout = cfg.baseline_timeout, interval = cfg.interval })
  return ok ~= nil, msg
end

-- 4. traffic routing: the router's own checks, 100 % on the baseline, and (when
-- params.kubernetes.destination_rule is set) subsets selecting each version.
function CHECKS.traffic_routing(ctx, cfg, c)
  local router = ctx.engine.router
  for _, item in ipairs(router:check()) do
    if not item.ok then return false, item.name .. ": " .. tostring(item.detail) end
  end
  local w, err = router:get_weights()
  if not w then return false, err end
  if w.baseline ~= 100 then
    return false, string.format("baseline serves %s %% (expected 100 before the rollout)", tostring(w.baseline))
  end
  local detail = "baseline 100 %, canary 0 %"
  if cfg.destination_rule then
    local subsets, derr = res.destination_subsets(c, cfg.namespace, cfg.destination_rule)
    if not subsets then return false, derr end
    for _, v in ipairs({ cfg.baseline_version, cfg.canary_version }) do
      local found = false
      for _, labels in pairs(subsets) do if labels.version == v then found = true end end
      if not found then return false, "destinationrule " .. cfg.destination_rule .. " has no subset for version=" .. v end
    end
    detail = detail .. "; destinationrule subsets for both versions"
  end
  return true, detail
end

-- 5. monitoring pods Running and ready (`kubectl get pods -n monitoring | grep Running`).
function CHECKS.monitoring(_, cfg, c)
  local mon = cfg.monitoring
  if not mon then return "skip", "params.kubernetes.monitoring not set" end
  local pods, err = res.pods(c, mon.namespace or "monitoring", "")
  if not pods then return false, err end
  local out = {}
  for _, app in ipairs(mon.apps or { "prometheus", "grafana" }) do
    local running = 0
    for _, p in ipairs(pods) do
      local labels = p.metadata.labels or {}
      local named = labels.app == app or labels["app.kubernetes.io/name"] == app or p.metadata.name:find(app, 1, true) == 1
      if named and (p.status or {}).phase == "Running" and res.pod_ready(p) then running = running + 1 end
    end
    if running == 0 then return false, "no Running, ready " .. app .. " pod in namespace " .. (mon.namespace or "monitoring") end
    out[#out + 1] = app .. " " .. running .. " running"
  end
  return true, table.concat(out, ", ")
end

-- 7. the canary image: the API server accepts the canary Deployment (server-side dry run,
-- admission included); the pull itself is proven when its pods start (deploy fails at
-- once on ErrImagePull / ImagePullBackOff).
function CHECKS.canary_image(ctx, cfg, c)
  local m = M.manifest(ctx, cfg)
  local live, _, e = deployments.get(c, cfg.namespace, cfg.canary_deployment)
  if live then
    local pods = res.pods(c, cfg.namespace, selector(cfg, cfg.canary_version))
    local s = pods and res.pod_summary(pods)
    if s and #s.image_errors > 0 then return false, table.concat(s.image_errors, "; ") end
    return true, "canary Deployment exists; its pods pull " .. m.spec.template.spec.containers[1].image
  end
  if e.kind ~= "not_found" then return false, e.message end
  local ok, err = c:create(deployments.path(cfg.namespace), m, { query = { dryRun = "All" } })
  if not ok then return false, err end
  return true, "manifest for " .. m.spec.template.spec.containers[1].image
    .. " accepted (server-side dry run); the pull is confirmed when the canary's pods start"
end

-- 8. feature flags: the ConfigMap holds every flag of the playbook with the same value.
function CHECKS.feature_flags(ctx, cfg, c)
  if not cfg.feature_flags then return "skip", "params.kubernetes.feature_flags (ConfigMap name) not set" end
  local data, err = res.configmap(c, cfg.namespace, cfg.feature_flags)
  if not data then return false, err end
  local want = ctx.engine.pb.feature_flags or {}
  local names = {}
  for key in pairs(want) do names[#names + 1] = key end
  table.sort(names)
  for _, key in ipairs(names) do
    if data[key] ~= tostring(want[key]) then
      return false, string.format("configmap %s: %s is %s, the playbook wants %s", cfg.feature_flags, key,
        data[key] == nil and "missing" or string.format("%q", data[key]), tostring(want[key]))
    end
  end
  return true, string.format("configmap %s: %d flag(s) as the playbook says", cfg.feature_flags, #names)
end

-- 10. rollback readiness: the baseline Deployment exists and serves its replicas.
function CHECKS.rollback_ready(_, cfg, c)
  local d, err = deployments.get(c, cfg.namespace, cfg.baseline_deployment)
  if not d then return false, "rollback target missing: " .. err end
  local want, avail = (d.spec or {}).replicas or 0, ((d.status or {}).availableReplicas or 0)
  if want < 1 then return false, "baseline " .. cfg.baseline_deployment .. " has 0 replicas: nothing to roll back to" end
  if avail < want then return false, string.format("baseline %s: %d of %d replicas available", cfg.baseline_deployment, avail, want) end
  return true, string.format("baseline %s: %d/%d replicas available", cfg.baseline_deployment, avail, want)
end

--- Run check `name` (cluster_capacity, baseline_status, traffic_routing, monitoring,
--- canary_image, feature_flags, rollback_ready). true|false|"skip", detail.
function M.check(name, ctx)
  local fn = CHECKS[name]
  if not fn then error("k8s runbook: no check named " .. tostring(name), 2) end
  local cfg = M.config(ctx.engine.pb)
  return fn(ctx, cfg, M.client(ctx, cfg))
end

-- ---- deploy, rollback, finalize -------------------------------------------------------

local function must(ok, err, ...)
  if not ok then error(tostring(err), 0) end
  return ok, err, ...
end

local function log(ctx, msg) if ctx.log then ctx.log(msg) end end

--- Step 5: apply the canary Deployment and wait until its pods are ready and it has
--- rolled out (`kubectl wait --for=condition=ready pod -l ...`).
function M.deploy(ctx)
  local cfg = M.config(ctx.engine.pb)
  local c = M.client(ctx, cfg)
  local m = M.manifest(ctx, cfg)
  local d, verdict = must(deployments.apply(c, m))
  log(ctx, string.format("deployment %s/%s %s (image %s, %d replicas)", cfg.namespace, d.metadata.name, verdict,
    m.spec.template.spec.containers[1].image, m.spec.replicas))
  local sel = m.spec.selector.matchLabels
  local _, s = must(res.wait_pods(c, cfg.namespace, sel, { ready = m.spec.replicas, timeout = cfg.ready_timeout,
    interval = cfg.interval, progress = function(msg) log(ctx, msg) end }))
  must(deployments.rollout_status(c, cfg.namespace, d.metadata.name, { timeout = cfg.ready_timeout, interval = cfg.interval }))
  log(ctx, string.format("canary pods ready: %d/%d (restarts %d)", s.ready, s.total, s.restarts))
  return true
end

--- The rollback after the engine confirmed 0 %: scale the canary to 0, wait until its pods
--- are gone (`kubectl wait --for=delete`), confirm the baseline serves its replicas.
function M.on_rollback(ctx)
  local cfg = M.config(ctx.engine.pb)
  local c = M.client(ctx, cfg)
  must(deployments.scale(c, cfg.namespace, cfg.canary_deployment, 0))
  log(ctx, "canary " .. cfg.canary_deployment .. " scaled to 0")
  must(res.wait_pods(c, cfg.namespace, selector(cfg, cfg.canary_version), { gone = true, timeout = cfg.gone_timeout,
    interval = cfg.interval, progress = function(msg) log(ctx, msg) end }))
  log(ctx, "canary pods gone")
  must(deployments.rollout_status(c, cfg.namespace, cfg.baseline_deployment, { timeout = cfg.baseline_timeout, interval = cfg.interval }))
  log(ctx, "baseline " .. cfg.baseline_deployment .. " rolled out")
  return true
end

--- Step 7. Refuses unless ctx.promotion_confirmed or the engine's confirmed weights are
--- 100 % canary. Idempotent: a step already done is confirmed and passed over.
function M.finalize(ctx)
  local w = ctx.weights or (ctx.engine and ctx.engine.weights)
  if not ctx.promotion_confirmed and not (w and w.canary == 100) then
    error("finalize refused: no promotion confirmed at 100 % (confirmed weights: "
      .. (w and string.format("baseline %s, canary %s", tostring(w.baseline), tostring(w.canary)) or "none") .. ")", 0)
  end
  local cfg = M.config(ctx.engine.pb)
  local c = M.client(ctx, cfg)
  local ns = cfg.namespace
  local cpath = deployments.path(ns, cfg.canary_deployment)
  -- the baseline's replicas, read before it goes
  local replicas = cfg.baseline_replicas
  local base, berr, be = deployments.get(c, ns, cfg.baseline_deployment)
  if not base and be.kind ~= "not_found" then error(berr, 0) end
  if not replicas and base then
    replicas = base.spec.replicas
    local noted = (base.metadata.annotations or {})["rollout/original-replicas"] -- an interrupted finalize's
    if noted then replicas = math.tointeger(tonumber(noted)) or replicas end
  elseif not replicas then
    -- the baseline went in an earlier finalize: its replicas are the promoted canary's
    local canary, cerr = c:get(cpath)
    if not canary then error(cerr, 0) end
    if (canary.metadata.labels or {})["deployment-type"] ~= "primary" then
      error("finalize: baseline " .. cfg.baseline_deployment .. " is gone and params.kubernetes.baseline_replicas is not set", 0)
    end
    replicas = canary.spec.replicas
  end
  -- 1. promote the canary to primary
  must(res.set_labels(c, cpath, { ["deployment-type"] = "primary" }))
  log(ctx, "1. " .. cfg.canary_deployment .. " labelled deployment-type=primary")
  -- 2. scale it to the baseline's replicas
  must(deployments.scale(c, ns, cfg.canary_deployment, replicas))
  log(ctx, "2. " .. cfg.canary_deployment .. " scaled to " .. replicas)
  -- 3. wait until every pod is ready
  local _, s = must(res.wait_pods(c, ns, selector(cfg, cfg.canary_version), { ready = replicas, timeout = cfg.ready_timeout,
    interval = cfg.interval, progress = function(msg) log(ctx, msg) end }))
  must(deployments.rollout_status(c, ns, cfg.canary_deployment, { timeout = cfg.ready_timeout, interval = cfg.interval }))
  log(ctx, string.format("3. %d/%d pods ready", s.ready, s.total))
  -- 4. drain and remove the baseline (its replica count kept on it until it is deleted)
  if base then
    must(res.set_annotations(c, deployments.path(ns, cfg.baseline_deployment),
      { ["rollout/original-replicas"] = tostring(replicas) }))
    must(deployments.scale(c, ns, cfg.baseline_deployment, 0))
    must(res.wait_pods(c, ns, selector(cfg, cfg.baseline_version), { gone = true, timeout = cfg.gone_timeout,
      interval = cfg.interval }))
    must(res.delete(c, deployments.path(ns, cfg.baseline_deployment), { interval = cfg.interval }))
    log(ctx, "4. baseline " .. cfg.baseline_deployment .. " scaled to 0 and deleted")
  else
    log(ctx, "4. baseline " .. cfg.baseline_deployment .. " already deleted")
  end
  -- 5. point the Service at the new version
  must(res.service_selector(c, ns, cfg.service, selector(cfg, cfg.canary_version)))
  log(ctx, "5. service " .. cfg.service .. " selects " .. res.selector(selector(cfg, cfg.canary_version)))
  -- 6. remove the canary routing
  if cfg.canary_virtualservice then
    local gv = (ctx.engine.pb.router or {}).api_version or "networking.istio.io/v1beta1"
    must(res.delete(c, string.format("/apis/%s/namespaces/%s/virtualservices/%s", gv, ns, cfg.canary_virtualservice),
      { interval = cfg.interval }))
    log(ctx, "6. virtualservice " .. cfg.canary_virtualservice .. " deleted")
  end
  -- 7. mark the deployment completed
  must(res.set_annotations(c, cpath, { ["deployment-status"] = "completed" }))
  log(ctx, "7. " .. cfg.canary_deployment .. " annotated deployment-status=completed")
  return true
end

-- ---- permissions ----------------------------------------------------------------------

--- Every permission the runbook's steps and the Istio router need, with why:
--- {verb=, group=, resource=, subresource=, namespace=(nil: cluster-wide), why=}.
function M.permissions(pb)
  local cfg = M.config(pb)
  local ns = cfg.namespace
  local out = {}
  local function add(verb, group, resource, sub, namespace, why)
    out[#out + 1] = { verb = verb, group = group, resource = resource, subresource = sub, namespace = namespace, why = why }
  end
  local istio = "networking.istio.io"
  add("get", istio, "virtualservices", nil, ns, "read the weights (router)")
  add("patch", istio, "virtualservices", nil, ns, "set the weights and the header route (router)")
  if cfg.canary_virtualservice then add("delete", istio, "virtualservices", nil, ns, "finalize: delete the canary VirtualService") end
  if cfg.destination_rule then add("get", istio, "destinationrules", nil, ns, "pre-flight: DestinationRule subsets") end
  add("get", "apps", "deployments", nil, ns, "rollout status, apply, read-back")
  add("create", "apps", "deployments", nil, ns, "deploy the canary (and the pre-flight dry run)")
  add("patch", "apps", "deployments", nil, ns, "apply, label, annotate")
  add("delete", "apps", "deployments", nil, ns, "finalize: delete the baseline")
  add("patch", "apps", "deployments", "scale", ns, "scale canary and baseline")
  add("list", "", "pods", nil, ns, "wait for pods ready / gone, restarts, image pulls")
  add("get", "", "services", nil, ns, "finalize: read the Service")
  add("patch", "", "services", nil, ns, "finalize: repoint the Service selector")
  if cfg.feature_flags then add("get", "", "configmaps", nil, ns, "pre-flight: feature flags") end
  if cfg.monitoring then
    add("list", "", "pods", nil, cfg.monitoring.namespace or "monitoring", "pre-flight: monitoring pods Running")
  end
  add("list", "", "nodes", nil, nil, "pre-flight: allocatable capacity")
  add("list", "", "pods", nil, nil, "pre-flight: requests of running pods on the nodes")
  return out
end

--- Ask the API server (SelfSubjectAccessReview) for each permission. Returns
--- {items = {{ok=, name=, detail=}...}, missing = {perm...}} | nil, err when it cannot ask.
function M.access_review(c, perms)
  local items, missing = {}, {}
  for _, p in ipairs(perms) do
    local allowed, reason, e = res.can_i(c, p)
    if allowed == nil then return nil, reason, e end
    local name = client.describe_attributes(p)
    items[#items + 1] = { name = "permission " .. name, ok = allowed, detail = allowed and p.why or ("MISSING: needed to " .. p.why) }
    if not allowed then missing[#missing + 1] = p end
  end
  return { items = items, missing = missing }
end

M.CHECKS = CHECKS
return M

-- spec/support/k8s_support.lua: the Kubernetes contract server (spec/support/k8s_contract.py)
-- for the k8s specs: HTTPS with a server certificate and a client CA (so client
-- certificates authenticate), kubeconfig files, and the runbook's whole cluster state.
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local yaml = require("rollout.yaml")
local servers = require("spec.support.servers")

local M = {}

local function support_dir()
  local src = debug.getinfo(1, "S").source
  return fs.realpath(src:match("^@(.*)/[^/]*$") or "spec/support")
end

local function sh(cmd)
  assert(os.execute(cmd .. " >/dev/null 2>&1"), "failed: " .. cmd)
end

--- A CA and a client certificate (CN = cn) signed by it, in dir.
function M.client_cert(dir, cn)
  local ca, cakey = dir .. "/client-ca.pem", dir .. "/client-ca.key"
  if not fs.stat(ca) then
    sh(string.format("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=contract-client-ca -keyout '%s' -out '%s'", cakey, ca))
  end
  local key, csr, cert = dir .. "/" .. cn .. ".key", dir .. "/" .. cn .. ".csr", dir .. "/" .. cn .. ".pem"
  sh(string.format("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=%s -keyout '%s' -out '%s'", cn, key, csr))
  sh(string.format("openssl x509 -req -in '%s' -CA '%s' -CAkey '%s' -CAcreateserial -days 2 -out '%s'", csr, ca, cakey, cert))
  return cert, key, ca
end

--- The runbook's cluster: namespace production with the baseline Deployment (10 replicas of
--- v2.9.0, as in canary-config.yaml), the Service dwcp-v3 selecting it, the feature-flags
--- ConfigMap, the VirtualService dwcp-v3 at 100 % baseline with the `canary: true` header
--- route and the canary VirtualService dwcp-v3-canary, a DestinationRule, three nodes, and
--- Prometheus and Grafana pods Running in namespace monitoring.
function M.runbook_cluster()
  local app = "dwcp-v3"
  local function container(image)
    return { name = "dwcp", image = image, ports = { { containerPort = 8080 } },
      resources = { requests = { cpu = "1000m", memory = "2Gi" }, limits = { cpu = "2000m", memory = "4Gi" } } }
  end
  local function node(name)
    return { metadata = { name = name, labels = { ["kubernetes.io/hostname"] = name } },
      status = { allocatable = { cpu = "16", memory = "64Gi", pods = "110" },
        conditions = { { type = "Ready", status = "True" } } } }
  end
  local function mon_pod(name, app_label)
    return { metadata = { name = name, namespace = "monitoring", labels = { app = app_label } },
      spec = { containers = { { name = app_label, image = "prom/" .. app_label } } },
      status = { phase = "Running", conditions = { { type = "Ready", status = "True" } } } }
  end
  return {
    nodes = { node("node-a"), node("node-b"), node("node-c") },
    deployments = { {
      metadata = { name = "dwcp-v3-baseline", namespace = "production",
        labels = { app = app, version = "v2.9.0", ["deployment-type"] = "baseline" } },
      spec = { replicas = 10, progressDeadlineSeconds = 600,
        selector = { matchLabels = { app = app, version = "v2.9.0" } },
        template = { metadata = { labels = { app = app, version = "v2.9.0", ["deployment-type"] = "baseline" } },
          spec = { containers = { container("novacron/dwcp:v2.9.0") } } } },
    } },
    services = { {
      metadata = { name = app, namespace = "production", labels = { app = app } },
      spec = { selector = { app = app, version = "v2.9.0" }, ports = { { port = 80, targetPort = 8080 } } },
    }, {
      metadata = { name = "dwcp-v3-baseline", namespace = "production" },
      spec = { selector = { app = app, version = "v2.9.0" }, ports = { { port = 80, targetPort = 8080 } } },
    }, {
      metadata = { name = "dwcp-v3-canary", namespace = "production" },
      spec = { selector = { app = app, version = "v3.0.0" }, ports = { { port = 80, targetPort = 8080 } } },
    } },
    configmaps = { {
      metadata = { name = "feature-flags", namespace = "production" },
      data = { dwcp_v3_protocol = "true", neural_routing = "true", adaptive_batching = "true" },
    } },
    pods = { mon_pod("prometheus-0", "prometheus"), mon_pod("grafana-5d9c", "grafana") },
    virtualservices = { {
      apiVersion = "networking.istio.io/v1beta1", kind = "VirtualService",
      metadata = { name = app, namespace = "production" },
      spec = { hosts = { "dwcp.example.com" }, http = {
        { match = { { headers = { canary = { exact = "true" } } } },
          route = { { destination = { host = "dwcp-v3-canary" }, weight = 100 } } },
        { route = { { destination = { host = "dwcp-v3-baseline" }, weight = 100 },
                    { destination = { host = "dwcp-v3-canary" }, weight = 0 } } },
      } },
    }, {
      apiVersion = "networking.istio.io/v1beta1", kind = "VirtualService",
      metadata = { name = "dwcp-v3-canary", namespace = "production" },
      spec = { hosts = { "dwcp-v3-canary.production.svc.cluster.local" }, http = {
        { route = { { destination = { host = "dwcp-v3-canary" }, weight = 100 } } } } },
    } },
    destinationrules = { {
      apiVersion = "networking.istio.io/v1beta1", kind = "DestinationRule",
      metadata = { name = app, namespace = "production" },
      spec = { host = app, subsets = { { name = "baseline", labels = { version = "v2.9.0" } },
        { name = "canary", labels = { version = "v3.0.0" } } } },
    } },
  }
end

--- Start the contract server over HTTPS with a client CA. Returns the server with .api,
--- .ca (server certificate), .token_file, .server_tokens, .dir, .client_cert/.client_key
--- (CN rollout-ci, signed by the client CA) and :control(path, body), :requests(),
--- :violations(), :state(), :obj(resource, ns, name), :kubeconfig(fields) -> path.
function M.contract(state, opts)
  opts = opts or {}
  local dir = assert(fs.mkdtemp("rollout-k8s"))
  local cert, key = servers.tls_cert(dir)
  local ccert, ckey, cca = M.client_cert(dir, "rollout-ci")
  local server_tokens, token_file = dir .. "/accepted-tokens", dir .. "/token"
  assert(fs.write_atomic(server_tokens, "token-1 system:serviceaccount:production:rollout\n"))
  assert(fs.write_atomic(token_file, "token-1\n"))
  assert(fs.write_atomic(dir .. "/state.json", json.encode(state or M.runbook_cluster())))
  local s = assert(servers.start{
    name = "k8s_contract.py", dir = dir, scheme = "https", ready_insecure = true,
    argv = { "/usr/bin/python3", support_dir() .. "/k8s_contract.py", "--port", "{port}", "--cert", cert,
      "--key", key, "--client-ca", cca, "--tokens", server_tokens, "--state", dir .. "/state.json",
      "--tick", tostring(opts.tick or 0.05), "--ready-ticks", tostring(opts.ready_ticks or 3) },
    ready_url = "https://127.0.0.1:{port}/healthz",
  })
  s.api, s.ca, s.token_file, s.server_tokens, s.own, s.dir = "https://127.0.0.1:" .. s.port, cert, token_file, server_tokens, dir, dir
  s.client_cert, s.client_key = ccert, ckey
  function s.control(_, path, body)
    local res = assert(http.request{ url = s.api .. path, method = body and "POST" or "GET", cafile = cert,
      body = body and json.encode(body) or nil, headers = body and { ["Content-Type"] = "application/json" } or nil })
    assert(res.status == 200, path .. ": HTTP " .. res.status .. " " .. res.body)
    return json.decode(res.body)
  end
  function s.requests() return s:control("/_contract/log") end
  function s.violations() return s:control("/_contract/violations") end
  function s.state() return s:control("/_contract/state") end
  function s.obj(_, resource, ns, name)
    for _, o in ipairs(s:state()[resource] or {}) do
      if o.metadata.name == name and (ns == nil or o.metadata.namespace == ns) then return o end
    end
  end
  --- Write a kubeconfig (YAML as JSON, which YAML reads) and return its path.
  function s.kubeconfig(_, user, cluster, name)
    local c = { server = s.api, ["certificate-authority"] = cert }
    for k, v in pairs(cluster or {}) do c[k] = v end
    local doc = { apiVersion = "v1", kind = "Config", ["current-context"] = "ci",
      clusters = { { name = "contract", cluster = c } },
      users = { { name = "ci", user = user or { token = "token-1" } } },
      contexts = { { name = "ci", context = { cluster = "contract", user = "ci", namespace = "production" } } } }
    local p = dir .. "/" .. (name or "kubeconfig")
    assert(fs.write_atomic(p, json.encode(doc)))
    return p
  end
  return s
end

function M.cleanup(s)
  if s then
    s:stop()
    if s.own then fs.rmtree(s.own) end
  end
end

--- The contract's permission set from RBAC documents, following the bindings to the
--- ServiceAccount sa: Roles bound by RoleBindings (their namespace), ClusterRoles bound by
--- ClusterRoleBindings (cluster-wide).
function M.rbac_from(docs, sa)
  local roles, cluster = {}, {}
  for _, d in ipairs(docs) do
    if d.kind == "Role" then roles[d.metadata.namespace .. "/" .. d.metadata.name] = d.rules
    elseif d.kind == "ClusterRole" then cluster[d.metadata.name] = d.rules end
  end
  local out = {}
  for _, d in ipairs(docs) do
    local bound = false
    for _, s in ipairs(d.subjects or {}) do
      if s.kind == "ServiceAccount" and s.name == sa.name and s.namespace == sa.namespace then bound = true end
    end
    if bound and d.kind == "RoleBinding" and d.roleRef.kind == "Role" then
      out[#out + 1] = { namespace = d.metadata.namespace, rules = assert(roles[d.metadata.namespace .. "/" .. d.roleRef.name]) }
    elseif bound and d.kind == "ClusterRoleBinding" and d.roleRef.kind == "ClusterRole" then
      out[#out + 1] = { namespace = json.null, rules = assert(cluster[d.roleRef.name]) }
    end
  end
  return { roles = out }
end

--- The permission set of contrib/kubernetes/rbac.yaml for its ServiceAccount.
function M.contrib_rbac()
  local docs = assert(yaml.load_all(assert(fs.read("contrib/kubernetes/rbac.yaml")), "rbac.yaml"))
  return M.rbac_from(docs, docs[1].metadata)
end

return M

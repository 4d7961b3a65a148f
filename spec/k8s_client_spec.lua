-- rollout.k8s.client and rollout.k8s.kubeconfig: credentials as kubectl finds them, client
-- certificates through the host's HTTP client, and typed errors, against the contract
-- server (spec/support/k8s_contract.py; no Kubernetes API server runs here).
local codec = require("rollout.codec")
local fs = require("rollout.fs")
local json = require("rollout.json")
local client = require("rollout.k8s.client")
local kubeconfig = require("rollout.k8s.kubeconfig")
local deployments = require("rollout.k8s.deployments")
local res = require("rollout.k8s.resources")
local support = require("spec.support.k8s_support")

describe("k8s.kubeconfig", function()
  local dir
  setup(function() dir = assert(fs.mkdtemp("kubeconfig")) end)
  teardown(function() fs.rmtree(dir) end)

  local function write(name, text)
    assert(fs.write_atomic(dir .. "/" .. name, text))
    return dir .. "/" .. name
  end

  local BASE = [[
apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: c1
  cluster:
    server: https://k8s.example.com:6443/
    certificate-authority: ca.crt
contexts:
- name: prod
  context: {cluster: c1, user: u1, namespace: production}
- name: dev
  context: {cluster: c1, user: u2}
users:
- name: u1
  user:
    tokenFile: secrets/token
- name: u2
  user:
    client-certificate-data: %s
    client-key-data: %s
]]

  it("reads the current context: server, namespace, CA and token file relative to the file", function()
    local p = write("config", string.format(BASE, codec.base64("CERT"), codec.base64("KEY")))
    local c = assert(kubeconfig.load{ path = p })
    assert.equals("https://k8s.example.com:6443", c.api)
    assert.same({ os.getenv("HOME") .. "/.kube/ci" }, kubeconfig.paths{ path = "~/.kube/ci" })
    assert.equals("production", c.namespace)
    assert.equals(dir .. "/ca.crt", c.ca_file)
    assert.equals(dir .. "/secrets/token", c.token_file)
    assert.matches("context prod", c.source)
    local d = assert(kubeconfig.load{ path = p, context = "dev" })
    assert.equals("CERT", d.cert_pem)
    assert.equals("KEY", d.key_pem)
    assert.is_nil(d.namespace)
  end)

  it("names the file and the key of what it cannot use", function()
    local p = write("exec", [[
current-context: x
clusters: [{name: c, cluster: {server: "https://a"}}]
contexts: [{name: x, context: {cluster: c, user: gke}}]
users: [{name: gke, user: {exec: {command: gke-gcloud-auth-plugin}}}]
]])
    local ok, err = kubeconfig.load{ path = p }
    assert.is_nil(ok)
    assert.matches(p:gsub("%p", "%%%0") .. ": users%[name=gke%]%.user%.exec: credential plugins are not supported", err)
    p = write("nocontext", "current-context: nope\nclusters: []\ncontexts: []\nusers: []\n")
    ok, err = kubeconfig.load{ path = p }
    assert.is_nil(ok)
    assert.matches('current%-context: no context named "nope"', err)
    p = write("badb64", string.format(BASE, "'not*base64'", codec.base64("KEY")))
    ok, err = kubeconfig.load{ path = p, context = "dev" }
    assert.is_nil(ok)
    assert.matches("users%[name=u2%]%.user%.client%-certificate%-data: not valid base64", err)
    ok, err = kubeconfig.load{ path = dir .. "/missing" }
    assert.is_nil(ok)
    assert.matches("kubeconfig: .*missing", err)
    local refused = {
      { "user", "{username: admin, password: secret}", "users%[name=u%]%.user%.username: basic authentication is not supported" },
      { "user", "{token: t, as: someone}", "users%[name=u%]%.user%.as: impersonation is not supported" },
      { "user", "{auth-provider: {name: oidc}}", "users%[name=u%]%.user%.auth%-provider: credential plugins are not supported" },
      { "cluster", "{server: 'https://a', tls-server-name: b}", "clusters%[name=c%]%.cluster%.tls%-server%-name: not supported" },
      { "cluster", "{server: 'https://a', proxy-url: 'http://p'}", "clusters%[name=c%]%.cluster%.proxy%-url: not supported" },
      { "cluster", "{server: 'ftp://a'}", "clusters%[name=c%]%.cluster%.server: required http%(s%) URL" },
      { "user", "{client-certificate: c.pem}", "users%[name=u%]%.user%.client%-key%(%-data%): required with client%-certificate" },
    }
    for i, case in ipairs(refused) do
      local user = case[1] == "user" and case[2] or "{token: t}"
      local cluster = case[1] == "cluster" and case[2] or "{server: 'https://a'}"
      p = write("refused" .. i, "current-context: x\nclusters: [{name: c, cluster: " .. cluster .. "}]\n"
        .. "contexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: " .. user .. "}]\n")
      ok, err = kubeconfig.load{ path = p }
      assert.is_nil(ok, case[2])
      assert.matches(case[3], err)
      assert.falsy(err:find("secret", 1, true), "no secret in the message")
    end
  end)

  it("merges several files as kubectl does: the first to set a name or the current context wins", function()
    local a = write("a", [[
current-context: one
clusters: [{name: c, cluster: {server: "https://first"}}]
users: [{name: u, user: {token: first}}]
contexts: [{name: one, context: {cluster: c, user: u, namespace: a}}]
]])
    local b = write("b", [[
current-context: two
clusters: [{name: c, cluster: {server: "https://second"}}, {name: d, cluster: {server: "https://d"}}]
users: [{name: u, user: {token: second}}]
contexts: [{name: two, context: {cluster: d, user: u}}]
]])
    local c = assert(kubeconfig.load{ paths = { a, dir .. "/absent", b } })
    assert.equals("https://first", c.api)
    assert.equals("first", c.token)
    assert.equals("a", c.namespace)
    c = assert(kubeconfig.load{ paths = { a, b }, context = "two" })
    assert.equals("https://d", c.api)
    assert.equals("first", c.token, "user u comes from the first file")
  end)
end)

describe("k8s.client against the contract server", function()
  local k8s
  setup(function() k8s = support.contract() end)
  teardown(function() support.cleanup(k8s) end)
  before_each(function()
    k8s:control("/_contract/state", support.runbook_cluster())
  end)
  after_each(function()
    local v = k8s:violations()
    assert.equals(0, #v, "contract violations: " .. json.encode(v))
  end)

  local function last_api_request()
    local reqs = k8s:requests()
    for i = #reqs, 1, -1 do if reqs[i].path:match("^/api") then return reqs[i] end end
  end

  it("authenticates with a kubeconfig's bearer token and uses its namespace", function()
    local c = client.new{ kubeconfig = k8s:kubeconfig() }
    assert.equals("production", c.namespace)
    local d = assert(deployments.get(c, c.namespace, "dwcp-v3-baseline"))
    assert.equals(10, d.spec.replicas)
    assert.equals("Bearer token-1", last_api_request().authorization)
  end)

  it("authenticates with client certificates, as files and as kubeconfig data, and verifies the CA from data", function()
    local cert, key, ca = assert(fs.read(k8s.client_cert)), assert(fs.read(k8s.client_key)), assert(fs.read(k8s.ca))
    local files = client.new{ kubeconfig = k8s:kubeconfig({ ["client-certificate"] = k8s.client_cert,
      ["client-key"] = k8s.client_key }, nil, "files") }
    assert(files:get("/api/v1/namespaces/production/configmaps/feature-flags"))
    local req = last_api_request()
    assert.is_true(req.authorization == nil or req.authorization == json.null, "no bearer token sent")
    assert.equals("rollout-ci", req.user, "the server saw the certificate's CN")
    local data = client.new{ kubeconfig = k8s:kubeconfig({ ["client-certificate-data"] = codec.base64(cert),
      ["client-key-data"] = codec.base64(key) }, { ["certificate-authority"] = json.null,
      ["certificate-authority-data"] = codec.base64(ca) }, "data") }
    assert(data:get("/api/v1/namespaces/production/configmaps/feature-flags"))
    assert.equals("rollout-ci", last_api_request().user)
    -- a CA that did not sign the server's certificate is refused; insecure-skip-tls-verify is not
    local wrong = client.new{ kubeconfig = k8s:kubeconfig(nil, { ["certificate-authority"] = k8s.client_cert }, "wrong") }
    local ok, err, e = wrong:get("/api/v1/nodes")
    assert.is_nil(ok)
    assert.equals("transport", e.kind)
    assert.matches("GET /api/v1/nodes", err)
    local insecure = client.new{ kubeconfig = k8s:kubeconfig(nil, { ["certificate-authority"] = json.null,
      ["insecure-skip-tls-verify"] = true }, "insecure") }
    assert(insecure:get("/api/v1/nodes"))
  end)

  it("types errors: 401, 403 naming the verb and resource, 404, 422 with the server's message", function()
    fs.write_atomic(k8s.token_file, "wrong\n")
    local c = client.new{ api = k8s.api, token_file = k8s.token_file, ca_file = k8s.ca }
    local ok, err, e = c:get("/api/v1/nodes")
    assert.is_nil(ok)
    assert.equals("unauthorized", e.kind)
    assert.matches("HTTP 401", err)
    fs.write_atomic(k8s.token_file, "token-1\n")
    k8s:control("/_contract/rbac", { roles = { { namespace = "production", rules = {
      { apiGroups = { "apps" }, resources = { "deployments" }, verbs = { "get" } } } } } })
    ok, err, e = deployments.scale(c, "production", "dwcp-v3-baseline", 3)
    assert.is_nil(ok)
    assert.equals("forbidden", e.kind)
    assert.equals("patch", e.verb)
    assert.equals("deployments", e.resource)
    assert.equals("scale", e.subresource)
    assert.matches('may not patch deployments/scale in API group "apps" in namespace production', err)
    ok, err, e = deployments.get(c, "production", "nope")
    assert.is_nil(ok)
    assert.equals("not_found", e.kind)
    assert.matches('deployments.apps "nope" not found', err)
    k8s:control("/_contract/rbac", json.null)
    local m = deployments.manifest{ name = "bad", namespace = "production", image = "x:1", labels = { app = "a" },
      selector = { app = "b" } }
    ok, err, e = deployments.apply(c, m)
    assert.is_nil(ok)
    assert.equals("invalid", e.kind)
    assert.matches("selector.* does not match template .labels", err)
    assert.equals(1, #k8s:violations()) -- the refused create, on purpose
    k8s:control("/_contract/state", support.runbook_cluster())
  end)

  it("retries a 409 with a fresh read", function()
    local c = client.new{ api = k8s.api, token_file = k8s.token_file, ca_file = k8s.ca }
    local other = client.new{ api = k8s.api, token_file = k8s.token_file, ca_file = k8s.ca }
    local path = deployments.path("production", "dwcp-v3-baseline")
    local calls = 0
    local obj = assert(c:modify(path, function(cur)
      calls = calls + 1
      if calls == 1 then -- someone else writes between our read and our patch
        assert(other:merge_patch(path, { metadata = { annotations = { owner = "someone" } } }))
      end
      local want
      if calls > 1 then want = "someone" end
      assert.equals(want, (cur.metadata.annotations or {}).owner)
      return { metadata = { labels = { touched = "yes" } } }
    end))
    assert.equals(2, calls)
    assert.equals("yes", obj.metadata.labels.touched)
    assert.equals("someone", obj.metadata.annotations.owner, "the other writer's change was kept")
    local conflicts = 0
    for _, q in ipairs(k8s:requests()) do if q.status == 409 then conflicts = conflicts + 1 end end
    assert.equals(1, conflicts)
  end)

  it("finds the in-cluster service account and re-reads its rotated token", function()
    -- a child with the pod's environment; only the service-account directory is moved
    local sa = k8s.dir .. "/sa"
    assert(fs.mkdir(sa, 448, true))
    assert(fs.write_atomic(sa .. "/token", "token-1\n"))
    assert(fs.write_atomic(sa .. "/namespace", "production\n"))
    assert(fs.write_atomic(sa .. "/ca.crt", assert(fs.read(k8s.ca))))
    local script = k8s.dir .. "/incluster.lua"
    assert(fs.write_atomic(script, string.format([[
local client = require("rollout.k8s.client")
client.SA_DIR = %q
local c = client.new{}
assert(c.source == "in-cluster service account", c.source)
assert(c.namespace == "production", c.namespace)
assert(c:get("/api/v1/namespaces/production/configmaps/feature-flags"))
-- the kubelet rotates the token; the old one is revoked
assert(fs.write_atomic(%q, "token-1\ntoken-2\n"))
assert(fs.write_atomic(%q, "token-2\n"))
assert(fs.write_atomic(%q, "token-2\n"))
local cm, err = c:get("/api/v1/namespaces/production/configmaps/feature-flags")
assert(cm, err)
print("ok " .. c.api)
]], sa, k8s.server_tokens, sa .. "/token", k8s.server_tokens)))
    local proc = require("rollout.proc")
    local r = assert(proc.run{ argv = { rollout.exe, script }, timeout = 30,
      env = { KUBERNETES_SERVICE_HOST = "127.0.0.1", KUBERNETES_SERVICE_PORT = tostring(k8s.port),
        PATH = os.getenv("PATH"), HOME = os.getenv("HOME") } })
    fs.write_atomic(k8s.server_tokens, "token-1 system:serviceaccount:production:rollout\n")
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.equals("ok https://127.0.0.1:" .. k8s.port .. "\n", r.stdout)
    local saw401, last
    for _, q in ipairs(k8s:requests()) do
      if q.path:match("^/api/") then
        if q.status == 401 then saw401 = true end
        last = q
      end
    end
    assert.is_true(saw401, "the revoked token was refused once")
    assert.equals("Bearer token-2", last.authorization)
  end)

  it("counts restarts and crash loops, names image pull errors, reads DestinationRule subsets", function()
    local c = client.new{ api = k8s.api, token_file = k8s.token_file, ca_file = k8s.ca }
    k8s:control("/_contract/deployment", { namespace = "production", name = "dwcp-v3-baseline", crash = true })
    local s
    for _ = 1, 100 do
      s = res.pod_summary(assert(res.pods(c, "production", { app = "dwcp-v3", version = "v2.9.0" })))
      if s.max_restarts >= 3 then break end
      rollout.sleep(0.05)
    end
    assert.equals(10, s.total)
    assert.ge(s.max_restarts, 3)
    assert.ge(s.restarts, 30)
    assert.equals(10, #s.crash_looping)
    assert.equals(0, s.ready)
    k8s:control("/_contract/images", { unpullable = { "bad:1" } })
    assert(deployments.apply(c, deployments.manifest{ name = "pull", namespace = "production", image = "bad:1",
      labels = { app = "pull" }, replicas = 1 }))
    local ok, err = res.wait_pods(c, "production", { app = "pull" }, { ready = 1, timeout = 5, interval = 0.05 })
    assert.is_nil(ok)
    assert.matches("cannot pull their image: pull%-.*: ErrImagePull: .*bad:1", err)
    local subsets = assert(res.destination_subsets(c, "production", "dwcp-v3"))
    assert.same({ baseline = { version = "v2.9.0" }, canary = { version = "v3.0.0" } }, subsets)
  end)

  it("the kubernetes source counts each version's restarts within the window, not those from before", function()
    local sources = require("rollout.sources")
    assert.same({ "namespace: must be a Kubernetes name (lower-case letters, digits, '-', '.')", "selectors.x: unknown version (baseline, canary)" },
      sources.validate{ type = "kubernetes", namespace = "Prod", selectors = { x = {} } })
    local src = sources.new({ type = "kubernetes", namespace = "production", api = k8s.api, token_file = k8s.token_file,
      ca_file = k8s.ca }, { service = "dwcp-v3", versions = { baseline = { version = "v2.9.0" }, canary = { version = "v3.0.0" } } })
    assert.same({ baseline = {}, canary = {} }, src:signals(0, 10), "no tick: no data")
    k8s:control("/_contract/deployment", { namespace = "production", name = "dwcp-v3-baseline", crash = true })
    rollout.sleep(0.3) -- restarts before the first tick are not the rollout's
    assert(src:tick(100))
    local s = src:signals(100, 10)
    assert.equals(0, s.baseline.restarts)
    assert.equals(0, s.canary.restarts, "no canary pods: none restarted")
    rollout.sleep(0.3)
    assert(src:tick(101))
    s = src:signals(101, 10)
    assert.ge(s.baseline.restarts, 10, "every baseline pod restarted since the first tick")
    local at101 = s.baseline.restarts
    rollout.sleep(0.3)
    assert(src:tick(112))
    s = src:signals(112, 10) -- the window starts after the tick at 101
    assert.gt(s.baseline.restarts, 0)
    assert.lt(s.baseline.restarts, at101 + 100)
    assert.equals(11, s.baseline.span)
    k8s:control("/_contract/state", support.runbook_cluster())
  end)

  it("refuses a client certificate without its key (http.request)", function()
    local http = require("rollout.http")
    assert.has_error(function() http.request{ url = k8s.api, cert = k8s.client_cert } end, "needs a key")
    assert.has_error(function() http.request{ url = k8s.api, cafile = k8s.ca, ca_pem = "x" } end, "not both")
  end)

  it("names the API groups and verbs of a request as RBAC sees them", function()
    assert.same({ verb = "patch", group = "apps", version = "v1", namespace = "p", resource = "deployments", name = "d",
      subresource = "scale" }, client.attributes("PATCH", "/apis/apps/v1/namespaces/p/deployments/d/scale"))
    assert.same({ verb = "list", group = "", version = "v1", resource = "nodes" }, client.attributes("GET", "/api/v1/nodes"))
    assert.equals("list", client.attributes("GET", "/api/v1/namespaces/p/pods?labelSelector=a%3Db").verb)
  end)

  it("creates a Deployment from a YAML template, then leaves it or updates it as the manifest says", function()
    local c = client.new{ api = k8s.api, token_file = k8s.token_file, ca_file = k8s.ca, namespace = "production" }
    local tpl = [[
apiVersion: apps/v1
kind: Deployment
metadata: {name: "${NAME}", labels: {app: web, deployment-id: "${DEPLOY_ID}"}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web, version: "${VERSION}"}}
  template:
    metadata: {labels: {app: web, version: "${VERSION}"}}
    spec: {containers: [{name: web, image: "${IMAGE}"}]}
]]
    local m, err = deployments.render(tpl, { NAME = "web", VERSION = "v2", IMAGE = "web:2" })
    assert.is_nil(m)
    assert.matches("undefined variable .*metadata%.labels%.deployment%-id: %${DEPLOY_ID}", err)
    m = assert(deployments.render(tpl, { NAME = "web", VERSION = "v2", IMAGE = "web:2", DEPLOY_ID = "d-1" }))
    local d, verdict = assert(deployments.apply(c, m))
    assert.equals("created", verdict)
    assert.equals("web:2", d.spec.template.spec.containers[1].image)
    assert.equals("production", d.metadata.namespace)
    local same
    same, verdict = assert(deployments.apply(c, m))
    assert.equals("unchanged", verdict)
    assert.equals("web", same.metadata.name)
    m.spec.template.spec.containers[1].image = "web:2.1"
    d, verdict = assert(deployments.apply(c, m))
    assert.equals("updated", verdict)
    assert.equals(2, d.metadata.generation)
    local writes = 0
    for _, q in ipairs(k8s:requests()) do
      -- successful writes (a 409 from racing the controller's status update is retried)
      if q.path:match("/deployments/web$") and q.method ~= "GET" and q.status == 200 then writes = writes + 1 end
    end
    assert.equals(1, writes, "the unchanged apply wrote nothing")
    assert(deployments.rollout_status(c, "production", "web", { timeout = 10, interval = 0.05 }))
    local live = {}
    for _, p in ipairs(assert(res.pods(c, "production", { app = "web" }))) do
      if p.metadata.deletionTimestamp == nil then live[#live + 1] = p end -- old ones may still be terminating
    end
    assert.equals(2, #live)
    for _, p in ipairs(live) do assert.equals("web:2.1", p.spec.containers[1].image) end
  end)

  it("parses quantities as the API writes them", function()
    assert.equals(1, res.quantity("1000m"))
    assert.equals(2 * 2 ^ 30, res.quantity("2Gi"))
    assert.equals(16, res.quantity("16"))
    assert.equals(1.5e9, res.quantity("1.5G"))
    assert.equals(128974848, res.quantity("128974848"))
    assert.equals(1000, res.quantity("1e3"))
    assert.is_nil(res.quantity("12 cores"))
  end)
end)

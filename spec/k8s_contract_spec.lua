-- The contract server refuses what the API server (and the official Python client's models)
-- would refuse: a contract that accepts anything proves nothing about rollout's requests.
local http = require("rollout.http")
local json = require("rollout.json")
local support = require("spec.support.k8s_support")

describe("the Kubernetes contract server", function()
  local k8s
  setup(function() k8s = support.contract() end)
  teardown(function() support.cleanup(k8s) end)
  before_each(function() k8s:control("/_contract/state", support.runbook_cluster()) end)

  local function req(method, path, body, ctype)
    local res = assert(http.request{ method = method, url = k8s.api .. path, cafile = k8s.ca, bearer = "token-1",
      body = body and (type(body) == "string" and body or json.encode(body)) or nil,
      headers = { Accept = "application/json", ["Content-Type"] = body and (ctype or "application/json") or nil } })
    return res.status, json.decode(res.body), res
  end

  local DEPS = "/apis/apps/v1/namespaces/production/deployments"
  local function deployment(over)
    local d = { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "x", namespace = "production" },
      spec = { replicas = 1, selector = { matchLabels = { app = "x" } },
        template = { metadata = { labels = { app = "x" } }, spec = { containers = { { name = "c", image = "i:1" } } } } } }
    if over then over(d) end
    return d
  end

  it("refuses with the official client's message what its models reject", function()
    local code, st = req("POST", DEPS, deployment(function(d) d.spec.template.spec.containers[1].name = nil end))
    assert.equals(422, code)
    assert.matches("V1Deployment rejected by the Kubernetes Python client: Invalid value for `name`, must not be `None`", st.message)
    code, st = req("POST", DEPS, deployment(function(d) d.spec.selector = nil end))
    assert.equals(422, code)
    assert.matches("`selector`, must not be `None`", st.message)
  end)

  it("refuses wrong JSON types, a selector that misses the template, a changed selector, a missing image", function()
    local code, st = req("POST", DEPS, deployment(function(d) d.spec.replicas = "2" end))
    assert.equals(400, code)
    assert.matches("spec.replicas: cannot unmarshal str into an integer field", st.message)
    code, st = req("POST", DEPS, deployment(function(d) d.spec.selector.matchLabels.app = "y" end))
    assert.equals(422, code)
    assert.matches("`selector` does not match template `labels`", st.message)
    code = req("POST", DEPS, deployment(function(d) d.spec.template.spec.containers[1].image = nil end))
    assert.equals(422, code)
    assert.equals(201, (req("POST", DEPS, deployment())))
    code, st = req("PATCH", DEPS .. "/x", { spec = { selector = { matchLabels = { app = "x", v = "2" } } } }, "application/merge-patch+json")
    assert.equals(422, code)
    assert.matches("field is immutable", st.message)
  end)

  it("records unknown fields, answers with a Warning, and keeps the API's verbs, types and versions", function()
    local code, _, res = req("POST", "/api/v1/namespaces/production/configmaps",
      { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "c" }, data = { a = "1" }, bogus = true })
    assert.equals(201, code)
    assert.matches("unknown field", res.headers.warning)
    local v = k8s:violations()
    assert.equals(1, #v)
    assert.matches('"bogus"', v[1].why)
    assert.equals(409, (req("POST", "/api/v1/namespaces/production/configmaps",
      { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "c" } })))
    assert.equals(400, (req("POST", DEPS, deployment(function(d) d.kind = "StatefulSet" end))))
    assert.equals(415, (req("PATCH", DEPS .. "/dwcp-v3-baseline", { metadata = { labels = { a = "b" } } },
      "application/strategic-merge-patch+json")))
    assert.equals(415, (req("POST", DEPS, deployment(), "application/yaml")))
    assert.equals(405, (req("PUT", DEPS .. "/dwcp-v3-baseline/scale", { spec = { replicas = 1 } })))
    assert.equals(405, (req("DELETE", "/api/v1/nodes/node-a")))
    assert.equals(404, (req("GET", "/apis/apps/v1beta1/namespaces/production/deployments/dwcp-v3-baseline")))
    local rv = select(2, req("GET", DEPS .. "/dwcp-v3-baseline")).metadata.resourceVersion
    assert.equals(409, (req("PATCH", DEPS .. "/dwcp-v3-baseline", { metadata = { resourceVersion = "1", labels = { a = "b" } } },
      "application/merge-patch+json")))
    assert.equals(200, (req("PATCH", DEPS .. "/dwcp-v3-baseline", { metadata = { resourceVersion = rv, labels = { a = "b" } } },
      "application/merge-patch+json")))
    assert.equals(422, (req("PUT", DEPS .. "/dwcp-v3-baseline", select(2, req("GET", DEPS .. "/dwcp-v3-baseline")) and
      deployment(function(d) d.metadata.name = "dwcp-v3-baseline" end))), "PUT without resourceVersion")
  end)

  it("checks coordination Leases with the client's model and PUT's resourceVersion", function()
    local LEASES = "/apis/coordination.k8s.io/v1/namespaces/production/leases"
    local lease = { apiVersion = "coordination.k8s.io/v1", kind = "Lease", metadata = { name = "l" },
      spec = { holderIdentity = "a", leaseDurationSeconds = 15 } }
    local code, st = req("POST", LEASES, { apiVersion = "coordination.k8s.io/v1", kind = "Lease", metadata = { name = "l" },
      spec = { holderIdentity = 5 } })
    assert.equals(400, code)
    assert.matches("spec.holderIdentity: cannot unmarshal int into a str field", st.message)
    local created
    code, created = req("POST", LEASES, lease)
    assert.equals(201, code)
    created.spec.holderIdentity = "b"
    local stale = json.decode(json.encode(created))
    assert.equals(200, (req("PUT", LEASES .. "/l", created)))
    stale.spec.holderIdentity = "c"
    assert.equals(409, (req("PUT", LEASES .. "/l", stale)), "a PUT with an old resourceVersion loses")
    assert.equals("b", select(2, req("GET", LEASES .. "/l")).spec.holderIdentity)
  end)

  it("makes pods as a Deployment's controller would: created, ready later, deleted on scale-down", function()
    assert.equals(201, (req("POST", DEPS, deployment(function(d) d.spec.replicas = 3 end))))
    local function pods()
      local _, list = req("GET", "/api/v1/namespaces/production/pods?labelSelector=app%3Dx")
      return list.items
    end
    local p = pods()
    assert.is_true(#p < 3, "pods are not there at once")
    local t0 = rollout.now()
    local ready
    repeat
      rollout.sleep(0.05)
      ready = 0
      for _, x in ipairs(pods()) do
        for _, c in ipairs(x.status.conditions or {}) do if c.type == "Ready" and c.status == "True" then ready = ready + 1 end end
      end
    until ready == 3 or rollout.now() - t0 > 5
    assert.equals(3, ready)
    p = pods()
    assert.truthy(p[1].metadata.labels["pod-template-hash"])
    assert.equals("ReplicaSet", p[1].metadata.ownerReferences[1].kind)
    assert.equals(200, (req("PATCH", DEPS .. "/x/scale", { spec = { replicas = 1 } }, "application/merge-patch+json")))
    t0 = rollout.now()
    repeat rollout.sleep(0.05) until #pods() == 1 or rollout.now() - t0 > 5
    assert.equals(1, #pods())
    assert.equals(200, (req("DELETE", DEPS .. "/x")))
    t0 = rollout.now()
    repeat rollout.sleep(0.05) until #pods() == 0 or rollout.now() - t0 > 5
    assert.equals(0, #pods(), "a deleted Deployment's pods go")
    k8s:control("/_contract/state", support.runbook_cluster())
  end)
end)

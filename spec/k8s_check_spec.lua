-- `rollout check` asks the API server (SelfSubjectAccessReview) for every permission the
-- playbook needs, and contrib/kubernetes/ grants exactly those: the RBAC YAML is generated
-- from the same list and the contract server enforces it (spec/support/k8s_contract.py).
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local yaml = require("rollout.yaml")
local playbook = require("rollout.playbook")
local access = require("rollout.k8s.access")
local support = require("spec.support.k8s_support")

local PLAYBOOK = "playbooks/canary-k8s.lua"

local rbac_from = support.rbac_from

describe("rollout check: Kubernetes permissions", function()
  local k8s, docs
  setup(function()
    k8s = support.contract()
    docs = assert(yaml.load_all(assert(fs.read("contrib/kubernetes/rbac.yaml")), "rbac.yaml"))
  end)
  teardown(function() support.cleanup(k8s) end)
  before_each(function() k8s:control("/_contract/state", support.runbook_cluster()) end)
  after_each(function()
    local v = k8s:violations()
    assert.equals(0, #v, "contract violations: " .. json.encode(v))
  end)

  -- No Prometheus or Alertmanager runs here, and `check` asks every configured source (a
  -- source that cannot answer fails it): the permissions are checked without sources.
  local function check(extra)
    local argv = { rollout.exe, "check", PLAYBOOK, "--set", "router.api=" .. k8s.api, "--set", "router.token_file=" .. k8s.token_file,
      "--set", "router.ca_file=" .. k8s.ca, "--set", "sources=[]" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    return assert(proc.run({ argv = argv, timeout = 60 }))
  end

  it("keeps contrib/kubernetes/rbac.yaml in step with the list `check` asks about", function()
    local pb = assert(playbook.load(PLAYBOOK))
    assert.equals(access.rbac_yaml(pb), assert(fs.read("contrib/kubernetes/rbac.yaml")),
      "regenerate: rollout tools/k8s_rbac.lua playbooks/canary-k8s.lua > contrib/kubernetes/rbac.yaml")
    local kinds = {}
    for _, d in ipairs(docs) do kinds[#kinds + 1] = d.kind end
    assert.same({ "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Role", "RoleBinding" }, kinds)
  end)

  it("passes with exactly the RBAC of contrib/kubernetes/rbac.yaml and asks about each permission", function()
    local sa = docs[1].metadata
    k8s:control("/_contract/rbac", rbac_from(docs, sa))
    local r = check()
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local pb = assert(playbook.load(PLAYBOOK))
    local perms = access.permissions(pb)
    local reviews = 0
    for _, q in ipairs(k8s:requests()) do
      if q.path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" then reviews = reviews + 1 end
    end
    assert.equals(#perms, reviews)
    assert.matches("ok   permission patch deployments/scale in API group \"apps\" in namespace production", r.stdout)
    assert.matches("ok   permission list nodes in the core API group %(cluster%-wide%)", r.stdout)
    assert.matches("ok   kubernetes permissions: all " .. #perms .. " granted", r.stdout)
  end)

  it("lists each missing permission and exits 3", function()
    local sa = docs[1].metadata
    local rbac = rbac_from(docs, sa)
    -- take away delete on deployments and the whole cluster role
    for i = #rbac.roles, 1, -1 do
      local role = rbac.roles[i]
      if role.namespace == json.null then table.remove(rbac.roles, i) end
      for _, rule in ipairs(role.rules) do
        if rule.resources[1] == "deployments" then
          local verbs = {}
          for _, v in ipairs(rule.verbs) do if v ~= "delete" then verbs[#verbs + 1] = v end end
          rule.verbs = verbs
        end
      end
    end
    k8s:control("/_contract/rbac", rbac)
    local r = check()
    assert.equals(3, r.code, r.stdout .. r.stderr)
    local fails = {}
    for line in r.stdout:gmatch("[^\n]+") do if line:match("^FAIL permission") then fails[#fails + 1] = line end end
    assert.equals(3, #fails, r.stdout)
    assert.matches('FAIL permission delete deployments in API group "apps" in namespace production: MISSING: needed to finalize: delete the baseline', r.stdout)
    assert.matches("FAIL permission list nodes in the core API group %(cluster%-wide%)", r.stdout)
    assert.matches("FAIL permission list pods in the core API group %(cluster%-wide%)", r.stdout)
    assert.matches("FAIL kubernetes permissions: 3 of %d+ missing", r.stdout)
  end)

  it("refuses a bad params.kubernetes with file, line and key (exit 2), before any request", function()
    local function api_requests()
      local n = 0
      for _, q in ipairs(k8s:requests()) do if q.path:match("^/api") then n = n + 1 end end
      return n
    end
    local before = api_requests()
    local r = check({ "--set", "params.kubernetes.canary_replicas=two", "--set", "params.kubernetes.namespace=Prod" })
    assert.equals(2, r.code, r.stdout .. r.stderr)
    assert.matches("playbooks/canary%-k8s%.lua:%d+: params%.kubernetes%.canary_replicas: expected an integer >= 1", r.stderr)
    assert.matches("playbooks/canary%-k8s%.lua:%d+: params%.kubernetes%.namespace: must be a Kubernetes name", r.stderr)
    local run = assert(proc.run({ timeout = 60, argv = { rollout.exe, "run", PLAYBOOK, "--set", "router.api=" .. k8s.api,
      "--set", "router.token_file=" .. k8s.token_file, "--set", "router.ca_file=" .. k8s.ca,
      "--set", "params.kubernetes.ready_timeout=soon", "--journal", k8s.dir .. "/journal-bad" } }))
    assert.equals(2, run.code, run.stdout .. run.stderr)
    assert.matches("params%.kubernetes%.ready_timeout: malformed duration %(want e%.g%. 250ms", run.stderr)
    assert.equals(before, api_requests(), "nothing was asked of the API server")
  end)

  it("gives playbooks the k8s module, but none of its calls while the playbook loads", function()
    local dir = assert(fs.mkdtemp("k8s-load"))
    local pb = dir .. "/load.lua"
    assert(fs.write_atomic(pb, [[
local k8s = require("rollout.k8s")
local c = k8s.client{ api = "https://127.0.0.1:1" }
return { name = "x", versions = { baseline = { version = "1" }, canary = { version = "2" } },
  stages = { { weight = 100, hold = 1 } } }
]]))
    local r = assert(proc.run({ argv = { rollout.exe, "check", pb, "--offline" }, timeout = 30 }))
    fs.rmtree(dir)
    assert.equals(2, r.code, r.stdout .. r.stderr)
    assert.matches("load%.lua:2: .*k8s%.client: not available while a playbook loads", r.stderr)
  end)

  it("says why when it cannot ask the API server", function()
    fs.write_atomic(k8s.token_file, "revoked\n")
    local r = check()
    fs.write_atomic(k8s.token_file, "token-1\n")
    assert.equals(3, r.code)
    assert.matches("FAIL kubernetes permissions: cannot ask the API server: .*HTTP 401", r.stdout)
  end)

  it("ships a Job the official client accepts, running as the RBAC's ServiceAccount with arguments `check` accepts", function()
    local text = assert(fs.read("contrib/kubernetes/job.yaml"))
    local jdocs = assert(yaml.load_all(text, "job.yaml"))
    local job = jdocs[1]
    assert.equals("Job", job.kind)
    assert.equals(docs[1].metadata.name, job.spec.template.spec.serviceAccountName)
    assert.equals(docs[1].metadata.namespace, job.metadata.namespace)
    -- the official Kubernetes Python client deserialises it as a V1Job
    local dir = assert(fs.mkdtemp("k8s-job"))
    assert(fs.write_atomic(dir .. "/job.json", json.encode(job)))
    local py = assert(proc.run({ timeout = 30, argv = { "/usr/bin/python3", "-c", [[
import json, sys
from kubernetes.client import ApiClient
class R:
    data = open(sys.argv[1]).read()
job = ApiClient().deserialize(R(), "V1Job")
print(job.spec.template.spec.service_account_name, job.spec.backoff_limit)
]], dir .. "/job.json" } }))
    fs.rmtree(dir)
    assert.equals(0, py.code, py.stderr)
    assert.equals("rollout 0", (py.stdout:gsub("%s+$", "")))
    -- its arguments, with the playbook path made local, pass `rollout check --offline`
    local args = job.spec.template.spec.containers[1].args
    assert.equals("run", args[1])
    local argv = { rollout.exe, "check", PLAYBOOK, "--offline" }
    local i = 3
    while i <= #args do
      if args[i] == "--set" then argv[#argv + 1] = "--set"; argv[#argv + 1] = args[i + 1] end
      i = i + 2
    end
    local r = assert(proc.run({ argv = argv, timeout = 30 }))
    assert.equals(0, r.code, r.stdout .. r.stderr)
  end)
end)

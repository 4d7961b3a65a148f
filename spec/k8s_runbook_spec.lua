-- playbooks/canary-k8s.lua end to end: `rollout run` of the runbook playbook itself, against
-- the Kubernetes contract server (spec/support/k8s_contract.py: no API server runs here),
-- with signals from real sample-service backends through the probe source. Holds are
-- seconds long through --set; everything else is the shipped playbook.
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local journal = require("rollout.journal")
local servers = require("spec.support.servers")
local support = require("spec.support.k8s_support")

local PLAYBOOK = "playbooks/canary-k8s.lua"

describe("playbooks/canary-k8s.lua against the contract server", function()
  local k8s, dir, backends

  local function start_backends(canary_args)
    local svc = assert(fs.realpath("sample-service"), "sample-service is not built (make)")
    local out, list = {}, {}
    for _, v in ipairs({ "v1", "v2" }) do
      local argv = { svc, "--version", v, "--listen", "127.0.0.1:{port}" }
      if v == "v2" then for _, a in ipairs(canary_args or {}) do argv[#argv + 1] = a end end
      local s = assert(servers.start{ name = "sample-service " .. v, argv = argv, ready_url = "http://127.0.0.1:{port}/health" })
      out[v] = "http://127.0.0.1:" .. s.port
      list[#list + 1] = s
    end
    out.stop = function() for _, s in ipairs(list) do s:stop() end end
    return out
  end

  setup(function()
    k8s = support.contract(nil, { tick = 0.03, ready_ticks = 3 })
    dir = assert(fs.mkdtemp("k8s-runbook"))
  end)
  teardown(function()
    support.cleanup(k8s)
    if backends then backends.stop() end
    if dir then fs.rmtree(dir) end
  end)
  before_each(function()
    k8s:control("/_contract/state", support.runbook_cluster())
  end)
  after_each(function()
    local v = k8s:violations()
    assert.equals(0, #v, "contract violations: " .. json.encode(v))
    if backends then backends.stop(); backends = nil end
  end)

  -- The shipped playbook with second-long holds and signals from the probe source.
  local function sets(jdir, extra)
    local argv = {
      "--set", "router.api=" .. k8s.api, "--set", "router.token_file=" .. k8s.token_file,
      "--set", "router.ca_file=" .. k8s.ca, "--set", "router.poll_interval=0.05",
      "--set", "versions.baseline.url=" .. backends.v1, "--set", "versions.canary.url=" .. backends.v2,
      "--set", 'sources=[{"type":"probe","rate":40,"timeout":"1s","health_interval":"0.2s","health_timeout":"0.5s"},'
        .. json.encode({ type = "kubernetes", namespace = "production", api = k8s.api, token_file = k8s.token_file,
          ca_file = k8s.ca }) .. "]",
      "--set", "interval=0.25s", "--set", "trigger_window=1s", "--set", "gate_window=1s",
      "--set", 'thresholds={"error_rate":"5%"}',
      -- ~40 probe requests per 1 s gate window: evidence for a canary 10x worse, not 3x
      "--set", "policy.detect=10",
      "--set", 'stages=[{"name":"Initial","weight":5,"hold":"1s"},{"name":"Ramp-Up","weight":25,"hold":"1s"},'
        .. '{"name":"Half","weight":50,"hold":"1s"},{"name":"Majority","weight":75,"hold":"1s"},'
        .. '{"name":"Full","weight":100,"hold":"1s"}]',
      "--set", 'triggers={"error_rate":{"condition":"error_rate > 20%","duration":"0.5s"},"crash_loop":{"restarts":3,"within":"2s"}}',
      "--set", "ab_test.enabled=false",
      "--set", "params.kubernetes.interval=0.05s", "--set", "params.kubernetes.ready_timeout=20s",
      "--set", "params.kubernetes.gone_timeout=10s",
      "--journal", jdir, "--run-dir", dir .. "/run",
    }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    return argv
  end

  local function run(args, timeout)
    local argv = { rollout.exe }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return assert(proc.run{ argv = argv, timeout = timeout or 120 })
  end

  local function events(jdir)
    local out = {}
    for _, p in ipairs(journal.list(jdir)) do
      for _, ev in ipairs(journal.read(p) or {}) do out[#out + 1] = ev end
    end
    return out
  end

  local function find_all(evs, kind)
    local out = {}
    for _, e in ipairs(evs) do if e.event == kind then out[#out + 1] = e end end
    return out
  end

  local function confirmed(evs)
    local out = {}
    for _, e in ipairs(find_all(evs, "weight_confirmed")) do
      if out[#out] ~= e.canary then out[#out + 1] = e.canary end
    end
    return out
  end

  local function pods(sel)
    local out = {}
    for _, p in ipairs(k8s:state().pods) do
      local ok = true
      for key, v in pairs(sel) do if (p.metadata.labels or {})[key] ~= v then ok = false end end
      if ok then out[#out + 1] = p end
    end
    return out
  end

  local function run_playbook(jdir, extra)
    local args = { "run", PLAYBOOK }
    for _, a in ipairs(sets(jdir, extra)) do args[#args + 1] = a end
    return run(args)
  end

  local function statuses(evs)
    local out = {}
    for _, e in ipairs(find_all(evs, "preflight_check")) do out[e.check] = e.status end
    return out
  end

  local function deployment(name) return k8s:obj("deployments", "production", name) end

  it("promotes: ten pre-flight checks, the canary deployed and ready, five stages, finalize confirmed by read-back", function()
    backends = start_backends()
    k8s:control("/_contract/rbac", support.contrib_rbac()) -- least privilege is enough for the whole run
    local jdir = dir .. "/promote"
    local r = run_playbook(jdir)
    local evs = events(jdir)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    for _, q in ipairs(k8s:requests()) do assert.truthy(q.status ~= 403, "refused: " .. json.encode(q)) end
    assert.same({ cluster_capacity = "pass", baseline_status = "pass", database = "skip", traffic_routing = "pass",
      monitoring = "pass", alertmanager = "skip", canary_image = "pass", feature_flags = "pass",
      external_dependencies = "skip", rollback_ready = "pass" }, statuses(evs))
    assert.same({ 5, 25, 50, 75, 100 }, confirmed(evs))
    -- the canary Deployment is the runbook's manifest, created once
    local creates = {}
    for _, q in ipairs(k8s:requests()) do
      if q.method == "POST" and q.path == "/apis/apps/v1/namespaces/production/deployments" and q.query == "" then
        creates[#creates + 1] = q
      end
    end
    assert.equals(1, #creates)
    local m = creates[1].body
    assert.equals("dwcp-v3-canary", m.metadata.name)
    assert.same({ app = "dwcp-v3", version = "v3.0.0" }, m.spec.selector.matchLabels)
    assert.equals("novacron/dwcp:v3.0.0", m.spec.template.spec.containers[1].image)
    assert.equals("canary", m.spec.template.metadata.labels["deployment-type"])
    -- finalize: every step's result is in the cluster
    local canary = deployment("dwcp-v3-canary")
    assert.equals("primary", canary.metadata.labels["deployment-type"])
    assert.equals("completed", canary.metadata.annotations["deployment-status"])
    assert.equals(10, canary.spec.replicas, "scaled to the baseline's replicas")
    assert.equals(10, canary.status.availableReplicas)
    assert.is_nil(deployment("dwcp-v3-baseline"), "baseline deleted")
    assert.equals(0, #pods({ version = "v2.9.0" }), "no baseline pod left")
    assert.equals(10, #pods({ app = "dwcp-v3", version = "v3.0.0" }))
    assert.same({ app = "dwcp-v3", version = "v3.0.0" }, k8s:obj("services", "production", "dwcp-v3").spec.selector)
    assert.is_nil(k8s:obj("virtualservices", "production", "dwcp-v3-canary"), "canary VirtualService deleted")
    local vs = k8s:obj("virtualservices", "production", "dwcp-v3")
    -- the header override ends with the rollout: removed (and read back) after finalize
    for _, route in ipairs(vs.spec.http) do assert.is_nil(route.match, "the header route outlived the promotion") end
    assert.equals(100, vs.spec.http[1].route[2].weight)
    local removed = 0
    for _, e in ipairs(find_all(evs, "header_override")) do if e.removed and e.ok then removed = removed + 1 end end
    assert.equals(1, removed, "the removal is journaled, confirmed by read-back")
    local outcome = find_all(evs, "outcome")
    assert.equals("promoted", outcome[#outcome].outcome)
    -- the manual finalize after this promotion finds every step done and confirms it again
    local args = { "playbooks/finalize.lua", PLAYBOOK, "--journal", jdir }
    for _, a in ipairs(sets(jdir)) do
      if a ~= "--journal" and a ~= jdir and a ~= "--run-dir" and a ~= dir .. "/run" then args[#args + 1] = a end
    end
    local f = run(args)
    assert.equals(0, f.code, f.stdout .. f.stderr)
    assert.matches("4%. baseline dwcp%-v3%-baseline already deleted", f.stdout)
    assert.matches("finalized", f.stdout)
  end)

  it("rolls back: 0 %, the canary scaled to 0 and its pods gone; finalize then refuses", function()
    backends = start_backends({ "--error-rate", "0.6" })
    k8s:control("/_contract/rbac", support.contrib_rbac())
    local jdir = dir .. "/rollback"
    local r = run_playbook(jdir)
    local evs = events(jdir)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local c = confirmed(evs)
    assert.equals(0, c[#c], "the last confirmed weight is 0 % canary")
    local canary = deployment("dwcp-v3-canary")
    assert.equals(0, canary.spec.replicas)
    assert.equals(0, #pods({ app = "dwcp-v3", version = "v3.0.0" }), "canary pods gone")
    assert.equals(10, deployment("dwcp-v3-baseline").status.availableReplicas, "baseline untouched")
    assert.same({ app = "dwcp-v3", version = "v2.9.0" }, k8s:obj("services", "production", "dwcp-v3").spec.selector)
    local logs = {}
    for _, e in ipairs(find_all(evs, "log")) do logs[#logs + 1] = e.message end
    assert.matches("canary pods gone", table.concat(logs, "\n"))
    -- Step 7 after a rollback: refused, nothing changed
    local before = #k8s:requests()
    local args = { "playbooks/finalize.lua", PLAYBOOK, "--journal", jdir }
    for i, a in ipairs(sets(jdir)) do if i <= 4 then args[#args + 1] = a end end
    local f = run(args)
    assert.equals(3, f.code, f.stdout .. f.stderr)
    assert.matches("finalize refused: .*no promotion confirmed at 100 %%: the rollout was rolled back", f.stderr)
    for i = before + 1, #k8s:requests() do
      assert.equals("GET", k8s:requests()[i].method, "finalize wrote nothing")
    end
  end)

  it("rolls back when the canary's pods start crash-looping (pod restarts from the API)", function()
    backends = start_backends()
    local jdir = dir .. "/crash"
    -- the canary crashes once it has been deployed and is serving (as a crash loop begins)
    local crasher = rollout.spawn(function()
      for _ = 1, 600 do
        for _, e in ipairs(events(jdir)) do
          if e.event == "weight_confirmed" and e.canary == 25 then
            k8s:control("/_contract/deployment", { namespace = "production", name = "dwcp-v3-canary", crash = true })
            return true
          end
        end
        rollout.sleep(0.05)
      end
    end)
    local r = run_playbook(jdir)
    assert.is_true(crasher:wait(1))
    local evs = events(jdir)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local rb = find_all(evs, "rollback_started")
    assert.equals("trigger:crash_loop", rb[1].reason)
    local c = confirmed(evs)
    assert.equals(0, c[#c])
    assert.equals(0, k8s:obj("deployments", "production", "dwcp-v3-canary").spec.replicas)
    assert.equals(0, #pods({ app = "dwcp-v3", version = "v3.0.0" }))
  end)

  it("fails the deploy at once when the canary's pods cannot pull the image; traffic stays on the baseline", function()
    backends = start_backends()
    k8s:control("/_contract/images", { unpullable = { "novacron/dwcp:v3.0.0" } })
    local jdir = dir .. "/pull"
    local r = run_playbook(jdir)
    local evs = events(jdir)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    local outcome = find_all(evs, "outcome")
    assert.equals("error:deploy", outcome[#outcome].reason)
    assert.matches("cannot pull their image: dwcp%-v3%-canary%-.*ErrImagePull", json.encode(evs))
    assert.same({}, confirmed(evs), "no weight was ever shifted")
    assert.equals(100, k8s:obj("virtualservices", "production", "dwcp-v3").spec.http[2].route[1].weight)
  end)

  it("stops at pre-flight when a check fails: feature flags differ from the ConfigMap", function()
    backends = start_backends()
    local state = support.runbook_cluster()
    state.configmaps[1].data.neural_routing = "false"
    k8s:control("/_contract/state", state)
    local jdir = dir .. "/flags"
    local r = run_playbook(jdir)
    local evs = events(jdir)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    local st = statuses(evs)
    assert.equals("fail", st.feature_flags)
    local detail
    for _, e in ipairs(find_all(evs, "preflight_check")) do if e.check == "feature_flags" then detail = e.detail end end
    assert.matches('neural_routing is "false", the playbook wants true', detail)
    assert.is_nil(deployment("dwcp-v3-canary"), "nothing deployed")
  end)
end)

describe("the runbook's native pre-flight checks, each able to fail", function()
  local playbook = require("rollout.playbook")
  local routers = require("rollout.routers")
  local runbook = require("rollout.k8s.runbook")
  local k8s
  setup(function() k8s = support.contract(nil, { tick = 0.03 }) end)
  teardown(function() support.cleanup(k8s) end)
  after_each(function()
    local v = k8s:violations()
    assert.equals(0, #v, "contract violations: " .. json.encode(v))
  end)

  local function ctx(state, extra)
    k8s:control("/_contract/state", state or support.runbook_cluster())
    local sets = { "router.api=" .. k8s.api, "router.token_file=" .. k8s.token_file, "router.ca_file=" .. k8s.ca,
      "params.kubernetes.baseline_timeout=0.5s", "params.kubernetes.interval=0.05s" }
    for _, s in ipairs(extra or {}) do sets[#sets + 1] = s end
    local pb = assert(playbook.load("playbooks/canary-k8s.lua", { sets = sets }))
    return { engine = { pb = pb, router = routers.new(pb.router, {}) } }
  end

  local function check(name, state, extra)
    return runbook.check(name, ctx(state, extra))
  end

  it("pass on the runbook's cluster", function()
    for _, name in ipairs({ "cluster_capacity", "baseline_status", "traffic_routing", "monitoring", "canary_image",
      "feature_flags", "rollback_ready" }) do
      local ok, detail = check(name)
      assert.is_true(ok, name .. ": " .. tostring(detail))
    end
    local ok, detail = check("traffic_routing", nil, { "params.kubernetes.destination_rule=dwcp-v3" })
    assert.is_true(ok, detail)
    assert.matches("destinationrule subsets for both versions", detail)
    -- a manifest template, relative to the playbook's directory
    local sets = { "params.kubernetes.manifest=../spec/fixtures/k8s/canary-deployment.yaml" }
    ok, detail = check("canary_image", nil, sets)
    assert.is_true(ok, detail)
    assert.matches("manifest for novacron/dwcp:v3%.0%.0%-custom accepted", detail)
    ok, detail = check("cluster_capacity", nil, sets)
    assert.is_true(ok, detail)
    assert.matches("request 1%.0 cpu / 2%.0 GiB", detail)
  end)

  it("fail with the reason when the cluster says no", function()
    local small = support.runbook_cluster()
    for _, n in ipairs(small.nodes) do n.status.allocatable.cpu = "4" end -- 12 cpu, the baseline requests 10
    local ok, detail = check("cluster_capacity", small)
    assert.is_true(ok, detail) -- exactly enough
    assert.matches("free 2%.0 cpu .* on 3 node%(s%); the canary's 2 replica%(s%) request 2%.0 cpu", detail)
    small.nodes[1].status.allocatable.cpu = "3900m"
    ok, detail = check("cluster_capacity", small)
    assert.is_false(ok, detail)
    assert.matches("free 1%.9 cpu", detail)

    local st = support.runbook_cluster()
    st.pods[1].status = { phase = "Pending", conditions = { { type = "Ready", status = "False" } } }
    ok, detail = check("monitoring", st)
    assert.is_false(ok)
    assert.matches("no Running, ready prometheus pod in namespace monitoring", detail)

    st = support.runbook_cluster()
    st.deployments = {}
    ok, detail = check("rollback_ready", st)
    assert.is_false(ok)
    assert.matches('rollback target missing: .*deployments.apps "dwcp%-v3%-baseline" not found', detail)

    st = support.runbook_cluster()
    st.destinationrules[1].spec.subsets[2] = nil
    ok, detail = check("traffic_routing", st, { "params.kubernetes.destination_rule=dwcp-v3" })
    assert.is_false(ok)
    assert.matches("no subset for version=v3%.0%.0", detail)

    st = support.runbook_cluster()
    st.virtualservices[1].spec.http[2].route[1].weight = 90
    st.virtualservices[1].spec.http[2].route[2].weight = 10
    ok, detail = check("traffic_routing", st)
    assert.is_false(ok)
    assert.matches("baseline serves 90 %%", detail)

    local c = ctx()
    k8s:control("/_contract/deployment", { namespace = "production", name = "dwcp-v3-baseline", stuck = true, bump = true })
    ok, detail = runbook.check("baseline_status", c)
    assert.is_false(ok)
    assert.matches("not rolled out after 0%.5 s", detail)

    k8s:control("/_contract/state", support.runbook_cluster())
    k8s:control("/_contract/rbac", { roles = { { namespace = "production", rules = {
      { apiGroups = { "apps" }, resources = { "deployments" }, verbs = { "get" } } } } } })
    ok, detail = runbook.check("canary_image", c)
    assert.is_false(ok)
    assert.matches('forbidden: .*may not create deployments in API group "apps" in namespace production', detail)
  end)
end)

describe("playbooks/rollback.lua on the Kubernetes playbook (the 3 a.m. manual rollback)", function()
  local k8s
  setup(function() k8s = support.contract(nil, { tick = 0.03 }) end)
  teardown(function() support.cleanup(k8s) end)

  it("routes 100 % to the baseline, scales the canary to 0 and waits until its pods are gone", function()
    local state = support.runbook_cluster()
    local canary = json.decode(json.encode(state.deployments[1]))
    canary.metadata.name = "dwcp-v3-canary"
    canary.metadata.labels = { app = "dwcp-v3", version = "v3.0.0", ["deployment-type"] = "canary" }
    canary.spec.replicas = 2
    canary.spec.selector.matchLabels.version = "v3.0.0"
    canary.spec.template.metadata.labels = { app = "dwcp-v3", version = "v3.0.0" }
    canary.spec.template.spec.containers[1].image = "novacron/dwcp:v3.0.0"
    state.deployments[2] = canary
    state.virtualservices[1].spec.http[2].route[1].weight = 75
    state.virtualservices[1].spec.http[2].route[2].weight = 25
    k8s:control("/_contract/state", state)
    local r = assert(proc.run({ timeout = 60, argv = { rollout.exe, "playbooks/rollback.lua", PLAYBOOK, "--reason", "pager",
      "--set", "router.api=" .. k8s.api, "--set", "router.token_file=" .. k8s.token_file, "--set", "router.ca_file=" .. k8s.ca,
      "--set", "params.kubernetes.interval=0.05s" } }))
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("traffic switch confirmed: baseline 100%%, canary 0%%", r.stdout)
    assert.matches("canary pods gone", r.stdout)
    local vs = k8s:obj("virtualservices", "production", "dwcp-v3")
    assert.equals(100, vs.spec.http[2].route[1].weight)
    assert.equals(0, k8s:obj("deployments", "production", "dwcp-v3-canary").spec.replicas)
    for _, p in ipairs(k8s:state().pods) do
      assert.truthy(p.metadata.labels.version ~= "v3.0.0", "no canary pod left: " .. p.metadata.name)
    end
    assert.equals(0, #k8s:violations(), json.encode(k8s:violations()))
  end)
end)

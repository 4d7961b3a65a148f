-- rollout.k8s.resources: API paths and the objects the runbook touches, on a k8s client.
--
--   local res = require("rollout.k8s.resources")
--   res.path{ group = "apps", resource = "deployments", namespace = "production", name = "x" }
--   res.pods(c, "production", { app = "dwcp-v3", version = "v3.0.0" })   -> list of pods
--   res.pod_summary(pods) -> {total=, ready=, restarts=, image_errors={...}, terminating=}
--   res.wait_pods(c, ns, selector, { ready = n | gone = true, timeout = }) -> true, summary
--   res.set_labels(c, path, {k = v}) / res.set_annotations(c, path, {k = v})   read back
--   res.delete(c, path, { timeout = }) -> true once a GET answers 404
--   res.service_selector(c, ns, name, selector)      the selector becomes exactly `selector`
--   res.configmap(c, ns, name) -> data table
--   res.capacity(c) -> {cpu=, memory=} free allocatable (millicores, bytes) on ready nodes
--   res.destination_subsets(c, ns, name [, api_version]) -> {name -> labels}
--   res.quantity(s) -> number   "1000m" -> 1, "2Gi" -> 2147483648
--
-- Error policy: malformed arguments raise; API failures return nil, err (and the typed
-- error from rollout.k8s.client as a third value where there is one).
local rollout = require("rollout")
local json = require("rollout.json")

local M = {}

local function name_ok(v)
  return type(v) == "string" and #v <= 253 and v:match("^[a-z0-9][-a-z0-9.]*$") ~= nil and v:match("[a-z0-9]$") ~= nil
end
M.name_ok = name_ok

--- An API path: {group=, version=, resource=, namespace=, name=, subresource=}. The group
--- "" (or nil) is the core API (/api/v1).
function M.path(t)
  local g = t.group or ""
  local base = g == "" and ("/api/" .. (t.version or "v1")) or ("/apis/" .. g .. "/" .. (t.version or "v1"))
  if t.namespace then
    if not name_ok(t.namespace) then error("namespace must be a Kubernetes name, got " .. tostring(t.namespace), 2) end
    base = base .. "/namespaces/" .. t.namespace
  end
  base = base .. "/" .. t.resource
  if t.name then
    if not name_ok(t.name) then error(t.resource .. " name must be a Kubernetes name, got " .. tostring(t.name), 2) end
    base = base .. "/" .. t.name
  end
  if t.subresource then base = base .. "/" .. t.subresource end
  return base
end

--- "app=dwcp-v3,version=v3.0.0" from a table (sorted keys) or a string as given.
function M.selector(sel)
  if type(sel) == "string" then return sel end
  local keys = {}
  for k in pairs(sel) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. tostring(sel[k]) end
  return table.concat(out, ",")
end

-- ---- quantities ----------------------------------------------------------------------

local SUFFIX = { Ki = 2 ^ 10, Mi = 2 ^ 20, Gi = 2 ^ 30, Ti = 2 ^ 40, Pi = 2 ^ 50, Ei = 2 ^ 60,
  n = 1e-9, u = 1e-6, m = 1e-3, [""] = 1, k = 1e3, M = 1e6, G = 1e9, T = 1e12, P = 1e15, E = 1e18 }

--- A Kubernetes quantity as a number (cpu in cores, memory in bytes). nil, err if malformed.
function M.quantity(s)
  if type(s) == "number" then return s end
  if type(s) ~= "string" then return nil, "not a quantity: " .. tostring(s) end
  local exp = s:match("^([+-]?[%d.]+[eE][+-]?%d+)$")
  if exp then return tonumber(exp) end
  local num, suf = s:match("^([+-]?%d*%.?%d+)(%a*)$")
  if not num or not SUFFIX[suf] then return nil, "not a quantity: " .. s end
  return tonumber(num) * SUFFIX[suf]
end

-- ---- pods ----------------------------------------------------------------------------

--- Pods matching a label selector (table or string). list | nil, err, e.
function M.pods(c, ns, selector)
  local list, err, e = c:get(M.path{ resource = "pods", namespace = ns },
    { query = { labelSelector = M.selector(selector) } })
  if not list then return nil, err, e end
  return list.items or {}
end

local function pod_ready(p)
  if p.metadata and p.metadata.deletionTimestamp then return false end
  for _, cond in ipairs((p.status or {}).conditions or {}) do
    if cond.type == "Ready" then return cond.status == "True" end
  end
  return false
end
M.pod_ready = pod_ready

local IMAGE_ERRORS = { ErrImagePull = true, ImagePullBackOff = true, InvalidImageName = true,
  ErrImageNeverPull = true }

--- {total=, ready=, terminating=, restarts=, max_restarts=, image_errors={"pod: reason: msg"},
--- crash_looping={pod names}, phases={Running=n,...}} for a list of pods.
function M.pod_summary(pods)
  local s = { total = 0, ready = 0, terminating = 0, restarts = 0, max_restarts = 0, image_errors = {},
    crash_looping = {}, phases = {} }
  for _, p in ipairs(pods) do
    s.total = s.total + 1
    local st = p.status or {}
    s.phases[st.phase or "Unknown"] = (s.phases[st.phase or "Unknown"] or 0) + 1
    if p.metadata and p.metadata.deletionTimestamp then s.terminating = s.terminating + 1 end
    if pod_ready(p) then s.ready = s.ready + 1 end
    local pr = 0
    for _, cs in ipairs(st.containerStatuses or {}) do
      pr = pr + (cs.restartCount or 0)
      local w = cs.state and cs.state.waiting
      if type(w) == "table" and IMAGE_ERRORS[w.reason] then
        s.image_errors[#s.image_errors + 1] = string.format("%s: %s: %s", p.metadata.name, w.reason, tostring(w.message or cs.image))
      elseif type(w) == "table" and w.reason == "CrashLoopBackOff" then
        s.crash_looping[#s.crash_looping + 1] = p.metadata.name
      end
    end
    s.restarts = s.restarts + pr
    if pr > s.max_restarts then s.max_restarts = pr end
  end
  return s
end

--- Wait for the pods of a selector, as `kubectl wait` does:
---   {ready = n}  at least n pods, every one Ready (--for=condition=ready);
---   {gone = true} no pod left (--for=delete).
--- Image pull errors fail at once (the image cannot be pulled). opts.timeout (300 s),
--- opts.interval (1 s), opts.progress(msg). true, summary | nil, err.
function M.wait_pods(c, ns, selector, opts)
  local timeout, interval = opts.timeout or 300, opts.interval or 1
  local t0, last = rollout.now(), nil
  local sel = M.selector(selector)
  while true do
    local pods, err, e = M.pods(c, ns, selector)
    if not pods then return nil, err, e end
    local s = M.pod_summary(pods)
    local msg
    if opts.gone then
      if s.total == 0 then return true, s end
      msg = string.format("%d pod(s) matching %s still present (%d terminating)", s.total, sel, s.terminating)
    else
      if #s.image_errors > 0 then
        return nil, "pods matching " .. sel .. " cannot pull their image: " .. table.concat(s.image_errors, "; ")
      end
      local want = opts.ready or 1
      if s.total >= want and s.ready == s.total - s.terminating and s.ready >= want then return true, s end
      msg = string.format("%d of %d pod(s) matching %s ready (want %d)", s.ready, s.total, sel, want)
    end
    if msg ~= last and opts.progress then opts.progress(msg) end
    last = msg
    if rollout.now() - t0 >= timeout then
      return nil, string.format("timed out after %s s: %s", tostring(timeout), msg)
    end
    rollout.sleep(math.min(interval, math.max(0.01, timeout - (rollout.now() - t0))))
  end
end

-- ---- metadata ------------------------------------------------------------------------

local function set_meta(c, path, field, kv)
  local obj, err, e = c:modify(path, function(cur)
    local have = (cur.metadata or {})[field] or {}
    local patch, changed = {}, false
    for k, v in pairs(kv) do
      if v == false then v = json.null end
      if have[k] ~= (v ~= json.null and v or nil) then patch[k] = v; changed = true end
    end
    if not changed then return nil end
    return { metadata = { [field] = patch } }
  end)
  if not obj then return nil, err, e end
  local got = (obj.metadata or {})[field] or {}
  for k, v in pairs(kv) do
    local want = v ~= false and v or nil
    if got[k] ~= want then
      return nil, string.format("%s: %s %s reads back %s, wanted %s", path, field, k, tostring(got[k]), tostring(want))
    end
  end
  return obj
end

--- Set labels (a value false removes one), confirmed by the object the API returns.
function M.set_labels(c, path, kv) return set_meta(c, path, "labels", kv) end
--- Set annotations, likewise.
function M.set_annotations(c, path, kv) return set_meta(c, path, "annotations", kv) end

--- DELETE (background propagation) and wait until a GET answers 404. Already gone is fine.
function M.delete(c, path, opts)
  opts = opts or {}
  local ok, err, e = c:delete(path, { query = { propagationPolicy = opts.propagation or "Background" } })
  if not ok and e.kind ~= "not_found" then return nil, err, e end
  local t0 = rollout.now()
  while true do
    local obj, gerr, ge = c:get(path)
    if not obj and ge.kind == "not_found" then return true end
    if not obj then return nil, gerr, ge end
    if rollout.now() - t0 >= (opts.timeout or 60) then return nil, path .. ": still present after delete" end
    rollout.sleep(opts.interval or 0.5)
  end
end

-- ---- services, configmaps, nodes, destination rules ----------------------------------

--- Make a Service's selector exactly `selector` (keys not in it are removed), confirmed by
--- the object the API returns. service | nil, err.
function M.service_selector(c, ns, name, selector)
  local path = M.path{ resource = "services", namespace = ns, name = name }
  local obj, err, e = c:modify(path, function(cur)
    local have = (cur.spec or {}).selector or {}
    local patch, changed = {}, false
    for k, v in pairs(selector) do if have[k] ~= v then patch[k] = v; changed = true end end
    for k in pairs(have) do if selector[k] == nil then patch[k] = json.null; changed = true end end
    if not changed then return nil end
    return { spec = { selector = patch } }
  end)
  if not obj then return nil, err, e end
  local got = (obj.spec or {}).selector or {}
  if M.selector(got) ~= M.selector(selector) then
    return nil, string.format("service %s/%s selector reads back %s, wanted %s", ns, name, M.selector(got), M.selector(selector))
  end
  return obj
end

--- A ConfigMap's data. data | nil, err, e.
function M.configmap(c, ns, name)
  local cm, err, e = c:get(M.path{ resource = "configmaps", namespace = ns, name = name })
  if not cm then return nil, err, e end
  return cm.data or {}
end

local function node_ready(n)
  if (n.spec or {}).unschedulable then return false end
  for _, cond in ipairs((n.status or {}).conditions or {}) do
    if cond.type == "Ready" then return cond.status == "True" end
  end
  return false
end

--- Free capacity on schedulable Ready nodes: allocatable minus the requests of the pods
--- bound to them that are not finished. {cpu=cores, memory=bytes, nodes=n} | nil, err.
function M.capacity(c)
  local nodes, err, e = c:get(M.path{ resource = "nodes" })
  if not nodes then return nil, err, e end
  local pods, perr, pe = c:get(M.path{ resource = "pods" },
    { query = { fieldSelector = "status.phase!=Succeeded,status.phase!=Failed" } })
  if not pods then return nil, perr, pe end
  local free, names = { cpu = 0, memory = 0, nodes = 0 }, {}
  for _, n in ipairs(nodes.items or {}) do
    if node_ready(n) then
      local a = (n.status or {}).allocatable or {}
      local cpu, mem = M.quantity(a.cpu or "0"), M.quantity(a.memory or "0")
      if not cpu or not mem then return nil, "node " .. n.metadata.name .. ": unreadable allocatable" end
      free.cpu, free.memory, free.nodes = free.cpu + cpu, free.memory + mem, free.nodes + 1
      names[n.metadata.name] = true
    end
  end
  for _, p in ipairs(pods.items or {}) do
    if names[(p.spec or {}).nodeName] then
      local r = M.pod_requests(p.spec)
      free.cpu, free.memory = free.cpu - r.cpu, free.memory - r.memory
    end
  end
  return free
end

--- The cpu (cores) and memory (bytes) a pod spec requests (containers summed).
function M.pod_requests(spec)
  local out = { cpu = 0, memory = 0 }
  for _, ct in ipairs((spec or {}).containers or {}) do
    local r = ((ct.resources or {}).requests) or {}
    out.cpu = out.cpu + (M.quantity(r.cpu or "0") or 0)
    out.memory = out.memory + (M.quantity(r.memory or "0") or 0)
  end
  return out
end

--- A DestinationRule's subsets: {name -> labels} | nil, err, e.
function M.destination_subsets(c, ns, name, api_version)
  local gv = api_version or "networking.istio.io/v1beta1"
  local dr, err, e = c:get(string.format("/apis/%s/namespaces/%s/destinationrules/%s", gv, ns, name))
  if not dr then return nil, err, e end
  local out = {}
  for _, s in ipairs((dr.spec or {}).subsets or {}) do out[s.name] = s.labels or {} end
  return out
end

--- Whether the credentials may do something: a SelfSubjectAccessReview.
--- attrs = {verb=, group=, resource=, subresource=, namespace=, name=}. allowed, reason | nil, err.
function M.can_i(c, attrs)
  local ra = { verb = attrs.verb, group = attrs.group or "", resource = attrs.resource,
    subresource = attrs.subresource, namespace = attrs.namespace, name = attrs.name }
  local r, err, e = c:create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
    apiVersion = "authorization.k8s.io/v1", kind = "SelfSubjectAccessReview",
    spec = { resourceAttributes = ra } })
  if not r then return nil, err, e end
  local st = r.status or {}
  return st.allowed == true, st.reason or st.evaluationError
end

return M

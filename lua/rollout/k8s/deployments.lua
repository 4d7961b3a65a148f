-- rollout.k8s.deployments: apps/v1 Deployments on a k8s client.
--
--   local dep = require("rollout.k8s.deployments")
--   dep.manifest{ name=, namespace=, image=, replicas=, version=, labels=, ... } -> Deployment
--   dep.render(text_or_table, vars) -> Deployment          ${VAR} in every string replaced
--   dep.apply(c, manifest) -> deployment, "created"|"updated"|"unchanged"
--   dep.scale(c, ns, name, n) -> true, scale                through the scale subresource
--   dep.rollout_state(d) -> "done"|"waiting"|"failed", message   (`kubectl rollout status`)
--   dep.rollout_status(c, ns, name, {timeout=, interval=, progress=}) -> true, message
--   dep.get(c, ns, name) / dep.path(ns, name)
--
-- apply() creates the Deployment when a GET answers 404, else merge-patches the manifest's
-- labels, annotations and spec over the live object, carrying the resourceVersion it read
-- (a 409 is retried with a fresh read); the API refuses a changed selector (422, immutable).
-- Every result is the object the API returned, checked against what was asked.
--
-- Error policy: a malformed manifest or argument raises with the key path; API failures
-- return nil, err, e (rollout.k8s.client's typed error).
local rollout = require("rollout")
local json = require("rollout.json")
local yaml = require("rollout.yaml")
local res = require("rollout.k8s.resources")

local M = {}

function M.path(ns, name, sub)
  return res.path{ group = "apps", resource = "deployments", namespace = ns, name = name, subresource = sub }
end

function M.get(c, ns, name) return c:get(M.path(ns, name)) end

-- ---- manifests -----------------------------------------------------------------------

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return setmetatable(out, getmetatable(v))
end

--- A Deployment from a few fields: name, namespace, image (required), replicas (1),
--- version (adds the label version=), labels (on the Deployment, its selector and its pod
--- template), selector (labels to select by; default: labels plus version), container
--- ("app"), port, env ({NAME = value}), resources ({requests=, limits=}), readiness_path,
--- liveness_path, template_labels (added on the pods only; false keeps a label off them),
--- annotations.
function M.manifest(t)
  for _, k in ipairs({ "name", "namespace", "image" }) do
    if type(t[k]) ~= "string" or t[k] == "" then error("deployment manifest: " .. k .. ": required string", 2) end
  end
  local labels = copy(t.labels or {})
  if t.version then labels.version = t.version end
  local sel = copy(t.selector or labels)
  local tl = copy(labels)
  for k, v in pairs(t.template_labels or {}) do -- false: not on the pods
    if v == false then tl[k] = nil else tl[k] = v end
  end
  local ct = { name = t.container or "app", image = t.image }
  if t.port then ct.ports = json.array({ { containerPort = t.port } }) end
  if t.env then
    local names = {}
    for k in pairs(t.env) do names[#names + 1] = k end
    table.sort(names)
    ct.env = json.array({})
    for _, k in ipairs(names) do ct.env[#ct.env + 1] = { name = k, value = tostring(t.env[k]) } end
  end
  if t.resources then ct.resources = copy(t.resources) end
  if t.readiness_path and t.port then
    ct.readinessProbe = { httpGet = { path = t.readiness_path, port = t.port }, periodSeconds = 5 }
  end
  if t.liveness_path and t.port then
    ct.livenessProbe = { httpGet = { path = t.liveness_path, port = t.port }, periodSeconds = 10 }
  end
  return {
    apiVersion = "apps/v1", kind = "Deployment",
    metadata = { name = t.name, namespace = t.namespace, labels = labels, annotations = t.annotations },
    spec = { replicas = t.replicas or 1, selector = { matchLabels = sel },
      template = { metadata = { labels = tl }, spec = { containers = json.array({ ct }) } } },
  }
end

local function subst(v, vars, path, missing)
  if type(v) == "string" then
    local whole = v:match("^%${([%w_]+)}$") -- `replicas: ${REPLICAS}` keeps the variable's type
    if whole and vars[whole] ~= nil and type(vars[whole]) ~= "string" then return vars[whole] end
    return (v:gsub("%${([%w_]+)}", function(k)
      local x = vars[k]
      if x == nil then missing[#missing + 1] = path .. ": ${" .. k .. "}"; return "" end
      return tostring(x)
    end))
  elseif type(v) == "table" then
    local out = setmetatable({}, getmetatable(v))
    for k, x in pairs(v) do out[k] = subst(x, vars, path .. (type(k) == "number" and ("[" .. k .. "]") or ("." .. k)), missing) end
    return out
  end
  return v
end

--- A manifest from YAML text (or a table), with ${VAR} replaced from vars in every
--- string (a value that is only "${VAR}" takes the variable's own type: a number stays one). A variable that is not in vars is an error naming the key path. The result
--- must be an apps/v1 Deployment with metadata.name. manifest | nil, err.
function M.render(src, vars, name)
  local doc = src
  if type(src) == "string" then
    local err
    doc, err = yaml.load(src, name or "manifest")
    if doc == nil then return nil, err end
  end
  local missing = {}
  doc = subst(doc, vars or {}, "", missing)
  if #missing > 0 then return nil, (name or "manifest") .. ": undefined variable " .. table.concat(missing, ", ") end
  if type(doc) ~= "table" or doc.kind ~= "Deployment" or doc.apiVersion ~= "apps/v1" then
    return nil, (name or "manifest") .. ": expected kind: Deployment, apiVersion: apps/v1"
  end
  if type(doc.metadata) ~= "table" or type(doc.metadata.name) ~= "string" then
    return nil, (name or "manifest") .. ": metadata.name: required"
  end
  return doc
end

-- Does live carry everything `want` asks (a recursive subset test; lists compared whole)?
local function covers(live, want)
  if type(want) ~= "table" then return live == want end
  if type(live) ~= "table" then return false end
  if getmetatable(want) == json.array_mt or #want > 0 then
    if #live ~= #want then return false end
    for i = 1, #want do if not covers(live[i], want[i]) then return false end end
    return true
  end
  for k, v in pairs(want) do
    if v ~= json.null and not covers(live[k], v) then return false end
  end
  return true
end
M.covers = covers

--- Create the Deployment or bring the live one to the manifest. The namespace defaults
--- to c.namespace. deployment, "created"|"updated"|"unchanged" | nil, err, e.
function M.apply(c, manifest)
  local m = copy(manifest)
  m.metadata.namespace = m.metadata.namespace or c.namespace
  local ns, name = m.metadata.namespace, m.metadata.name
  local path = M.path(ns, name)
  local live, err, e = c:get(path)
  if not live and e.kind ~= "not_found" then return nil, err, e end
  if not live then
    local created, cerr, ce = c:create(M.path(ns), m)
    if not created then
      if ce.kind ~= "conflict" then return nil, cerr, ce end -- 409 AlreadyExists: someone was quicker
    else
      if not covers(created.spec, m.spec) then return nil, "deployment " .. ns .. "/" .. name .. ": created object differs from the manifest" end
      return created, "created"
    end
  end
  local verdict = "unchanged"
  local obj, perr, pe = c:modify(path, function(cur)
    if covers(cur.spec, m.spec) and covers(cur.metadata.labels or {}, m.metadata.labels or {})
      and covers(cur.metadata.annotations or {}, m.metadata.annotations or {}) then
      return nil
    end
    verdict = "updated"
    return { metadata = { labels = m.metadata.labels, annotations = m.metadata.annotations }, spec = m.spec }
  end)
  if not obj then return nil, perr, pe end
  if not covers(obj.spec, m.spec) then return nil, "deployment " .. ns .. "/" .. name .. ": reads back different from the manifest" end
  return obj, verdict
end

-- ---- scale and rollout status --------------------------------------------------------

--- Set replicas through the scale subresource; confirmed by the returned Scale.
function M.scale(c, ns, name, replicas)
  if math.type(replicas) ~= "integer" or replicas < 0 then error("scale: replicas must be an integer >= 0", 2) end
  local path = M.path(ns, name, "scale")
  local sc, err, e = c:merge_patch(path, { spec = { replicas = replicas } })
  if not sc then return nil, err, e end
  if type(sc.spec) ~= "table" or sc.spec.replicas ~= replicas then
    return nil, "PATCH " .. path .. ": scale reads back " .. tostring(type(sc.spec) == "table" and sc.spec.replicas)
      .. " replicas, requested " .. replicas
  end
  return true, sc
end

--- One `kubectl rollout status` decision for a Deployment object:
--- "done", message | "waiting", message | "failed", message.
function M.rollout_state(d)
  local spec, status, meta = d.spec or {}, d.status or {}, d.metadata or {}
  local gen, observed = meta.generation or 0, status.observedGeneration or 0
  if gen > observed then return "waiting", "waiting for deployment spec update to be observed" end
  for _, cnd in ipairs(type(status.conditions) == "table" and status.conditions or {}) do
    if cnd.type == "Progressing" and cnd.reason == "ProgressDeadlineExceeded" then
      return "failed", string.format("deployment %q exceeded its progress deadline", tostring(meta.name))
    end
  end
  local want = spec.replicas
  local updated, replicas, available = status.updatedReplicas or 0, status.replicas or 0, status.availableReplicas or 0
  if type(want) == "number" and updated < want then
    return "waiting", string.format("%d out of %d new replicas have been updated", updated, want)
  end
  if replicas > updated then
    return "waiting", string.format("%d old replicas are pending termination", replicas - updated)
  end
  if available < updated then
    return "waiting", string.format("%d of %d updated replicas are available", available, updated)
  end
  return "done", string.format("deployment %q successfully rolled out", tostring(meta.name))
end

--- Wait until the Deployment has rolled out (kubectl's rules), it exceeds its progress
--- deadline, or opts.timeout (default 5m) passes. true, message | nil, err.
function M.rollout_status(c, ns, name, opts)
  opts = opts or {}
  local path = M.path(ns, name)
  local timeout, interval = opts.timeout or 300, opts.interval or 1
  local t0, last = rollout.now(), nil
  while true do
    local d, err, e = c:get(path)
    if not d then return nil, err, e end
    local state, msg = M.rollout_state(d)
    if state == "done" then return true, msg end
    if state == "failed" then return nil, msg end
    if msg ~= last and opts.progress then opts.progress(msg) end
    last = msg
    if rollout.now() - t0 >= timeout then
      return nil, string.format("deployment %s not rolled out after %s s: %s", name, tostring(timeout), last)
    end
    rollout.sleep(math.min(interval, math.max(0, timeout - (rollout.now() - t0))))
  end
end

return M

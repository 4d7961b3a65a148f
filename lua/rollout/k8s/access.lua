-- rollout.k8s.access: which Kubernetes permissions a playbook needs, and whether the
-- credentials have them (SelfSubjectAccessReview), for `rollout check`.
--
--   local access = require("rollout.k8s.access")
--   access.permissions(pb) -> list of {verb=, group=, resource=, subresource=, namespace=, why=}
--   access.check_items(pb) -> check items ({name=, ok=, detail=}), one per permission
--   access.rbac_yaml(pb, {service_account=, namespace=}) -> the ServiceAccount, Roles,
--     ClusterRole and bindings granting exactly permissions(pb), as YAML text
--     (contrib/kubernetes/rbac.yaml is this for playbooks/canary-k8s.lua)
--
-- A playbook with params.kubernetes needs what rollout.k8s.runbook's steps use
-- (runbook.permissions: the same list contrib/kubernetes/rbac.yaml grants); any other
-- playbook with an Istio router needs get and patch on its VirtualService. Playbooks
-- without either need nothing from Kubernetes.
--
-- Error policy: permissions() raises on a bad params.kubernetes (a config error);
-- check_items() never raises for what the API server does: an unanswered review is a
-- failed item naming the reason.
local client = require("rollout.k8s.client")
local runbook = require("rollout.k8s.runbook")

local M = {}

function M.permissions(pb)
  if type((pb.params or {}).kubernetes) == "table" then return runbook.permissions(pb) end
  local r = pb.router
  if type(r) == "table" and r.type == "istio" then
    return {
      { verb = "get", group = "networking.istio.io", resource = "virtualservices", namespace = r.namespace, why = "read the weights (router)" },
      { verb = "patch", group = "networking.istio.io", resource = "virtualservices", namespace = r.namespace, why = "set the weights (router)" },
    }
  end
  return {}
end

--- One check item per permission the playbook needs (SelfSubjectAccessReview each).
--- {} when the playbook needs nothing from Kubernetes.
function M.check_items(pb)
  local ok, perms = pcall(M.permissions, pb)
  if not ok then return { { name = "kubernetes permissions", ok = false, detail = tostring(perms) } } end
  if #perms == 0 then return {} end
  local r = pb.router or {}
  local c = client.new{ api = r.api, token_file = r.token_file, ca_file = r.ca_file, kubeconfig = r.kubeconfig,
    context = r.context, namespace = r.namespace }
  local review, err = runbook.access_review(c, perms)
  if not review then return { { name = "kubernetes permissions", ok = false, detail = "cannot ask the API server: " .. tostring(err) } } end
  local items = review.items
  items[#items + 1] = { name = "kubernetes permissions", ok = #review.missing == 0,
    detail = #review.missing == 0 and string.format("all %d granted", #perms)
      or string.format("%d of %d missing (see contrib/kubernetes/rbac.yaml)", #review.missing, #perms) }
  return items
end

-- Rules grouped by namespace ("" = cluster-wide): {ns -> {{apiGroups=, resources=, verbs=}...}},
-- one rule per (group, resource), verbs sorted; namespaces sorted.
function M.rules(perms)
  local by = {}
  for _, p in ipairs(perms) do
    local ns = p.namespace or ""
    local res = p.resource .. (p.subresource and ("/" .. p.subresource) or "")
    by[ns] = by[ns] or {}
    local key = (p.group or "") .. "\0" .. res
    by[ns][key] = by[ns][key] or { group = p.group or "", resource = res, verbs = {} }
    by[ns][key].verbs[p.verb] = true
  end
  local out = {}
  for ns, rules in pairs(by) do
    local list = {}
    for _, r in pairs(rules) do
      local verbs = {}
      for v in pairs(r.verbs) do verbs[#verbs + 1] = v end
      table.sort(verbs)
      list[#list + 1] = { apiGroups = { r.group }, resources = { r.resource }, verbs = verbs }
    end
    table.sort(list, function(a, b)
      if a.apiGroups[1] ~= b.apiGroups[1] then return a.apiGroups[1] < b.apiGroups[1] end
      return a.resources[1] < b.resources[1]
    end)
    out[ns] = list
  end
  return out
end

local function yaml_list(items)
  local q = {}
  for i, v in ipairs(items) do q[i] = string.format("%q", v) end
  return "[" .. table.concat(q, ", ") .. "]"
end

function M.rbac_yaml(pb, opts)
  opts = opts or {}
  local sa = opts.service_account or "rollout"
  local home = opts.namespace or (type((pb.params or {}).kubernetes) == "table" and pb.params.kubernetes.namespace)
    or (pb.router or {}).namespace or "default"
  local rules = M.rules(M.permissions(pb))
  local out = {
    "# Least-privilege RBAC for `rollout run " .. tostring(pb.file and pb.file:match("[^/]*$") or "PLAYBOOK") .. "`.",
    "# Generated from the permission list `rollout check` asks the API server about",
    "# (rollout.k8s.access.permissions); spec/k8s_check_spec.lua keeps the two in step.",
    "# Regenerate: rollout tools/k8s_rbac.lua PLAYBOOK > contrib/kubernetes/rbac.yaml",
    "apiVersion: v1", "kind: ServiceAccount", "metadata:", "  name: " .. sa, "  namespace: " .. home,
  }
  local names = {}
  for ns in pairs(rules) do names[#names + 1] = ns end
  table.sort(names)
  local function emit_rules(list)
    out[#out + 1] = "rules:"
    for _, r in ipairs(list) do
      out[#out + 1] = "- apiGroups: " .. yaml_list(r.apiGroups)
      out[#out + 1] = "  resources: " .. yaml_list(r.resources)
      out[#out + 1] = "  verbs: " .. yaml_list(r.verbs)
    end
  end
  for _, ns in ipairs(names) do
    local cluster = ns == ""
    local name = cluster and (sa .. "-" .. home .. "-cluster") or sa
    out[#out + 1] = "---"
    out[#out + 1] = "apiVersion: rbac.authorization.k8s.io/v1"
    out[#out + 1] = "kind: " .. (cluster and "ClusterRole" or "Role")
    out[#out + 1] = "metadata:"
    out[#out + 1] = "  name: " .. name
    if not cluster then out[#out + 1] = "  namespace: " .. ns end
    emit_rules(rules[ns])
    out[#out + 1] = "---"
    out[#out + 1] = "apiVersion: rbac.authorization.k8s.io/v1"
    out[#out + 1] = "kind: " .. (cluster and "ClusterRoleBinding" or "RoleBinding")
    out[#out + 1] = "metadata:"
    out[#out + 1] = "  name: " .. name
    if not cluster then out[#out + 1] = "  namespace: " .. ns end
    out[#out + 1] = "roleRef:"
    out[#out + 1] = "  apiGroup: rbac.authorization.k8s.io"
    out[#out + 1] = "  kind: " .. (cluster and "ClusterRole" or "Role")
    out[#out + 1] = "  name: " .. name
    out[#out + 1] = "subjects:"
    out[#out + 1] = "- kind: ServiceAccount"
    out[#out + 1] = "  name: " .. sa
    out[#out + 1] = "  namespace: " .. home
  end
  return table.concat(out, "\n") .. "\n"
end

return M

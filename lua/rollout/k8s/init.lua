-- rollout.k8s: the Kubernetes API for playbooks (the `k8s` module of the playbook API) and
-- for the host. Only functions: nothing here talks to a cluster while a playbook loads.
--
--   local c = k8s.client{ namespace = "production" }   -- rollout.k8s.client.new (kubectl's rules)
--   k8s.apply_deployment(c, manifest) / k8s.scale(c, ns, name, n) / k8s.rollout_status(c, ns, name, opts)
--   k8s.manifest{...} / k8s.render(yaml_text, vars) / k8s.rollout_state(d)
--   k8s.pods(c, ns, selector) / k8s.pod_summary(pods) / k8s.wait_pods(c, ns, selector, opts)
--   k8s.set_labels(c, path, kv) / k8s.set_annotations(c, path, kv) / k8s.delete(c, path, opts)
--   k8s.service_selector(c, ns, name, sel) / k8s.configmap(c, ns, name) / k8s.capacity(c)
--   k8s.destination_subsets(c, ns, name) / k8s.can_i(c, attrs) / k8s.path{...} / k8s.quantity(s)
--   k8s.runbook_check(name, ctx) / k8s.runbook_deploy(ctx) / k8s.runbook_rollback(ctx) /
--   k8s.runbook_finalize(ctx) / k8s.permissions(pb)        the runbook's steps (rollout.k8s.runbook)
--
-- Error policy: that of the module each function comes from (rollout.k8s.client,
-- .deployments, .resources, .runbook).
local client = require("rollout.k8s.client")
local deployments = require("rollout.k8s.deployments")
local res = require("rollout.k8s.resources")
local runbook = require("rollout.k8s.runbook")

local M = {}

M.client = client.new
M.attributes = client.attributes
M.manifest = deployments.manifest
M.render = deployments.render
M.apply_deployment = deployments.apply
M.scale = deployments.scale
M.rollout_state = deployments.rollout_state
M.rollout_status = deployments.rollout_status
M.deployment_path = deployments.path
M.path = res.path
M.quantity = res.quantity
M.pods = res.pods
M.pod_summary = res.pod_summary
M.wait_pods = res.wait_pods
M.set_labels = res.set_labels
M.set_annotations = res.set_annotations
M.delete = res.delete
M.service_selector = res.service_selector
M.configmap = res.configmap
M.capacity = res.capacity
M.destination_subsets = res.destination_subsets
M.can_i = res.can_i
M.runbook_check = runbook.check
M.runbook_deploy = runbook.deploy
M.runbook_rollback = runbook.on_rollback
M.runbook_finalize = runbook.finalize
M.permissions = runbook.permissions

return M

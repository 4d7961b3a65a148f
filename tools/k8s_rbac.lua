-- rollout tools/k8s_rbac.lua PLAYBOOK [--set key=value ...]
-- Print the least-privilege ServiceAccount, Roles, ClusterRole and bindings for PLAYBOOK:
-- exactly the permissions `rollout check` asks the API server about
-- (rollout.k8s.access.permissions). contrib/kubernetes/rbac.yaml is this for
-- playbooks/canary-k8s.lua.
local playbook = require("rollout.playbook")
local access = require("rollout.k8s.access")

local pb, code = playbook.load_from_args({ ... }, { ["service-account"] = "value" },
  "rollout tools/k8s_rbac.lua PLAYBOOK [--service-account NAME] [--set key=value ...]")
if not pb then return code end
io.write(access.rbac_yaml(pb, { service_account = code["service-account"] }))
return 0

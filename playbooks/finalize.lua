-- The runbook's finalize procedure (Step 7, finalize-deployment.sh), as the finalize hook
-- (include("finalize.lua").hook) and as a script for a promoted rollout:
--   rollout playbooks/finalize.lua PLAYBOOK [--set key=value ...]
-- Each step is a command from the playbook's params (argv lists, never a shell); an unset
-- step is reported as skipped, never silently passed:
--   promote_command        1. label the canary primary     2. scale it to full capacity
--   wait_ready_command     3. wait for every pod ready (else the canary's ready URL)
--   drain_baseline_command 4. drain and remove the baseline
--   service_selector_command 5. point the service at the new version
--   cleanup_command        6-7. remove canary routing, annotate the deployment completed
local M = {}

local STEPS = {
  { "promote_command", "promote the canary and scale it up" },
  { "wait_ready_command", "wait for the new version to be ready" },
  { "drain_baseline_command", "drain and remove the baseline" },
  { "service_selector_command", "point the service at the new version" },
  { "cleanup_command", "clean up canary routing" },
}

local function run_step(pb, key, what, log)
  local argv = (pb.params or {})[key]
  if not argv then
    if key == "wait_ready_command" and pb.versions.canary.ready then
      local r = http.request({ method = "GET", url = pb.versions.canary.ready, timeout = 5 })
      if not r or r.status >= 300 then error("canary not ready: " .. pb.versions.canary.ready, 0) end
      log(what .. ": canary ready")
      return
    end
    log(what .. ": params." .. key .. " not set, skipped")
    return
  end
  local r, err = proc.run({ argv = argv, timeout = 600 })
  if not r then error(what .. ": " .. err, 0) end
  if r.code ~= 0 then error(string.format("%s: %s exited %s: %s", what, argv[1], tostring(r.code), (r.stderr or ""):sub(1, 200)), 0) end
  log(what .. ": ok")
end

function M.steps(pb, log)
  for _, s in ipairs(STEPS) do run_step(pb, s[1], s[2], log) end
  return true
end

function M.hook(ctx) return M.steps(ctx.engine.pb, ctx.log) end

function M.manual(argv)
  local pb, code = require("rollout.playbook").load_from_args(argv, {},
    "rollout playbooks/finalize.lua PLAYBOOK [--set key=value ...]")
  if not pb then return code end
  local ok, err = pcall(M.steps, pb, print)
  if not ok then io.stderr:write("finalize: ", tostring(err), "\n"); return 3 end
  print("finalized")
  return 0
end

local argv = { ... }
if #argv > 0 and type(argv[1]) == "string" and arg and arg[0] and arg[0]:match("finalize%.lua$") then
  return M.manual(argv)
end
return M

-- The runbook's rollback procedure (rollback-canary.sh), two ways:
--
--   as the on_rollback hook (include("rollback.lua").hook): the engine has already routed
--   100 % to the baseline and confirmed it by read-back; this scales the canary down,
--   verifies the baseline's health and logs the rollback event;
--
--   as a manual rollback for a rollout that is not running (an incident at 3 a.m.):
--     rollout playbooks/rollback.lua PLAYBOOK [--reason TEXT] [--set key=value ...]
--   routes 100 % to the baseline through the playbook's router, confirms the read-back
--   (retrying up to max_rollback_time), then the same steps (for a playbook with
--   params.kubernetes: the canary Deployment scaled to 0 and its pods waited for until
--   gone, through the Kubernetes API). Exit 0 when confirmed.
local M = {}

local function params(pb) return pb.params or {} end

local function run_command(pb, key, log)
  local argv = params(pb)[key]
  if not argv then log(key .. " not set: skipped"); return true end
  local r, err = proc.run({ argv = argv, timeout = 600 })
  if not r then error(key .. ": " .. err, 0) end
  if r.code ~= 0 then error(string.format("%s: %s exited %s: %s", key, argv[1], tostring(r.code), (r.stderr or ""):sub(1, 200)), 0) end
  log(key .. ": ok")
  return true
end

local function wait_healthy(url, timeout, log)
  local deadline = rollout.now() + timeout
  while true do
    local r = http.request({ method = "GET", url = url, timeout = 2 })
    if r and r.status >= 200 and r.status < 300 then log("baseline healthy: " .. url); return true end
    if rollout.now() >= deadline then error("baseline not healthy after " .. timeout .. " s: " .. url, 0) end
    rollout.sleep("1s")
  end
end

local function log_event(pb, deployment_id, reason, log)
  local api = params(pb).deployment_api
  if not api then log("params.deployment_api not set: rollback event not posted"); return end
  local r, err = http.request({ method = "POST", url = api .. "/deployments/rollback", timeout = 5,
    headers = { ["Content-Type"] = "application/json" },
    body = json.encode({ deployment_id = deployment_id, rolled_back_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
      rolled_back_by = os.getenv("SUDO_USER") or os.getenv("USER") or "rollout", reason = reason }) })
  if not r then log("deployment api: " .. err) else log("rollback event posted: HTTP " .. r.status) end
end

--- Steps 3-6, after the traffic cutover.
function M.after_cutover(pb, reason, log, deployment_id)
  run_command(pb, "scale_down_command", log)                 -- 3-4. scale the canary down
  local b = pb.versions.baseline
  if b.health then wait_healthy(b.health, 60, log) end        -- 5. verify baseline health
  log_event(pb, deployment_id, reason, log)                   -- 6. log the rollback event
  return true
end

--- The on_rollback hook.
function M.hook(ctx)
  return M.after_cutover(ctx.engine.pb, ctx.reason, ctx.log, ctx.engine.deployment_id)
end

--- The manual procedure. Returns an exit code.
function M.manual(argv)
  local pb, opts = require("rollout.playbook").load_from_args(argv, { reason = "value" },
    "rollout playbooks/rollback.lua PLAYBOOK [--reason TEXT] [--set key=value ...]")
  if not pb then return opts end
  local t0 = rollout.now()
  local function log(msg) print(string.format("[%6.1fs] %s", rollout.now() - t0, msg)) end
  local routers = require("rollout.routers")
  local ok, router = pcall(routers.new, pb.router, { emit = function(kind, f)
    if kind == "router_error" then log("router error: " .. tostring(f.error)) end
  end })
  if not ok then io.stderr:write("rollback: ", tostring(router), "\n"); return 2 end
  log("routing 100% of traffic to the baseline")             -- 1. immediate cutover
  local done, err = router:set_weights({ baseline = 100, canary = 0 }, { deadline = pb.max_rollback_time })
  if not done then log("traffic switch NOT confirmed: " .. tostring(err)); return 3 end
  local w = router:get_weights()                              -- 2. verify the switch
  log(string.format("traffic switch confirmed: baseline %d%%, canary %d%%", w.baseline, w.canary))
  local aok, aerr
  if (pb.params or {}).kubernetes then -- a Kubernetes playbook: scale the canary to 0, natively
    aok, aerr = pcall(function()
      require("rollout.k8s.runbook").on_rollback({ engine = { pb = pb, router = router }, log = log })
      log_event(pb, pb.deployment_id, opts.reason or "Manual rollback", log)
    end)
  else
    aok, aerr = pcall(M.after_cutover, pb, opts.reason or "Manual rollback", log, pb.deployment_id)
  end
  if not aok then log("rollback step failed: " .. tostring(aerr)); return 3 end
  log(string.format("rollback completed in %.1f s", rollout.now() - t0))
  return 0
end

-- Run as a script (`rollout playbooks/rollback.lua ...`), or included as a module.
local argv = { ... }
if #argv > 0 and type(argv[1]) == "string" and arg and arg[0] and arg[0]:match("rollback%.lua$") then
  return M.manual(argv)
end
return M

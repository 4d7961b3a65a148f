-- The runbook's procedures as hooks: deploy the canary (Step 5), roll back (the manual
-- rollback script's steps after the traffic cutover, which the engine has already done
-- and confirmed), and finalize (Step 7). Commands come from the playbook's params
-- (argv lists, never a shell); an unset command is reported as skipped.
local function params(ctx) return ctx.engine.pb.params or {} end

local function run(ctx, key)
  local argv = params(ctx)[key]
  if not argv then ctx.log(key .. " not set: skipped"); return true end
  local r, err = proc.run({ argv = argv, timeout = 600 })
  if not r then error(key .. ": " .. err, 0) end
  if r.code ~= 0 then error(string.format("%s: %s exited %d: %s", key, argv[1], r.code, (r.stderr or ""):sub(1, 200)), 0) end
  ctx.log(key .. ": ok")
  return true
end

-- Wait until a URL answers 2xx (the runbook's `kubectl wait --for=condition=ready`).
local function wait_ready(ctx, url, timeout)
  local deadline = rollout.now() + timeout
  while true do
    local r = http.request({ method = "GET", url = url, timeout = 2 })
    if r and r.status >= 200 and r.status < 300 then ctx.log(url .. " ready"); return true end
    if rollout.now() >= deadline then error("not ready after " .. timeout .. " s: " .. url, 0) end
    rollout.sleep("1s")
  end
end

local function post_event(ctx, path, body)
  local api = params(ctx).deployment_api
  if not api then return end
  local r, err = http.request({ method = "POST", url = api .. path, timeout = 5,
    headers = { ["Content-Type"] = "application/json" }, body = json.encode(body) })
  if not r then ctx.log("deployment api: " .. err) end
end

return {
  deploy = function(ctx)
    run(ctx, "deploy_command")
    local c = ctx.versions.canary
    if c.ready or c.health then wait_ready(ctx, c.ready or c.health, 300) end
    return true
  end,
  on_rollback = function(ctx)
    run(ctx, "scale_down_command")              -- 3-4. scale down the canary
    local b = ctx.versions.baseline
    if b.health then wait_ready(ctx, b.health, 60) end -- 5. verify baseline health
    post_event(ctx, "/deployments/rollback", {        -- 6. log the rollback event
      deployment_id = ctx.engine.deployment_id, rolled_back_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
      rolled_back_by = os.getenv("USER") or "rollout", reason = ctx.reason,
    })
    return true
  end,
  finalize = function(ctx)
    run(ctx, "promote_command")                 -- 1-7. promote, scale up, drain baseline
    return true
  end,
}

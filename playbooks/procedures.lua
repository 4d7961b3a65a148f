-- The runbook's procedures as hooks: deploy the canary (Step 5), roll back (rollback.lua:
-- the manual rollback script's steps after the traffic cutover, which the engine has
-- already done and confirmed), and finalize (finalize.lua, Step 7). Commands come from the
-- playbook's params (argv lists, never a shell); an unset command is reported as skipped.
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

return {
  deploy = function(ctx)
    run(ctx, "deploy_command")
    local c = ctx.versions.canary
    if c.ready or c.health then wait_ready(ctx, c.ready or c.health, 300) end
    return true
  end,
  on_rollback = include("rollback.lua").hook,   -- scale down, verify the baseline, log the event
  finalize = include("finalize.lua").hook,         -- Step 7
}

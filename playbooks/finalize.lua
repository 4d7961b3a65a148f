-- The runbook's finalize procedure (Step 7, finalize-deployment.sh), as the finalize hook
-- (include("finalize.lua").hook) and as a script for a promoted rollout:
--   rollout playbooks/finalize.lua PLAYBOOK [--journal DIR] [--set key=value ...]
-- The script refuses (exit 3, nothing done) unless: it gets the journal's lock (no engine
-- runs the rollout beside it), the playbook's latest journal (DIR, default
-- .rollout/journal/<service>) ends with outcome `promoted` (not an observe-only run) and
-- shows a promotion confirmed at 100 % with no rollback after it, and the router reads back
-- canary 100 % now (a proxy reloaded since then serves the baseline again). It holds the
-- lock while it runs, and fails (exit 3) when every step was skipped: nothing was finalized. A playbook with
-- params.kubernetes (playbooks/canary-k8s.lua) is finalized natively through the Kubernetes
-- API (rollout.k8s.runbook.finalize), each step confirmed by read-back.
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

-- true when the step ran, false when it was skipped
local function run_step(pb, key, what, log)
  local argv = (pb.params or {})[key]
  if not argv then
    if key == "wait_ready_command" and pb.versions.canary.ready then
      local r = http.request({ method = "GET", url = pb.versions.canary.ready, timeout = 5 })
      if not r or r.status >= 300 then error("canary not ready: " .. pb.versions.canary.ready, 0) end
      log(what .. ": canary ready")
      return true
    end
    log(what .. ": params." .. key .. " not set, skipped")
    return false
  end
  local r, err = proc.run({ argv = argv, timeout = 600 })
  if not r then error(what .. ": " .. err, 0) end
  if r.code ~= 0 then error(string.format("%s: %s exited %s: %s", what, argv[1], tostring(r.code), (r.stderr or ""):sub(1, 200)), 0) end
  log(what .. ": ok")
  return true
end

--- Run the steps; returns the number that ran (0: every one was skipped).
function M.steps(pb, log)
  local ran = 0
  for _, s in ipairs(STEPS) do if run_step(pb, s[1], s[2], log) then ran = ran + 1 end end
  return ran
end

--- Whether the journal events (one rollout's, oldest first) show a promotion confirmed at
--- 100 % with no rollback after it. true | false, why.
function M.promotion_confirmed(events)
  local at100, why = false, "no rollout in the journal"
  for _, ev in ipairs(events) do
    if ev.event == "rollout_started" then at100, why = false, "no weight confirmed at 100 % canary"
    elseif ev.event == "weight_confirmed" then
      at100 = ev.canary == 100
      if not at100 then why = "the last confirmed weights are canary " .. tostring(ev.canary) .. " %" end
    elseif ev.event == "rollback_started" or ev.event == "rolled_back" then
      at100, why = false, "the rollout was rolled back (" .. tostring(ev.reason) .. ")"
    end
  end
  if at100 then return true end
  return false, why
end

function M.hook(ctx)
  M.steps(ctx.engine.pb, ctx.log)
  return true
end

-- What finalize needs before it removes anything: the journal's lock (no engine beside it),
-- the rollout's outcome `promoted` (not observe-only), a promotion confirmed at 100 % with
-- no rollback after it, and the router reading back canary 100 %.
-- lock, router | nil, message
local function preconditions(pb, dir)
  -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
  local journal = require("rollout.journal")
  local path, events = journal.latest(dir)
  if not path then return nil, "no journal of " .. tostring(pb.service) .. " in " .. dir .. ": no promotion to finalize" end
  local lock, lerr, holder = journal.lock(dir)
  if not lock then
    if holder then
      return nil, string.format("an engine (pid %d) is running this rollout (%s): finalize runs after its promotion,"
        .. " never beside it", holder, dir .. "/lock")
    end
    return nil, "journal lock: " .. tostring(lerr)
  end
  local confirmed, why = M.promotion_confirmed(events)
  if not confirmed then
    lock:release()
    return nil, path .. " shows no promotion confirmed at 100 %: " .. why
  end
  local s = journal.summary(events)
  if s.outcome ~= "promoted" or s.observe then
    lock:release()
    return nil, string.format("%s shows no promotion: the rollout's outcome is %s%s", path,
      s.outcome and ("`" .. s.outcome .. "`") or "not written yet (it has not ended)",
      s.observe and " (an observe-only run: it moved no traffic)" or "")
  end
  -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
  local okr, router = pcall(require("rollout.routers").new, pb.router, {})
  if not okr then lock:release(); return nil, "router: " .. tostring(router), 2 end
  local got, gerr = router:get_weights()
  if not got then lock:release(); return nil, "the router's weights cannot be read back: " .. tostring(gerr) end
  if got.canary ~= 100 or got.baseline ~= 0 then
    lock:release()
    return nil, string.format("the router serves baseline %s%% / canary %s%%, not canary 100 %%: the baseline still"
      .. " serves users (a proxy reloaded with its config weights?); run `rollout ctl ... promote --full` or set the"
      .. " weights first", tostring(got.baseline), tostring(got.canary))
  end
  return lock, router
end

function M.manual(argv)
  -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
  local pb, opts = require("rollout.playbook").load_from_args(argv, { journal = "value" },
    "rollout playbooks/finalize.lua PLAYBOOK [--journal DIR] [--set key=value ...]")
  if not pb then return opts end
  -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
  local journal = require("rollout.journal")
  local dir = opts.journal or journal.default_dir(pb.service)
  local lock, router, code = preconditions(pb, dir)
  if not lock then
    io.stderr:write("finalize refused: ", router, "; nothing was done\n")
    return code or 3
  end
  local function done(c) lock:release(); return c end
  if (pb.params or {}).kubernetes then
    local ctx = { engine = { pb = pb, router = router, deployment_id = pb.deployment_id },
      weights = { baseline = 0, canary = 100 }, promotion_confirmed = true, log = print }
    -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
    local ok, err = pcall(require("rollout.k8s.runbook").finalize, ctx)
    if not ok then io.stderr:write("finalize: ", tostring(err), "\n"); return done(3) end
    print("finalized")
    return done(0)
  end
  local ok, ran = pcall(M.steps, pb, print)
  if not ok then io.stderr:write("finalize: ", tostring(ran), "\n"); return done(3) end
  if ran == 0 then
    io.stderr:write("finalize: nothing was finalized: every step was skipped (set params.promote_command, "
      .. "wait_ready_command, drain_baseline_command, service_selector_command, cleanup_command)\n")
    return done(3)
  end
  print("finalized")
  return done(0)
end

local argv = { ... }
if #argv > 0 and type(argv[1]) == "string" and arg and arg[0] and arg[0]:match("finalize%.lua$") then
  return M.manual(argv)
end
return M

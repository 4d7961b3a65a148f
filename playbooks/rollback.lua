-- The runbook's rollback procedure (rollback-canary.sh), two ways:
--
--   as the on_rollback hook (include("rollback.lua").hook): the engine has already routed
--   100 % to the baseline and confirmed it by read-back; this scales the canary down,
--   verifies the baseline's health and logs the rollback event;
--
--   as a manual rollback (an incident at 3 a.m.):
--     rollout playbooks/rollback.lua PLAYBOOK [--reason TEXT] [--set key=value ...]
--                                   [--journal DIR] [--run-dir DIR]
--   First it asks the control socket <run dir>/<service>.sock (--run-dir, else the run's
--   default run dir; the service comes from the playbook, so this does not depend on the
--   current directory or on finding the journal): when an engine answers, the rollback goes
--   through it: `abort REASON`, and this waits for the engine's outcome (read from the
--   journal the engine names); the router is not touched from here, so the engine cannot undo
--   it. An observe-only engine never moves traffic, so for it this stops the engine (abort),
--   waits for its lock, and rolls back here, journaled in that engine's journal.
--   When no engine answers but one holds the journal's lock, it refuses (exit 3, nothing
--   touched). Otherwise it takes the lock itself, journals `manual_rollback` in the unfinished journal
--   before it acts (so no `run --resume` re-applies canary weights: a resume finishes the
--   rollback instead), routes 100 % to the baseline through the playbook's router, confirms
--   the read-back (retrying up to max_rollback_time), journals weight_confirmed and the
--   outcome rolled_back (reason manual), then the same steps as the hook (for a playbook
--   with params.kubernetes: the canary Deployment scaled to 0 and its pods waited for until
--   gone, through the Kubernetes API).
--   --journal and --run-dir are `rollout run`'s (defaults .rollout/journal/<service> and the
--   run's default run dir). Exit 0 when 0 % is confirmed (by the engine or here), 3 when not.
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

local function who() return os.getenv("SUDO_USER") or os.getenv("USER") or "unknown" end

-- The live engine, if one answers on its control socket: connection, status | nil.
-- The socket is <run dir>/<service>.sock (the playbook's service), whatever the cwd and
-- whether or not a journal directory was found here.
local function live_engine(pb, opts)
  -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
  local control = require("rollout.control")
  local sock = control.socket_path(opts.run_dir or control.default_run_dir(), pb.service)
  local c = control.connect(sock, 2)
  if not c then return nil, sock end
  local st = c:request("status", 10)
  if not (st and st.ok and type(st.value) == "table") or st.value.outcome then c:close(); return nil, sock end
  return c, sock, st.value
end

local function dirname(path) return path and path:match("^(.*)/[^/]*$") end

-- Ask the live engine to roll back (abort) and wait for its outcome. Returns the outcome
-- table (its status's) or nil, why.
local function abort_engine(c, pb, reason)
  local r, err = c:request("abort " .. reason:gsub("[\r\n]", " "), 30)
  if not (r and r.ok) then return nil, "the engine refused the abort: " .. tostring(r and (r.error or r.text) or err) end
  local deadline = rollout.now() + pb.max_rollback_time + 60
  local outcome
  while rollout.now() < deadline do
    local st = c:request("status", 10)
    if not st then break end -- gone: its journal says how it ended
    if type(st.value) == "table" and st.value.outcome then outcome = st.value.outcome; break end
    rollout.sleep(0.2)
  end
  return outcome or {}
end

-- A real engine runs the rollout: it rolls back (abort); the router is not touched from
-- here, so the engine cannot undo it.
local function through_engine(c, sock, st, pb, reason, log)
  log(string.format("an engine runs this rollout: asking it to roll back (abort) through %s", sock))
  local out, err = abort_engine(c, pb, reason)
  c:close()
  if err then io.stderr:write("rollback: ", err, "\n"); return 3 end
  local s = {}
  if st.journal then
    -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
    local events = require("rollout.journal").read(st.journal)
    -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
    s = events and require("rollout.journal").summary(events) or {}
  end
  if s.outcome == nil then s.outcome = out.outcome end -- the engine's own answer, when its journal was not readable
  if s.outcome ~= "rolled_back" then
    log("the engine has not confirmed the rollback (outcome: " .. tostring(s.outcome) .. ")")
    return 3
  end
  log("the engine rolled back: baseline 100%, canary 0% confirmed (its journal " .. tostring(st.journal) .. " says so)")
  return 0
end

--- The manual procedure. Returns an exit code.
--- An observe-only engine never moves traffic, so its abort is no rollback: this stops it
--- (abort: its verdict is journaled), waits for it to release the journal's lock, and then
--- rolls back itself, journaled in that journal (an operator who asks for a rollback gets one).
function M.manual(argv)
  -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
  local pb, opts = require("rollout.playbook").load_from_args(argv, { reason = "value", journal = "value",
    run_dir = "value" }, "rollout playbooks/rollback.lua PLAYBOOK [--reason TEXT] [--set key=value ...]"
    .. " [--journal DIR] [--run-dir DIR]")
  if not pb then return opts end
  -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
  local fs, journal = require("rollout.fs"), require("rollout.journal")
  local t0 = rollout.now()
  local function log(msg) print(string.format("[%6.1fs] %s", rollout.now() - t0, msg)) end
  local reason = opts.reason or "Manual rollback"
  local dir = opts.journal or journal.default_dir(pb.service)
  local lock, writer
  local observed -- the journal of an observe-only engine stopped here: journaled even though it ended
  -- a live engine first, before anything touches the router
  local c, sock, st = live_engine(pb, opts)
  if c and not st.observe then return through_engine(c, sock, st, pb, reason, log) end
  if c then
    log(string.format("the engine on %s is observe-only (it never moves traffic): stopping it, then rolling back here", sock))
    local _, err = abort_engine(c, pb, reason)
    c:close()
    if err then io.stderr:write("rollback: ", err, "; nothing was touched\n"); return 3 end
    observed = st.journal
    dir = dirname(st.journal) or dir
    local deadline = rollout.now() + 30
    while true do -- its lock is released when it has closed its journal
      local l, lerr, holder = journal.lock(dir)
      if l then lock = l; break end
      if not holder or rollout.now() >= deadline then
        io.stderr:write("rollback: the observe-only engine did not release ", dir, "/lock (", tostring(lerr),
          "); nothing was touched\n")
        return 3
      end
      rollout.sleep(0.1)
    end
  end
  if not lock and fs.stat(dir) then
    local lerr, holder
    lock, lerr, holder = journal.lock(dir)
    if holder then
      io.stderr:write(string.format("rollback: the engine (pid %d) running this rollout does not answer on %s;"
        .. " nothing was touched: stop it with SIGTERM (it rolls back unless it runs with --on-interrupt=pause), or"
        .. " name its run directory with --run-dir\n", holder, sock))
      return 3
    end
    if not lock then io.stderr:write("rollback: journal lock: ", tostring(lerr), "\n"); return 3 end
  end
  if lock then
    local path, events = journal.latest(dir)
    if path and events and (observed == path or not journal.summary(events).finished) then
      local werr
      writer, werr = journal.open(path)
      local ok, aerr
      if writer then
        ok, aerr = writer:append({ event = "manual_rollback", ts = rollout.time(), who = who(), reason = reason,
          pid = fs.getpid(), observe_engine = observed and true or nil })
      end
      if not ok then -- never act without a record
        io.stderr:write("rollback: cannot journal the manual rollback in ", path, ": ", tostring(werr or aerr),
          "; nothing was touched\n")
        if writer then writer:close() end
        lock:release()
        return 3
      end
      log("journaled the manual rollback in " .. path .. " (a resume finishes it, never re-applies the canary)")
    end
  end
  local function done(code)
    if writer then writer:close() end
    if lock then lock:release() end
    return code
  end
  -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
  local routers = require("rollout.routers")
  local ok, router = pcall(routers.new, pb.router, { emit = function(kind, f)
    if kind == "router_error" then log("router error: " .. tostring(f.error)) end
  end })
  if not ok then io.stderr:write("rollback: ", tostring(router), "\n"); return done(2) end
  log("routing 100% of traffic to the baseline")             -- 1. immediate cutover
  local confirmed, err = router:set_weights({ baseline = 100, canary = 0 }, { deadline = pb.max_rollback_time })
  if not confirmed then
    log("traffic switch NOT confirmed: " .. tostring(err))
    if writer then writer:append({ event = "rollback_unconfirmed", ts = rollout.time(), error = tostring(err) }) end
    return done(3)
  end
  local w = router:get_weights()                              -- 2. verify the switch
  log(string.format("traffic switch confirmed: baseline %d%%, canary %d%%", w.baseline, w.canary))
  if writer then
    writer:append({ event = "weight_confirmed", ts = rollout.time(), baseline = 100, canary = 0 })
    writer:append({ event = "outcome", ts = rollout.time(), outcome = "rolled_back", reason = "manual" })
  end
  local aok, aerr
  if (pb.params or {}).kubernetes then -- a Kubernetes playbook: scale the canary to 0, natively
    aok, aerr = pcall(function()
      -- lazy: the manual command's (included as a hook, this file runs in the sandbox: no require)
      require("rollout.k8s.runbook").on_rollback({ engine = { pb = pb, router = router }, log = log })
      log_event(pb, pb.deployment_id, reason, log)
    end)
  else
    aok, aerr = pcall(M.after_cutover, pb, reason, log, pb.deployment_id)
  end
  if not aok then log("rollback step failed: " .. tostring(aerr)); return done(3) end
  log(string.format("rollback completed in %.1f s", rollout.now() - t0))
  return done(0)
end

-- Run as a script (`rollout playbooks/rollback.lua ...`), or included as a module.
local argv = { ... }
if #argv > 0 and type(argv[1]) == "string" and arg and arg[0] and arg[0]:match("rollback%.lua$") then
  return M.manual(argv)
end
return M

-- rollout run PLAYBOOK [--config FILE] [--set key=value ...] [--json] [--verbose]
--                      [--journal DIR] [--resume | --fresh] [--run-dir DIR] [--no-control]
-- Runs a playbook for real: its router moves real traffic, its sources read real metrics.
--
-- Journal: every event goes to DIR/<start>-<pid>.jsonl (rollout.journal), fsync'd before it
-- is printed or acted on; DIR defaults to ./.rollout/journal/<service>. DIR/lock makes sure
-- one engine runs a rollout: a second one refuses, naming the holder's pid.
-- A run that finds an unfinished journal in DIR (a crash, kill -9, SIGTERM) says so and
-- refuses; --resume continues it (same stage, the router's weights checked against the
-- last confirmed ones and re-applied if they differ, the hold continued with the time that
-- was left), --fresh (or --restart) starts over and marks the old journal abandoned.
--
-- Control socket: <run dir>/<service>.sock (rollout.control), run dir --run-dir, else
-- $XDG_RUNTIME_DIR/rollout, /run/rollout for root, ./.rollout/run otherwise. A pause waits
-- there for an operator's resume, promote or abort (rollout ctl, rollout attach).
--
-- Signals: SIGINT or SIGTERM pauses, persists, and exits 3 with traffic where the journal's
-- last confirmed weights put it (run --resume continues). A second SIGINT within 5 s rolls
-- back (exit 1 once 0 % is confirmed).
--
-- --observe (or `observe = true` in the playbook): observe-only (rollout.observe): stages,
-- gates and triggers run against the router's current split; weights and hooks are never
-- touched; a rollback is reported ("would roll back: ...") and ends the run with exit 1.
--
-- Exit codes: 0 promoted, 1 rolled back, 2 usage, configuration, lock or journal problems
-- before anything was done, 3 paused, aborted or failed.
local rollout = require("rollout")
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local output = require("rollout.output")
local journal = require("rollout.journal")
local control = require("rollout.control")

local M = {}
M.summary = "run a playbook for real: its router moves traffic, its sources read real metrics"
M.usage = "rollout run PLAYBOOK [OPTIONS]"
M.description = "Runs PLAYBOOK for real, journaling every event before acting on it, with a control socket "
  .. "for operators (rollout ctl, rollout attach). On a terminal the decisions scroll above a live "
  .. "progress view; piped, they are plain lines. SIGINT or SIGTERM pauses and exits 3 with traffic where "
  .. "the journal's last confirmed weights put it; a second SIGINT within 5 s rolls back."
M.options = {
  { "--config FILE", "map a runbook CanaryDeployment YAML onto the playbook (stages, golden signals, "
    .. "rollback triggers, feature flags, abTest); keys rollout cannot use are warned about with file and line" },
  { "--set KEY=VALUE", "override a playbook value before validation, e.g. --set stages[2].hold=20s or "
    .. "--set sources[1].url=http://prom:9090; numbers and booleans are read as such, a value starting with "
    .. "[ or { as JSON; repeatable. ${env:NAME} and ${file:PATH} in a value read a secret from outside argv",
    list = true },
  { "--set-file KEY=PATH", "--set KEY to the contents of file PATH (a secret that `ps` must not show); repeatable",
    list = true },
  { "--json", "print one JSON object per event instead of lines; the last line is the summary "
    .. "{outcome, reason, at, stage}" },
  { "--verbose", "also print the events that have no line of their own (per-interval evaluations, "
    .. "router and source reports)" },
  { "--journal DIR", "the journal directory (default .rollout/journal/SERVICE)" },
  { "--resume", "continue the unfinished rollout found in the journal directory" },
  { "--fresh", "start over: mark an unfinished journal abandoned and begin a new rollout" },
  { "--restart", "the same as --fresh" },
  { "--run-dir DIR", "where the control socket SERVICE.sock goes (default $XDG_RUNTIME_DIR/rollout, "
    .. "/run/rollout for root, else .rollout/run)" },
  { "--no-control", "do not open a control socket" },
  { "--metrics-listen HOST:PORT", "serve the rollout's Prometheus /metrics on HOST:PORT" },
  { "--observe", "observe only (as `observe = true` in the playbook): stages, gates and triggers run against "
    .. "the router's current split; weights and hooks are never touched; a rollback is reported (\"would roll "
    .. "back: ...\") and ends the run with exit 1" },
}
M.docs = "[operations](operations.md), [observe-only runs](operations.md#observe-only-runs)"   -- for docs/cli.md
M.exit = "0 promoted, 1 rolled back, 2 usage, configuration, lock or journal problem before anything was "
  .. "done, 3 paused, aborted or failed, 4 the rollout ended but its journal is incomplete (the events that "
  .. "could not be written are on stderr as JSON lines)"

--- build(pb, emit) -> router, sources | nil, err   (shared with repl and check)
function M.build(pb, emit)
  local routers = require("rollout.routers")
  local sources_mod = require("rollout.sources")
  if not pb.router then return nil, "the playbook names no router (router = {type = ...})" end
  local function forward(kind, fields)
    local ev = {}
    for k, v in pairs(fields or {}) do ev[k] = v end
    ev.kind = kind
    if emit then emit("router", ev) end
  end
  local ok, router = pcall(routers.new, pb.router, { emit = forward })
  if not ok then return nil, tostring(router) end
  local list = {}
  local ctx = { versions = pb.versions, service = pb.service, emit = function(kind, fields)
    local ev = {}
    for k, v in pairs(fields or {}) do ev[k] = v end
    ev.kind = kind
    if emit then emit("source", ev) end
  end }
  for i, cfg in ipairs(pb.sources) do
    local sok, src = pcall(sources_mod.new, cfg, ctx)
    if not sok then return nil, "sources[" .. i .. "]: " .. tostring(src) end
    list[#list + 1] = src
  end
  local has_signals = false
  for _, s in ipairs(list) do if s.signals then has_signals = true end end
  if not has_signals then return nil, "the playbook has no metric source with signals (scrape, prometheus or probe)" end
  return router, list
end

local function who()
  return os.getenv("SUDO_USER") or os.getenv("USER") or os.getenv("LOGNAME") or "unknown"
end

local function fail(msg)
  io.stderr:write("rollout run: ", msg, "\n")
  return 2
end

local function describe(s)
  local w = s.weights and string.format("baseline %s%% / canary %s%%", tostring(s.weights.baseline), tostring(s.weights.canary))
    or "no weights confirmed"
  local when = s.last_ts and os.date("!%Y-%m-%d %H:%M:%SZ", math.floor(s.last_ts)) or "?"
  return string.format("stage %s, %s, %s; last event %s", tostring(s.stage or "-"),
    s.outcome and ("ended " .. s.outcome) or "not ended", w, when)
end

-- The journal to write and the resume state: writer, resume | nil, exit code.
local function open_journal(dir, pb, opts)
  local path, events, _ = journal.latest(dir)
  if not path and events then return nil, fail("cannot read the journal: " .. tostring(events)) end
  local unfinished
  if path then
    local s = journal.summary(events)
    if not s.finished then unfinished = { path = path, summary = s, events = events } end
  end
  if unfinished and not opts.resume and not opts.fresh then
    return nil, fail(string.format("an unfinished rollout of %s is in %s\n  %s\n"
      .. "run again with --resume to continue it, or --fresh to start over (the old journal is kept, marked abandoned)",
      tostring(unfinished.summary.service or pb.service), unfinished.path, describe(unfinished.summary)))
  end
  if opts.resume then
    if not unfinished then
      return nil, fail("nothing to resume in " .. dir .. (path and (" (the last rollout ended: "
        .. tostring(journal.summary(events).outcome) .. ")") or " (no journal)"))
    end
    local s = unfinished.summary
    if s.service and s.service ~= pb.service then
      return nil, fail(unfinished.path .. " is a rollout of " .. s.service .. ", not of " .. tostring(pb.service))
    end
    local r, why = journal.replay(unfinished.events)
    if not r and why ~= "start" then return nil, fail("cannot resume " .. unfinished.path .. ": " .. tostring(why)) end
    local w, err = journal.open(unfinished.path)
    if not w then return nil, fail("journal: " .. tostring(err)) end
    return w, r -- r == nil: no stage was entered; the rollout starts over in the same journal
  end
  if unfinished then
    local old, err = journal.open(unfinished.path)
    if not old then return nil, fail("journal: " .. tostring(err)) end
    local ok, aerr = old:append({ event = "abandoned", ts = rollout.time(), who = who(),
      detail = "rollout run --fresh started over" })
    old:close()
    if not ok then return nil, fail("journal: " .. tostring(aerr)) end
  end
  local w, err = journal.open(journal.new_path(dir))
  if not w then return nil, fail("journal: " .. tostring(err)) end
  return w, nil
end

function M.main(argv)
  require("rollout.redact").guard_stderr() -- what run says on stderr is redacted too
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("run", pos, M.usage) end
  if #pos ~= 1 then return args.usage_error("run", "expected one playbook", M.usage) end
  opts.fresh = opts.fresh or opts.restart
  if opts.resume and opts.fresh then return args.usage_error("run", "--resume and --fresh exclude each other", M.usage) end
  local pb, errs = playbook.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then
    for _, e in ipairs(errs) do io.stderr:write(playbook.format_error(e), "\n") end
    return 2
  end
  for _, w in ipairs(pb.warnings or {}) do io.stderr:write("warning: ", playbook.format_error(w), "\n") end

  -- one engine per rollout, and a record before anything acts
  local dir = opts.journal or journal.default_dir(pb.service)
  local ok, derr = journal.mkdirs(dir)
  if not ok then return fail("journal directory: " .. tostring(derr)) end
  local lock, lerr, holder = journal.lock(dir)
  if not lock then
    if holder then return fail(string.format("another engine (pid %d) is running this rollout (%s)", holder, lerr)) end
    return fail("lock: " .. tostring(lerr))
  end
  local writer, resume = open_journal(dir, pb, opts)
  if not writer then lock:release(); return resume end

  local printer = output.printer({ json = opts.json, verbose = opts.verbose })
  local ctl
  -- observability (docs/observability.md): /metrics and notifications, behind the journal
  local metrics, notifier = nil, require("rollout.notify").new(pb, { who = who() })
  if opts.metrics_listen then
    local merr
    metrics, merr = require("rollout.metrics_endpoint").start(opts.metrics_listen)
    if not metrics then writer:close(); lock:release(); return fail(merr) end
    io.stderr:write("rollout: metrics ", metrics.url, "\n")
  end
  for _, p in ipairs(notifier:problems()) do io.stderr:write("warning: notifications: ", p, "\n") end
  local sink = writer:sink(function(ev, eng)
    printer(ev, eng)
    if ctl then ctl:record(ev) end
    if metrics then metrics.emit(ev, eng) end
    notifier.emit(ev, eng)
  end)
  local e
  local router, sources = M.build(pb, function(kind, fields) if e then e:emit(kind, fields) end end)
  if not router then
    writer:close(); lock:release()
    return fail(sources)
  end
  e = engine.new(pb, { router = router, sources = sources, emit = sink, interactive = true, who = who(),
    resume = resume, observe = opts.observe })
  if metrics then metrics:bind(e) end

  local socket
  if not opts.no_control then
    socket = control.socket_path(opts.run_dir or control.default_run_dir(), pb.service)
    local cerr
    ctl, cerr = control.serve(e, { path = socket, journal = writer.path })
    if not ctl then
      writer:close(); lock:release()
      for _, s in ipairs(sources) do if s.close then pcall(s.close, s) end end
      return fail("control socket: " .. tostring(cerr))
    end
  end
  local rok, rerr = writer:append({ event = "engine_started", ts = rollout.time(), pid = require("rollout.fs").getpid(),
    who = who(), playbook = pb.file, journal = writer.path, socket = socket, resume = resume and true or nil })
  if not rok then
    if ctl then ctl:close() end
    writer:close(); lock:release()
    for _, s in ipairs(sources) do if s.close then pcall(s.close, s) end end
    return fail("the journal cannot be written, nothing was done: " .. tostring(rerr))
  end
  io.stderr:write("rollout: journal ", writer.path, "\n")
  if socket then
    io.stderr:write("rollout: control socket ", socket, " (rollout ctl ", socket, " status | rollout attach ", socket, ")\n")
  end

  local interrupted
  local watcher = rollout.spawn(function()
    local sig = rollout.wait_signal("INT", "TERM")
    interrupted = sig
    e:stop("signal:" .. sig, "SIG" .. sig)
  end)
  local task = rollout.spawn(function() return e:run() end)
  local outcome = task:wait()
  watcher:cancel()
  if interrupted and outcome.outcome == "paused" then
    io.stderr:write(string.format("rollout: paused by SIG%s with traffic at baseline %s%% / canary %s%% (as journaled); "
      .. "`rollout run %s --resume` continues%s\n", interrupted, tostring(e.weights.baseline), tostring(e.weights.canary),
      pos[1], interrupted == "INT" and "; press Ctrl-C again within 5 s to roll back" or ""))
    local again = interrupted == "INT" and rollout.wait_signal("INT", 5)
    if again then
      e.outcome = nil
      outcome = e:rollback({ reason = "manual", detail = "second SIGINT" })
    end
  end
  if ctl then ctl:close() end
  for _, s in ipairs(sources) do if s.close then pcall(s.close, s) end end
  notifier:close(10) -- queued notifications get 10 s; what is left is journaled as not delivered
  if metrics then metrics:close() end
  writer:close() -- events it could not write go to stderr, loudly (writer.lost)
  lock:release()
  output.summary(outcome, { json = opts.json })
  if writer.lost then return journal.EXIT_INCOMPLETE end
  return engine.EXIT[outcome.outcome] or 3
end

return M

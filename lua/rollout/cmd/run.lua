-- rollout run PLAYBOOK [--config FILE] [--set key=value ...] [--json] [--verbose]
--                      [--journal DIR] [--resume | --fresh] [--run-dir DIR] [--no-control]
--                      [--on-interrupt rollback|pause] [--accept-changed-playbook]
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
-- The resolved playbook: `engine_started` records its hash (rollout.fingerprint), the hash
-- of each top-level key, the --set values and the --config file. --resume reuses the
-- recorded --set/--config inputs (--set given again is applied after them, --config given
-- again replaces it) and refuses, exit 2, when the playbook then resolves differently,
-- naming the keys that changed; --accept-changed-playbook continues with it anyway and
-- journals `playbook_changed`.
--
-- Control socket: <run dir>/<service>.sock (rollout.control), run dir --run-dir, else
-- $XDG_RUNTIME_DIR/rollout, /run/rollout for root, ./.rollout/run otherwise. A pause waits
-- there for an operator's resume, promote or abort (rollout ctl, rollout attach).
--
-- Signals (--on-interrupt): `rollback` (the default): the first SIGINT or SIGTERM rolls back
-- (canary 0 %, confirmed by read-back) and exits 1; more signals meanwhile change nothing.
-- `pause` (supervised runs: contrib/systemd): SIGINT or SIGTERM pauses, persists, and exits 3
-- with traffic where the journal's last confirmed weights put it (run --resume continues); a
-- second SIGINT within 5 s rolls back instead (exit 1). Either way one outcome is written.
--
-- --supervised (contrib/systemd/rollout@.service, restarted on a crash): --resume when the
-- journal directory holds an unfinished rollout, else a new rollout, unless the newest
-- journal already ended a rollout of this service to the same canary version (exit 2).
--
-- Error policy: usage, configuration, lock and journal problems before anything acts are
-- printed and return 2 (nothing done). The engine runs through engine.run_protected, so
-- an unexpected error (a router or a source that raises) ends the run `failed`, with the
-- error journaled (`engine_error`) and traffic sent to the baseline where the router still
-- answers; an error outside the engine is journaled too (exit 3). Either way close_all,
-- the one cleanup, closes the socket and the sources, drains the notifications
-- (rollout.assemble's sinks), closes the journal, releases the lock, and lets /metrics
-- linger and close.
--
-- --observe (or `observe = true` in the playbook): observe-only (rollout.observe): stages,
-- gates and triggers run against the router's current split; weights and hooks are never
-- touched; a rollback is reported ("would roll back: ...") and ends the run with exit 1.
--
-- Exit codes: 0 promoted, 1 rolled back, 2 usage, configuration, lock or journal problems
-- before anything was done (a changed playbook on --resume), 3 paused, aborted or failed,
-- 4 the rollout ended but its journal is incomplete.
local rollout = require("rollout")
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local output = require("rollout.output")
local journal = require("rollout.journal")
local control = require("rollout.control")
local fingerprint = require("rollout.fingerprint")
local fs = require("rollout.fs")
local assemble = require("rollout.assemble")
local redact = require("rollout.redact")
local metrics_endpoint = require("rollout.metrics_endpoint")
local json = require("rollout.json")
local units = require("rollout.units")
local exit = require("rollout.exit")

local M = {}
M.summary = "run a playbook for real: its router moves traffic, its sources read real metrics"
M.usage = "rollout run PLAYBOOK [OPTIONS]"
M.description = "Runs PLAYBOOK for real, journaling every event before acting on it, with a control socket "
  .. "for operators (rollout ctl, rollout attach). On a terminal the decisions scroll above a live "
  .. "progress view; piped, they are plain lines. SIGINT or SIGTERM rolls back to the baseline (confirmed) "
  .. "and exits 1; with --on-interrupt=pause it pauses and exits 3 with traffic where the journal's last "
  .. "confirmed weights put it, and a second SIGINT within 5 s rolls back. --resume reuses the --set and "
  .. "--config values the rollout started with and refuses a playbook that resolves differently."
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
  { "--metrics-linger DURATION", "keep /metrics up this long after the outcome so Prometheus scrapes it "
    .. "(default 15s, one scrape interval; 0 closes it at once; SIGINT or SIGTERM ends it early)" },
  { "--observe", "observe only (as `observe = true` in the playbook): stages, gates and triggers run against "
    .. "the router's current split; weights and hooks are never touched; a rollback is reported (\"would roll "
    .. "back: ...\") and ends the run with exit 1" },
  { "--on-interrupt MODE", "what the first SIGINT or SIGTERM does: rollback (the default: canary 0 %, confirmed, "
    .. "then exit 1) or pause (exit 3 with the canary's weight kept, for a supervisor that runs --resume; "
    .. "a second SIGINT within 5 s rolls back)" },
  { "--supervised", "for a supervisor that restarts the engine (contrib/systemd): continue the unfinished rollout "
    .. "in the journal directory as --resume does, else start one, unless the newest journal already ended a "
    .. "rollout of this service to the same canary version (exit 2, nothing done)" },
  { "--accept-changed-playbook", "with --resume: continue although the playbook resolves differently from the "
    .. "one the rollout started with (journaled as playbook_changed)" },
}
M.docs = "[operations](operations.md), [observe-only runs](operations.md#observe-only-runs)"   -- for docs/cli.md
M.exit = exit.describe({ { "PROMOTED", "promoted" }, { "ROLLED_BACK", "rolled back" },
  { "USAGE", "usage, configuration, lock or journal problem before anything was done (a changed playbook on --resume)" },
  { "PAUSED", "paused, aborted or failed" },
  { "INCOMPLETE", "the rollout ended but its journal is incomplete (the events that could not be written are on "
    .. "stderr as JSON lines)" } })

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
  if opts.supervised then -- a supervisor's restart: continue what is unfinished, never redo what ended
    if unfinished then
      opts.resume = true
    elseif path then
      local s = journal.summary(events)
      -- an observe-only run moved no traffic: it ended no rollout of that version
      if not s.observe and s.service == pb.service and s.canary ~= nil and s.canary == pb.versions.canary.version then
        return nil, fail(string.format("the rollout of %s to %s already ended (%s) in %s: nothing to do"
          .. " (--supervised never starts an ended rollout again; run without it to)", tostring(pb.service),
          tostring(s.canary), tostring(s.outcome), path))
      end
    end
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
    return w, r, unfinished.events -- r == nil: no stage was entered; the rollout starts over in the same journal
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

local function load(path, sets, config)
  local pb, errs = playbook.load(path, { sets = sets, config = config })
  if not pb then playbook.print_errors(errs); return nil end
  return pb
end

local function inputs_text(sets, config)
  local parts = {}
  for _, s in ipairs(sets or {}) do parts[#parts + 1] = "--set " .. s end
  if config then parts[#parts + 1] = "--config " .. config end
  return #parts > 0 and table.concat(parts, " ") or "none"
end

-- On --resume: the playbook with the recorded inputs, checked against the recorded hash.
-- Returns pb, inputs {sets=, config=}, change (accepted) | nil, exit code.
local function resume_playbook(path, pb, opts, events, journal_path)
  local rec = journal.resolved(events)
  if not rec then
    io.stderr:write("warning: ", journal_path, " records no resolved playbook (written by an older rollout):",
      " the playbook cannot be compared with the one the rollout started with\n")
    return pb, { sets = opts.set or {}, config = opts.config }
  end
  -- an observe-only rollout stays observe-only: a resume (or a supervisor's restart) without
  -- --observe must not start moving the traffic it was only watching
  if rec.observe and not opts.observe then
    opts.observe = true
    io.stderr:write("rollout: ", journal_path, " is an observe-only rollout: resuming it observe-only",
      " (weights and hooks are not touched)\n")
  end
  -- the recorded --set values, a key given again replaced by its new value
  local sets, given = {}, {}
  for _, v in ipairs(opts.set or {}) do given[v:match("^([^=]*)")] = true end
  for _, v in ipairs(rec.sets or {}) do
    if not given[v:match("^([^=]*)")] then sets[#sets + 1] = v end
  end
  for _, v in ipairs(opts.set or {}) do sets[#sets + 1] = v end
  local config = opts.config or rec.config
  local again = load(path, sets, config)
  if not again then
    io.stderr:write("rollout run: the playbook does not load with the inputs recorded in ", journal_path, ": ",
      inputs_text(sets, config), "\n")
    return nil, 2
  end
  local fp = fingerprint.of(again, { observe = opts.observe })
  if fp.hash == rec.hash then return again, { sets = sets, config = config } end
  local keys = fingerprint.diff(rec.keys, fp.keys)
  local change = { from = rec.hash, to = fp.hash, keys = keys }
  if opts.accept_changed_playbook then return again, { sets = sets, config = config }, change end
  local masked = inputs_text(rec.sets, rec.config):find(redact.MASK, 1, true)
  io.stderr:write(string.format("rollout run: refusing to resume: the playbook resolves differently from the one this rollout"
    .. " started with (%s)\n  recorded %s, now %s\n  changed: %s\n  recorded inputs: %s\n  inputs now: %s\n%s"
    .. "resume with the same playbook and inputs (--resume alone reuses the recorded --set/--config),"
    .. " or pass --accept-changed-playbook to continue with this one (journaled)\n",
    journal_path, rec.hash, fp.hash, #keys > 0 and table.concat(keys, ", ") or "?", inputs_text(rec.sets, rec.config),
    inputs_text(sets, config), masked and "  (the journal masks secrets: give those --set values again)\n" or ""))
  return nil, 2
end

-- Everything a run holds, released by close_all whatever happened.
local function close_all(res)
  if res.ctl then pcall(res.ctl.close, res.ctl) end
  assemble.close(res.sources)
  if res.sinks then res.sinks:drain(10) end -- queued notifications get 10 s, their events journaled
  -- a start refused before its first event leaves no journal behind to block the next run
  if res.writer then pcall(res.started and res.writer.close or res.writer.discard, res.writer) end
  if res.lock then pcall(res.lock.release, res.lock) end
  if res.sinks then res.sinks:close(res.linger, function(msg) io.stderr:write("rollout: ", msg, "\n") end) end
end

-- The run itself, once the lock is held. Returns the exit code.
local function run_locked(res, pb, opts, pos, dir)
  local writer, resume, events = open_journal(dir, pb, opts)
  if not writer then return resume end
  res.writer = writer
  local inputs, change = { sets = opts.set or {}, config = opts.config }, nil
  if opts.resume then
    local again, how, ch = resume_playbook(pos[1], pb, opts, events, writer.path)
    if not again then return how end
    pb, inputs, change = again, how, ch
  end
  for _, w in ipairs(pb.warnings or {}) do io.stderr:write("warning: ", playbook.format_error(w), "\n") end
  opts.observe = (opts.observe or pb.observe) and true or nil
  local fp = fingerprint.of(pb, { observe = opts.observe })

  local ctl
  -- the events' way out (docs/observability.md): journal first, then the printer, the
  -- control socket, /metrics and notifications
  local sinks, serr = assemble.sinks(pb, { who = who(), metrics_listen = opts.metrics_listen,
    journal = function(after) return writer:sink(after) end,
    before = { output.printer({ json = opts.json, verbose = opts.verbose }), function(ev) if ctl then ctl:record(ev) end end } })
  if not sinks then return fail(serr) end
  res.sinks = sinks
  if sinks.metrics_url then io.stderr:write("rollout: metrics ", sinks.metrics_url, "\n") end
  for _, w in ipairs(sinks.warnings) do io.stderr:write("warning: ", w, "\n") end
  local e
  local router, sources = assemble.build(pb, function(kind, fields) if e then e:emit(kind, fields) end end)
  if not router then return fail(sources) end
  res.sources = sources
  e = engine.new(pb, { router = router, sources = sources, emit = sinks.emit, interactive = true, who = who(),
    resume = resume, observe = opts.observe })
  res.engine = e
  sinks:bind(e)

  local socket
  if not opts.no_control then
    socket = control.socket_path(opts.run_dir or control.default_run_dir(), pb.service)
    local cerr
    ctl, cerr = control.serve(e, { path = socket, journal = writer.path })
    if not ctl then return fail("control socket: " .. tostring(cerr)) end
    res.ctl = ctl
  end
  if change then
    local cok, cerr = writer:append({ event = "playbook_changed", ts = rollout.time(), who = who(), from = change.from,
      to = change.to, keys = change.keys, accepted = "--accept-changed-playbook" })
    if not cok then return fail("the journal cannot be written, nothing was done: " .. tostring(cerr)) end
    io.stderr:write("warning: resuming with a changed playbook (", table.concat(change.keys, ", "), "), as asked\n")
  end
  local rok, rerr = writer:append({ event = "engine_started", ts = rollout.time(), pid = fs.getpid(),
    who = who(), playbook = pb.file, journal = writer.path, socket = socket, resume = resume and true or nil,
    playbook_hash = fp.hash, playbook_keys = fp.keys, sets = setmetatable(inputs.sets, json.array_mt),
    config = inputs.config and (fs.realpath(inputs.config) or inputs.config), on_interrupt = opts.on_interrupt,
    observe = opts.observe })
  if not rok then return fail("the journal cannot be written, nothing was done: " .. tostring(rerr)) end
  res.started = true
  io.stderr:write("rollout: journal ", writer.path, "\n")
  if socket then
    io.stderr:write("rollout: control socket ", socket, " (rollout ctl ", socket, " status | rollout attach ", socket, ")\n")
  end

  local interrupted
  local watcher = rollout.spawn(function()
    local sig = rollout.wait_signal("INT", "TERM")
    interrupted = sig
    if opts.on_interrupt == "pause" then
      local grace = sig == "INT" and 5 or nil
      if e:stop("signal:" .. sig, "SIG" .. sig, { grace = grace }) and grace then
        io.stderr:write("rollout: SIGINT: pausing; press Ctrl-C again within 5 s to roll back instead\n")
      end
      local deadline = rollout.now() + (grace or 0)
      while true do
        local again = rollout.wait_signal("INT", "TERM")
        if again == "INT" and grace and rollout.now() <= deadline and not e.outcome then
          e:interrupt({ action = "rollback", reason = "manual", detail = "second SIGINT", who = "SIGINT" })
          io.stderr:write("rollout: second SIGINT: rolling back\n")
        else
          io.stderr:write("rollout: SIG", again, ": already stopping\n")
        end
      end
    end
    if e:stop("signal:" .. sig, "SIG" .. sig, { rollback = true }) then
      io.stderr:write("rollout: SIG", sig, ": rolling back to the baseline before exiting",
        " (--on-interrupt=pause keeps the canary's weight)\n")
    end
    while true do
      local again = rollout.wait_signal("INT", "TERM")
      io.stderr:write("rollout: SIG", again, ": already stopping; the rollback finishes first\n")
    end
  end)
  local task = rollout.spawn(function() return e:run_protected() end)
  local outcome = task:wait()
  watcher:cancel()
  if interrupted and outcome.outcome == "paused" then
    io.stderr:write(string.format("rollout: paused by SIG%s with traffic at baseline %s%% / canary %s%% (as journaled); "
      .. "`rollout run %s --resume` continues\n", interrupted, tostring(e.weights.baseline), tostring(e.weights.canary),
      pos[1]))
  end
  if outcome.outcome == "paused" and tostring(outcome.reason):match("^point_of_no_return") then
    io.stderr:write(string.format("rollout: not rolled back: %s had started (the point of no return: the baseline is being"
      .. " removed); it ran to its end and the canary keeps 100%%; `rollout run %s --resume` finishes the promotion\n",
      tostring(outcome.reason):match("^point_of_no_return: (.*)$") or "finalize", pos[1]))
  end
  output.summary(outcome, { json = opts.json })
  res.linger = opts.linger -- close_all keeps /metrics up that long, the journal closed and the lock released
  return engine.EXIT[outcome.outcome] or 3
end

function M.main(argv)
  redact.guard_stderr() -- what run says on stderr is redacted too
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("run", pos, M.usage) end
  if #pos ~= 1 then return args.usage_error("run", "expected one playbook", M.usage) end
  opts.fresh = opts.fresh or opts.restart
  if opts.resume and opts.fresh then return args.usage_error("run", "--resume and --fresh exclude each other", M.usage) end
  opts.on_interrupt = opts.on_interrupt or "rollback"
  if opts.on_interrupt ~= "rollback" and opts.on_interrupt ~= "pause" then
    return args.usage_error("run", "--on-interrupt: expected rollback or pause, got '" .. opts.on_interrupt .. "'", M.usage)
  end
  if opts.supervised and (opts.resume or opts.fresh) then
    return args.usage_error("run", "--supervised decides between resuming and starting: no --resume or --fresh with it", M.usage)
  end
  if opts.accept_changed_playbook and not (opts.resume or opts.supervised) then
    return args.usage_error("run", "--accept-changed-playbook goes with --resume", M.usage)
  end
  opts.linger = metrics_endpoint.LINGER
  if opts.metrics_linger then
    local d, lerr = units.parse("duration", opts.metrics_linger)
    if not d or d < 0 then return args.usage_error("run", "--metrics-linger: " .. tostring(lerr or "must not be negative"), M.usage) end
    opts.linger = d
  end
  local pb = load(pos[1], opts.set, opts.config)
  if not pb then return 2 end

  -- one engine per rollout, and a record before anything acts
  local dir = opts.journal or journal.default_dir(pb.service)
  local ok, derr = journal.mkdirs(dir)
  if not ok then return fail("journal directory: " .. tostring(derr)) end
  local lock, lerr, holder = journal.lock(dir)
  if not lock then
    if holder then return fail(string.format("another engine (pid %d) is running this rollout (%s)", holder, lerr)) end
    return fail("lock: " .. tostring(lerr))
  end
  local res = { lock = lock }
  local rok, code = xpcall(run_locked, debug.traceback, res, pb, opts, pos, dir)
  if not rok then
    -- an error outside the engine's protected run: journal it, and an outcome if none was written
    local msg = redact.text(tostring(code))
    io.stderr:write("rollout run: internal error: ", msg, "\n")
    if res.writer and res.started and not (res.engine and res.engine.outcome) then
      res.writer:append({ event = "engine_error", ts = rollout.time(), error = msg:match("^[^\n]*"), traceback = msg })
      res.writer:append({ event = "outcome", ts = rollout.time(), outcome = "failed", reason = "error:internal" })
    end
    code = 3
  end
  close_all(res) -- events the journal could not write go to stderr, loudly (writer.lost)
  if res.writer and res.writer.lost then return journal.EXIT_INCOMPLETE end
  return code
end

return M

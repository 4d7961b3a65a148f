-- rollout.journal: every rollout's record, and the way back after a crash.
--
-- A journal is a file of JSON lines, one engine event per line, in the order they happened:
--   {"event":"weight_confirmed","seq":12,"t":3.21,"ts":1732680000.5,"stage":"Initial",
--    "baseline":95,"canary":5}
-- `event` is the engine's event kind, `t` seconds since the rollout started, `ts` epoch
-- seconds, `seq` the line's number in the file (1, 2, ...), `stage` the stage's name; the
-- other fields are the event's own (engine.lua). Each append is written whole and fsync'd
-- before the sink returns, and the engine reports an effect done only after its event came
-- back from the sink, so the journal is never behind what anybody was told.
--
-- Files: DIR/<UTC start time>-<pid>.jsonl, one per rollout, DIR/lock while an engine runs.
-- The newest file is the current rollout; it is unfinished until an `outcome` event with
-- promoted, rolled_back, aborted or failed (`paused` is not an end: SIGTERM pauses), or an
-- `abandoned` event (run --fresh started over).
--
-- Reading: a crash in the middle of a write leaves at most an unterminated last line; it
-- is reported (info.torn) and ignored, never parsed. A complete line that does not parse is
-- corruption, and read() refuses the file rather than guess; so is a line whose seq does not
-- follow the one before (a duplicated, missing or reordered line). Opening a journal to append
-- cuts a torn tail off first, and records that it did (`journal_repaired`).
--
-- Writing: writer:append(ev) -> true | false, err. A failed append (disk full, read-only)
-- keeps the event in a backlog that every later append retries first, in order; the engine
-- treats false as "not recorded" and does not act until a retry succeeds. While a backlog
-- waits, the sink also retries it every RETRY seconds on its own (writer:flush()), so the
-- events reach the disk as soon as space returns, even when the engine has nothing more to
-- say; the engine hears that the journal is writable again (journal_error cleared).
-- writer:close() tries once more; events still not written are then printed to stderr as
-- JSON lines under a loud warning, and writer.lost says how many (`rollout run` exits with
-- EXIT_INCOMPLETE).
--
-- Error policy: bad arguments raise; file-system failures return nil/false, err.
local rollout = require("rollout")
local core = require("rollout.journal.core")
local redact = require("rollout.redact")
local json = require("rollout.json")
local fs = require("rollout.fs")

local M = {}

--- Outcomes that end a rollout for good (a journal ending in one is finished): rollout.engine's
--- OUTCOMES but paused (spec/outcomes_spec.lua holds them to it).
M.TERMINAL = { promoted = true, rolled_back = true, aborted = true, failed = true }
M.RETRY = 1 -- seconds between retries of a backlog
M.EXIT_INCOMPLETE = 4 -- `rollout run`'s exit code when events could not be journaled at all

-- ---- paths --------------------------------------------------------------------------

local function safe_name(s)
  return (tostring(s or "rollout"):gsub("[^%w%._%-]", "_"))
end

--- The default journal directory of a service: ./.rollout/journal/<service>.
function M.default_dir(service)
  return ".rollout/journal/" .. safe_name(service)
end

--- mkdir -p with mode 0700 for each created part.
function M.mkdirs(dir)
  local ok, err = fs.mkdir(dir, 448, true)
  if not ok then return nil, err end
  return true
end

--- Journal files in dir, oldest first (names sort by start time).
function M.list(dir)
  local names = fs.list(dir)
  if not names then return {} end
  local out = {}
  for _, n in ipairs(names) do
    if n:match("%.jsonl$") then out[#out + 1] = dir .. "/" .. n end
  end
  return out
end

--- A fresh journal path in dir.
function M.new_path(dir)
  local now = rollout.time()
  local frac = math.floor((now % 1) * 1000)
  return string.format("%s/%s%03d-%d.jsonl", dir, os.date("!%Y%m%dT%H%M%S.", math.floor(now)), frac, fs.getpid())
end

-- ---- reading --------------------------------------------------------------------------

--- read(path) -> events, info | nil, err
--- info = {path=, lines=, size=, valid=, torn = bytes or nil}
function M.read(path)
  local lines, info = core.read(path)
  if not lines then return nil, info end
  local events = {}
  local last_seq
  for i, line in ipairs(lines) do
    if line:find("%S") then
      local ev, err = json.decode(line)
      if type(ev) ~= "table" or type(ev.event) ~= "string" then
        return nil, string.format("%s:%d: corrupt journal line (%s): %s", path, i,
          err or "not an event", line:sub(1, 80))
      end
      -- seq counts the lines: a line copied twice (or lines swapped) is corruption too, and a
      -- resume must not act on it
      if ev.seq ~= nil then
        if math.type(ev.seq) ~= "integer" or (last_seq and ev.seq ~= last_seq + 1) then
          return nil, string.format("%s:%d: corrupt journal: seq %s after seq %s (a duplicated, missing or reordered line): %s",
            path, i, tostring(ev.seq), tostring(last_seq), line:sub(1, 80))
        end
        last_seq = ev.seq
      end
      events[#events + 1] = ev
    end
  end
  info.path, info.lines = path, #lines
  return events, info
end

--- summary(events) -> {service=, playbook=, started=ts, outcome=, finished=bool, stage=,
--- weights = last confirmed, events = n, observe = true for an observe-only rollout}
function M.summary(events)
  local s = { events = #events, finished = false }
  for _, ev in ipairs(events) do
    if ev.event == "rollout_started" then
      s.service, s.playbook, s.started, s.who = ev.service, ev.playbook, ev.ts, ev.who
      s.baseline, s.canary = ev.baseline, ev.canary
      s.observe = ev.observe and true or nil -- observe-only: it moved no traffic
      s.outcome, s.finished = nil, false
    elseif ev.event == "weight_confirmed" then
      s.weights = { baseline = ev.baseline, canary = ev.canary }
    elseif ev.event == "outcome" then
      s.outcome, s.reason = ev.outcome, ev.reason
      s.finished = M.TERMINAL[ev.outcome] or false
    elseif ev.event == "abandoned" then
      s.finished, s.outcome = true, "abandoned"
    elseif ev.event == "rollout_resumed" then
      s.outcome, s.finished = nil, false
    end
    if ev.stage then s.stage = ev.stage end
    s.last_ts = ev.ts or s.last_ts
  end
  return s
end

--- latest(dir) -> path, events, info | nil  (the newest journal in dir)
--- A journal with no event at all (a start refused before its first event, by an older
--- version) says nothing and is passed over.
function M.latest(dir)
  local list = M.list(dir)
  for i = #list, 1, -1 do
    local path = list[i]
    local events, info = M.read(path)
    if not events then return nil, info end
    if #events > 0 or info.torn then return path, events, info end
  end
  return nil
end

--- The `resume` table engine.run_resumed expects, from a journal's events:
---   {stage_index=, stage_confirmed=bool, held=seconds held (pauses excluded),
---    elapsed=, baseline_snapshot=, phase = "stage"|"rolling_back"|"promoting",
---    reason=, last_confirmed = {baseline=, canary=}, paused = reason|nil,
---    started_ts = the wall clock of its rollout_started, deployment_id = the one it gave}
--- or nil, why: "finished: <outcome>", or "start" when no stage was entered yet (the
--- rollout starts over, pre-flight included).
function M.replay(events)
  local r = { phase = "start", held = 0 }
  local stage_start, awaiting, paused_at, paused_total
  local last_ts, last_t = nil, 0
  local finished
  for _, ev in ipairs(events) do
    local k = ev.event
    if k == "rollout_started" then
      r = { phase = "start", held = 0, started_ts = ev.ts, deployment_id = ev.deployment_id }
      stage_start, awaiting, paused_at, paused_total, finished = nil, false, nil, 0, nil
    elseif k == "rollout_resumed" then
      paused_at, finished = nil, nil
    elseif k == "baseline_captured" then
      r.baseline_snapshot = ev.baseline
    elseif k == "stage_entered" then
      r.phase, r.stage_index, r.stage_confirmed = "stage", ev.index, false
      stage_start, awaiting, paused_at, paused_total, r.paused = nil, true, nil, 0, nil
    elseif k == "stage_resumed" then
      r.phase, r.stage_index, r.stage_confirmed = "stage", ev.index, true
      stage_start, awaiting, paused_at, paused_total = (ev.ts or 0) - (ev.held or 0), false, nil, 0
    elseif k == "stage_retry" then
      stage_start, paused_total = ev.ts, 0
    elseif k == "weight_confirmed" then
      r.last_confirmed = { baseline = ev.baseline, canary = ev.canary }
      if awaiting and r.phase == "stage" then
        r.stage_confirmed, stage_start, awaiting = true, ev.ts, false
      end
    elseif k == "paused" then
      paused_at = paused_at or ev.ts
      r.paused = ev.reason
    elseif k == "resumed" then
      if paused_at and ev.ts then paused_total = paused_total + (ev.ts - paused_at) end
      paused_at, r.paused = nil, nil
    elseif k == "rollback_started" then
      r.phase, r.reason = "rolling_back", ev.reason
    elseif k == "manual_rollback" then
      -- `rollout playbooks/rollback.lua` took over: no resume re-applies canary weights
      r.phase, r.reason, r.manual = "rolling_back", "manual", true
    elseif k == "promoting" or k == "promote_full" then
      r.phase = "promoting"
    elseif k == "outcome" then
      if M.TERMINAL[ev.outcome] then finished = ev.outcome end
    elseif k == "abandoned" then
      finished = "abandoned"
    end
    if ev.ts then last_ts = ev.ts end
    if ev.t then last_t = ev.t end
  end
  if finished then return nil, "finished: " .. finished end
  if r.phase == "start" then return nil, "start" end
  if stage_start and last_ts then
    local stop = paused_at or last_ts
    r.held = math.max(0, stop - stage_start - paused_total)
  end
  r.elapsed = last_t
  r.last_ts = last_ts -- when the last event was written: rollout_resumed says how long no engine ran
  -- a pause by a signal ended the last run; resuming is the operator's answer to it
  if r.paused and (tostring(r.paused):match("^signal") or tostring(r.paused):match("^journal")) then r.paused = nil end
  return r
end

--- The resolved playbook the rollout runs with, as the last `engine_started` (or an accepted
--- `playbook_changed`) recorded it: {hash=, keys = {top-level key = hash}, sets = {...},
--- config = path|nil, playbook = path, observe = true when the run was observe-only} or nil
--- (a journal written before it was recorded).
function M.resolved(events)
  local rec
  for _, ev in ipairs(events) do
    if (ev.event == "engine_started" or ev.event == "playbook_changed") and ev.playbook_hash then
      rec = { hash = ev.playbook_hash, keys = ev.playbook_keys or {}, sets = ev.sets or {}, config = ev.config,
        playbook = ev.playbook, observe = rec and rec.observe }
      if ev.event == "engine_started" then rec.observe = ev.observe and true or nil end
    end
  end
  return rec
end

-- ---- writing --------------------------------------------------------------------------

-- Anything json.encode refuses becomes something it takes: functions, userdata and threads
-- their tostring, cycles "<cycle>", a table with other keys than 1..n an object whose keys
-- are strings.
local function clean(v, seen)
  local t = type(v)
  if t == "table" then
    if v == json.null then return v end
    seen = seen or {}
    if seen[v] then return "<cycle>" end
    seen[v] = true
    local n, count, o = #v, 0, {}
    for _ in pairs(v) do count = count + 1 end
    if count == n and (n > 0 or getmetatable(v) == json.array_mt) then
      for i = 1, n do o[i] = clean(v[i], seen) end
      setmetatable(o, json.array_mt)
    else
      for k, x in pairs(v) do o[type(k) == "string" and k or tostring(k)] = clean(x, seen) end
    end
    seen[v] = nil
    return o
  elseif t == "function" or t == "thread" or (t == "userdata" and v ~= json.null) then
    return tostring(v)
  elseif t == "string" or t == "number" or t == "boolean" or v == nil then
    return v
  end
  return tostring(v)
end
M.clean = clean

local function encode(ev)
  ev = redact.value(ev) -- secrets never reach the disk or the control socket
  local ok, line = pcall(json.encode, ev, { sort = true, non_finite = "null", invalid_utf8 = "replace" })
  if ok then return line end
  return json.encode(clean(ev), { sort = true, non_finite = "null", invalid_utf8 = "replace" })
end
M.encode = encode

local W = {}
W.__index = W

--- open(path) -> writer | nil, err. An existing journal is appended to (after a torn tail,
--- if any, is cut off and the cut recorded); seq continues its numbering.
function M.open(path)
  local events, info
  local st = fs.stat(path)
  if st and st.type == "file" then
    local lines, rinfo = core.read(path)
    if not lines then return nil, rinfo end
    info = rinfo
    events = #lines
  end
  local f, err = core.open(path)
  if not f then return nil, err end
  local self = setmetatable({ file = f, path = path, seq = events or 0, backlog = {}, created = not st }, W)
  if info and info.torn then
    local ok, terr = f:truncate(info.valid)
    if not ok then f:close(); return nil, terr end
    local rok, rerr = self:append({ event = "journal_repaired", torn_bytes = #info.torn, ts = rollout.time(),
      detail = "an unterminated last line (a write cut short by a crash) was removed" })
    if not rok then f:close(); return nil, rerr end
  end
  return self
end

--- append(ev) -> true | false, err. Writes the backlog first; on failure ev joins it.
function W:append(ev)
  if not self.file then return false, self.path .. ": journal is closed" end
  local copy = {}
  for k, v in pairs(ev) do copy[k] = v end
  copy.seq = self.seq + #self.backlog + 1
  self.backlog[#self.backlog + 1] = encode(copy) .. "\n"
  return self:flush()
end

--- flush() -> true | false, err: write the backlog (nothing to do is success).
function W:flush()
  if #self.backlog == 0 then return true end
  if not self.file then return false, self.path .. ": journal is closed" end
  local ok, err = self.file:append(table.concat(self.backlog))
  if not ok then
    self.error = err
    return false, err
  end
  self.seq = self.seq + #self.backlog
  self.backlog = {}
  self.error = nil
  return true
end

--- The number of events waiting to be written (a disk that filled up).
function W:pending() return #self.backlog end

--- close(): a last try at the backlog; what is still unwritten goes to stderr as JSON lines
--- under a loud warning, and self.lost counts it.
function W:close()
  if self.retrier then self.retrier:cancel(); self.retrier = nil end
  if self.file and #self.backlog > 0 then self:flush() end
  if #self.backlog > 0 then
    self.lost = #self.backlog
    io.stderr:write(string.format("rollout: !!! JOURNAL INCOMPLETE: %d event%s could not be written to %s (%s).\n"
      .. "rollout: !!! They follow as JSON lines; append them to the journal by hand once it is writable:\n",
      self.lost, self.lost == 1 and "" or "s", self.path, tostring(self.error or "journal closed")))
    io.stderr:write(table.concat(self.backlog))
    io.stderr:write("rollout: !!! end of the unwritten events\n")
    self.backlog = {}
  end
  if self.file then self.file:close() end
  self.file = nil
end

--- discard(): close; a journal this writer created and never wrote to is removed (a start
--- that was refused leaves nothing behind to block the next run).
function W:discard()
  local empty = self.created and self.seq == 0 -- nothing of it reached the disk
  self.backlog = {}
  if self.file then self.file:close() end
  self.file = nil
  if empty then os.remove(self.path) end
end

-- While a backlog waits: retry it every RETRY s; once written, tell the engine.
function W:start_retry(engine)
  if self.retrier then return end
  self.retrier = rollout.spawn(function()
    while self.file and #self.backlog > 0 do
      rollout.sleep(M.RETRY)
      local ok = self:flush()
      if ok then
        if self.warned then
          io.stderr:write("rollout: journal writable again (", self.path, "): the unwritten events are recorded\n")
          self.warned = false
        end
        if engine and engine.journal_error then engine.journal_error = nil end
      end
    end
    self.retrier = nil
  end)
end

--- sink(after) -> emit(ev, engine): journal first, then `after(ev, engine)` (the printer).
--- Returns what append returned, so the engine knows whether the event is on disk. A
--- failure is also said on stderr, once per failing streak.
function W:sink(after)
  return function(ev, engine)
    local ok, err = self:append(ev)
    if after then after(ev, engine) end
    if not ok then
      if not self.warned then
        io.stderr:write("rollout: JOURNAL UNWRITABLE (", tostring(err), "): the rollout pauses and takes no action",
          " until an event is recorded again (free the disk, then `resume` or `retry`)\n")
        self.warned = true
      end
      self:start_retry(engine)
      return false, err
    end
    if self.warned then
      io.stderr:write("rollout: journal writable again (", self.path, ")\n")
      self.warned = false
    end
    return true
  end
end

-- ---- the lock -----------------------------------------------------------------------

--- lock(dir) -> lock | nil, err, holder_pid: one engine per journal directory.
function M.lock(dir)
  return core.lock(dir .. "/lock")
end

return M

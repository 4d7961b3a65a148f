-- rollout.backtest: re-decide past rollouts under another playbook, from their journals
-- alone (no metrics store needed): which decisions a threshold or trigger change would
-- have changed, and when.
--
-- What a journal holds (docs/events.md): every evaluation tick's signals over the trigger
-- window (`evaluation`: requests, errors, error_rate, p50/p95/p99, health with health_ok and
-- health_total, gauges, restarts, and the window), every gate's signals over the gate
-- window with each check's evidence (`gate`), the baseline snapshot, alerts that fired.
-- Re-deciding walks those events in order under the new playbook:
--   evaluation   the new playbook's condition, restarts and check triggers on the recorded
--                values, with their `for` durations; a source_error resets them, as the
--                engine does. Alert triggers fire where the journal's alert trigger of the
--                same name fired.
--   gate         the new stage (same name, else same index) decides on the recorded gate
--                window: min_samples, min_rps, every static threshold (proportions and
--                quantiles with evidence: rollout.analysis.proportion_check on the recorded
--                counts; a quantile from its recorded evidence, or its value), its max_hold.
--                A judge verdict is not recomputed: it is kept where the new stage still
--                runs the judge (the raw samples are not journaled).
-- The first rollback (trigger, gate, or an inconclusive gate under policy.inconclusive =
-- "rollback") or pause is the new decision. A gate the new playbook extends where the
-- recorded one passed makes the rollout "undecided" from there (no recorded data). Where the recorded rollout ended on a signal
-- decision (trigger:, gate:, inconclusive:) the new playbook does not reproduce, the new
-- outcome is "undecided": the journal has no data past the old decision. Other endings
-- (an operator, a pre-flight check, a hook, the router) stay as they were.
-- Limits: times are the recorded ones (a stage the new playbook passes earlier is not
-- shifted: its remaining recorded ticks are skipped, the next stage's follow); a trigger
-- whose window differs from the recorded one is judged on the recorded window's values,
-- and the result says so (`notes`).
--
-- Error policy: bad input (unreadable journal) returns nil, err; the playbook was validated
-- by its loader.
local journal = require("rollout.journal")
local fs = require("rollout.fs")
local playbook = require("rollout.playbook")
local analysis = require("rollout.analysis")
local proportion = require("rollout.proportion")
local compare = require("rollout.engine.triggers").compare

local M = {}

local GATE_ORDER = { "error_rate", "p99", "p95", "p50", "health", "cpu", "memory", "disk" }
local SIGNAL_DECISION = { trigger = true, gate = true, inconclusive = true }

--- files(dir) -> every *.jsonl under dir (recursively), sorted.
function M.files(dir)
  local out = {}
  local function walk(d)
    for _, n in ipairs(fs.list(d) or {}) do
      local p = d .. "/" .. n
      local st = fs.stat(p)
      if st and st.type == "dir" then walk(p)
      elseif n:match("%.jsonl$") then out[#out + 1] = p end
    end
  end
  walk(dir)
  table.sort(out)
  return out
end

local function stage_of(pb, name, index)
  for _, st in ipairs(pb.stages) do if st.name == name then return st end end
  return index and pb.stages[index] or nil
end

local function limit_of(pb, t, ev, snapshot)
  if not t.relative then return t.value end
  local b = pb.policy.relative_to == "live" and ev.baseline and ev.baseline[t.signal] or nil
  if b == nil then b = snapshot and snapshot[t.signal] end
  if b == nil then return nil end
  if t.relative == "factor" then return b * t.factor end
  return b + t.plus
end

-- A quantile's recorded evidence (rollout.analysis.quantile_check) under a new limit.
local function quantile_from_evidence(pb, t, e, v, limit)
  if not (e and e.n) then return nil end
  local q = analysis.QUANTILES[t.signal]
  local n_min = proportion.min_trials(1 - q, "max", { alpha = proportion.alpha(pb.policy.confidence, 1),
    power = pb.policy.power, detect = pb.policy.detect })
  if e.at and e.at > limit then return "fail" end
  if e.n >= n_min or v <= limit then return "pass" end
  return "short"
end

--- gate(pb, stage, ev, snapshot, old_checks) -> result ("pass" | "fail" | "extend" |
--- "inconclusive"), why: the new stage's gate on a recorded `gate` event.
function M.gate(pb, stage, ev, snapshot)
  local short, failed, nodata = {}, nil, nil
  local old = {}
  for _, c in ipairs(ev.checks or {}) do old[c.signal] = c end
  if ev.error or not ev.canary then
    short[#short + 1] = "source_error"
  else
    if (ev.samples or 0) < stage.min_samples then short[#short + 1] = "min_samples" end
    local th = playbook.stage_thresholds(pb, stage)
    if th.min_rps and (ev.total_rps or 0) < th.min_rps.value then short[#short + 1] = "min_rps" end
    local held = ev.held or 0
    local look = { math.max(1, math.floor((held - stage.hold) / pb.interval + 0.5) + 1),
      math.floor((stage.max_hold - stage.hold) / pb.interval + 1e-9) + 1 }
    for _, name in ipairs(GATE_ORDER) do
      local t = th[name]
      if t and not (old[name] and old[name].status == "not_measured") then
        local v, limit = ev.canary[t.signal], limit_of(pb, t, ev, snapshot)
        if v == nil or limit == nil then
          nodata = nodata or name
        else
          local st
          if analysis.QUANTILES[t.signal] then
            st = quantile_from_evidence(pb, t, old[name] and old[name].evidence, v, limit)
          else
            st = analysis.proportion_check(pb, t, ev.canary, limit, look)
          end
          if st == nil then
            st = ((t.dir == "max" and v <= limit) or (t.dir == "min" and v >= limit)) and "pass" or "fail"
          end
          if st == "short" then short[#short + 1] = "evidence:" .. name
          elseif st == "fail" then failed = failed or name end
        end
      end
    end
  end
  if nodata then short[#short + 1] = "no_data:" .. nodata end
  -- the judge's verdict as recorded, where the new stage still runs it
  if #short == 0 and not failed and ev.why and analysis.enabled(pb, stage) then
    local w = tostring(ev.why)
    if ev.result == "fail" and (w == "judge" or w == "ab_test") then failed = w
    elseif w:match("^judge_") or w:match("^ab_test_") then short[1] = w end
  end
  if failed then return "fail", failed end
  if #short > 0 then
    if (ev.held or 0) + pb.interval <= stage.max_hold + 1e-9 then return "extend", table.concat(short, ",") end
    return "inconclusive", short[1]
  end
  return "pass"
end

--- redecide(pb, events) -> {old = {outcome=, reason=, at=, stage=}, new = {...}, notes = {...}}
function M.redecide(pb, events)
  local old, new = nil, nil
  local notes, noted = {}, {}
  local function note(s) if not noted[s] then noted[s] = true; notes[#notes + 1] = s end end
  local trig = {}
  for _, tr in ipairs(pb.triggers) do trig[tr.name] = {} end
  local snapshot
  local passed = {}
  local last_t, last_stage, stage_index = 0, nil, 0
  local stage_names = {}
  local decided_at -- when the recorded rollout decided (rollback_started, paused)
  local extending -- the new gate extends a stage whose recorded gates have passed: no data
  local function decide(outcome, reason, t, stage)
    if not new then new = { outcome = outcome, reason = reason, at = t, stage = stage } end
  end
  for _, ev in ipairs(events) do
    if ev.t then last_t = ev.t end
    if ev.stage then last_stage = ev.stage end
    if new then
      if ev.event == "rollback_started" or ev.event == "paused" then decided_at = ev.t end
      if ev.event == "outcome" then
        old = { outcome = ev.outcome, reason = ev.reason, at = ev.outcome ~= "promoted" and decided_at or ev.at or ev.t,
          stage = ev.stage }
      end
      goto continue
    end
    if ev.event == "rollout_started" then
      old, snapshot, passed, stage_index = nil, nil, {}, 0
    elseif ev.event == "baseline_captured" then
      snapshot = ev.baseline
    elseif ev.event == "stage_entered" then
      if extending and extending.stage ~= ev.stage then
        decide("undecided", "hold extended (" .. extending.why .. ") past the recorded data", extending.t, extending.stage)
        goto continue
      end
      stage_index = ev.index or (stage_index + 1)
      stage_names[ev.stage or ""] = stage_index
    elseif ev.event == "source_error" then
      for _, st in pairs(trig) do st.since = nil end
    elseif ev.event == "evaluation" and not (ev.stage and passed[ev.stage]) then
      if ev.window and math.abs(ev.window - pb.trigger_window) > 1e-9 then
        note(string.format("triggers judged on the recorded %gs window (the playbook's is %gs)", ev.window, pb.trigger_window))
      end
      local sig = { baseline = ev.baseline or {}, canary = ev.canary or {} }
      for _, tr in ipairs(pb.triggers) do
        local st = trig[tr.name]
        local cond
        if tr.kind == "condition" then
          local v = sig[tr.condition.version][tr.condition.signal]
          if v ~= nil then cond = compare(v, tr.condition.op, tr.condition.value) end
        elseif tr.kind == "restarts" then
          local n = sig.canary.restarts
          if n ~= nil then cond = n >= tr.restarts end
        elseif tr.kind == "check" then
          local ok, res = pcall(tr.check, sig, nil)
          if ok and res ~= nil then cond = res and true or false end
        end
        if tr.kind ~= "alert" and tr.kind ~= "condition" and tr.window ~= pb.trigger_window then
          note("trigger " .. tr.name .. ": its own window is judged on the recorded trigger window")
        end
        if cond then
          st.since = st.since or ev.t
          -- ev.t is when the event was written, a little after its evaluation's grid time:
          -- half an interval of tolerance counts the same evaluations the engine counted
          if ev.t - st.since >= tr.duration - pb.interval / 2 then decide("rolled_back", "trigger:" .. tr.name, ev.t, ev.stage) end
        else
          st.since = nil -- false, or no data: the engine resets a pending trigger on both
        end
      end
    elseif ev.event == "trigger_fired" then
      for _, tr in ipairs(pb.triggers) do
        if tr.kind == "alert" and tr.name == ev.trigger then decide("rolled_back", "trigger:" .. tr.name, ev.t, ev.stage) end
      end
    elseif ev.event == "gate" and not passed[ev.stage] then
      local stage = stage_of(pb, ev.stage, stage_names[ev.stage])
      if not stage then
        note("stage " .. tostring(ev.stage) .. " is not in the playbook: its gate is not re-decided")
      else
        local r, why = M.gate(pb, stage, ev, snapshot)
        if r == "fail" then decide("rolled_back", "gate:" .. why, ev.t, ev.stage)
        elseif r == "inconclusive" then
          decide(pb.policy.inconclusive == "rollback" and "rolled_back" or "paused", "inconclusive:" .. why, ev.t, ev.stage)
        elseif r == "pass" then passed[ev.stage] = true; extending = nil
        else extending = { stage = ev.stage, why = why, t = ev.t } end
      end
    elseif ev.event == "rollback_started" or ev.event == "paused" then
      decided_at = ev.t
    elseif ev.event == "outcome" then
      old = { outcome = ev.outcome, reason = ev.reason, at = ev.outcome ~= "promoted" and decided_at or ev.at or ev.t,
        stage = ev.stage }
      if extending and (ev.outcome == "promoted") then
        decide("undecided", "hold extended (" .. extending.why .. ") past the recorded data", extending.t, extending.stage)
      end
    end
    ::continue::
  end
  old = old or { outcome = "unfinished", at = last_t, stage = last_stage }
  if not new then
    local kind = type(old.reason) == "string" and old.reason:match("^(%a+):")
    if old.outcome == "promoted" or (old.reason and not SIGNAL_DECISION[kind]) or old.outcome == "unfinished"
      or old.outcome == "aborted" or old.outcome == "failed" then
      new = { outcome = old.outcome, reason = old.reason, at = old.at, stage = old.stage }
    else
      new = { outcome = "undecided", reason = "no data past " .. string.format("%.1fs", old.at or last_t), at = old.at,
        stage = old.stage }
    end
  end
  return { old = old, new = new, notes = notes }
end

-- The same decision: outcome and reason, within one evaluation interval (a recorded
-- decision is journaled a moment after the evaluation that made it).
local function same(a, b, interval)
  return a.outcome == b.outcome and a.reason == b.reason
    and math.abs((a.at or 0) - (b.at or 0)) <= interval + 1e-9
end

--- run(pb, paths) -> rows {rollout=, file=, service=, started=, old=, new=, changed=, notes=} | nil, err
function M.run(pb, paths)
  local rows = {}
  for _, path in ipairs(paths) do
    local events, err = journal.read(path)
    if not events then return nil, err end
    local started
    for _, ev in ipairs(events) do if ev.event == "rollout_started" then started = ev; break end end
    if started then
      local r = M.redecide(pb, events)
      rows[#rows + 1] = { rollout = path:match("([^/]+)%.jsonl$"), file = path, service = started.service,
        started = started.ts, old = r.old, new = r.new, changed = not same(r.old, r.new, pb.interval), notes = r.notes }
    end
  end
  return rows
end

local function decision_text(d)
  local s = d.outcome
  if d.reason ~= nil then s = s .. " (" .. tostring(d.reason) .. ")" end
  return s
end

local function when_text(d)
  if not d.at then return "-" end
  local t = d.at
  local s = t >= 60 and string.format("%dm%04.1fs", math.floor(t / 60), t % 60) or string.format("%.1fs", t)
  return (d.stage and (d.stage .. " ") or "") .. s
end

--- table(rows, opts) -> text: the decisions that would change (all with opts.all).
function M.table(rows, opts)
  opts = opts or {}
  local lines = {}
  local shown = {}
  for _, r in ipairs(rows) do if r.changed or opts.all then shown[#shown + 1] = r end end
  local head = { "rollout", "service", "old decision", "new decision", "when (new)" }
  local cells = { head }
  for _, r in ipairs(shown) do
    cells[#cells + 1] = { r.rollout, tostring(r.service or "?"), decision_text(r.old) .. " at " .. when_text(r.old),
      decision_text(r.new), when_text(r.new) }
  end
  local w = {}
  for _, row in ipairs(cells) do for i, c in ipairs(row) do w[i] = math.max(w[i] or 0, #c) end end
  for _, row in ipairs(cells) do
    local parts = {}
    for i, c in ipairs(row) do parts[i] = c .. string.rep(" ", w[i] - #c) end
    lines[#lines + 1] = table.concat(parts, "  "):gsub("%s+$", "")
  end
  local changed = 0
  for _, r in ipairs(rows) do if r.changed then changed = changed + 1 end end
  lines[#lines + 1] = ""
  lines[#lines + 1] = string.format("%d of %d rollouts would be decided differently", changed, #rows)
  for _, r in ipairs(shown) do
    for _, n in ipairs(r.notes) do lines[#lines + 1] = "note: " .. r.rollout .. ": " .. n end
  end
  return table.concat(lines, "\n") .. "\n"
end

return M

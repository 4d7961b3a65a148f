-- rollout.output: how a rollout's events reach a person or a program.
-- Plain lines (one per decision, with the numbers behind it), or JSON lines with --json
-- (one object per event; the summary object last). Per-tick evaluations are shown only
-- in JSON and with --verbose: a person needs the decisions, a pipeline wants everything.
-- On a terminal (stdout a TTY, TERM not "dumb", NO_COLOR unset or empty, no --json) the
-- same decision lines scroll above a live progress view (rollout.progress);
-- ROLLOUT_PROGRESS=0 keeps plain lines, which have no colour and no cursor movement.
-- Error policy: it formats the events the engine writes; a kind without a line of its own
-- prints nothing (its name with --verbose). Every line and JSON object passes through
-- rollout.redact first. Nothing here returns nil, err or journals: the journal, not the
-- terminal, is the record, and a failed write to stdout is not checked.
local json = require("rollout.json")
local redact = require("rollout.redact") -- every line written passes through it
local term = require("rollout.term")
local analysis = require("rollout.analysis")
local progress_view = require("rollout.progress")

local M = {}

function M.clock(t)
  if t == nil then return "?" end
  local neg = t < 0
  t = math.floor(math.abs(t) * 10 + 0.5) / 10
  local h, m, s = math.floor(t / 3600), math.floor(t % 3600 / 60), t % 60
  local out
  if h > 0 then out = string.format("%dh%02dm%02ds", h, m, math.floor(s))
  elseif m > 0 then out = string.format("%dm%02ds", m, math.floor(s))
  else out = string.format("%.1fs", s) end
  return (neg and "-" or "") .. out
end

local function pct(v) return v and string.format("%.2f%%", v * 100) or "no data" end
-- latencies: whole ms from 10 ms up, one decimal below, two below 1 ms (0.12ms, never "0ms")
local function ms(v)
  if not v then return "no data" end
  local m = v * 1000
  if m == 0 or math.abs(m) >= 10 then return string.format("%.0fms", m) end
  if math.abs(m) >= 1 then return string.format("%.1fms", m) end
  return string.format("%.2fms", m)
end

local FORMAT = { error_rate = pct, health = pct, cpu = pct, memory = pct, disk = pct,
  p50 = ms, p95 = ms, p99 = ms, rps = function(v) return v and string.format("%.1f/s", v) or "no data" end }
M.FORMAT = FORMAT

function M.value(signal, v)
  local f = FORMAT[signal]
  if f then return f(v) end
  if type(v) == "number" then return string.format("%.4g", v) end
  return tostring(v)
end

local function gate_line(ev)
  local parts = {}
  for _, c in ipairs(ev.checks or {}) do
    if c.status == "not_measured" then
      parts[#parts + 1] = c.signal .. " not measured"
    else
      local op = c.dir == "max" and "<=" or ">="
      local mark = c.status == "pass" and "" or (" " .. c.status:upper())
      local e = c.evidence -- a proportion's counts and the trials it needs (rollout.proportion)
      local ev_text = ""
      if e and e.x then
        ev_text = string.format(" [%d/%d, needs %s]", math.floor(e.x + 0.5), math.floor(e.n + 0.5), e.n_min and tostring(e.n_min) or "-")
      elseif e then -- a quantile: its value at the confidence bound's level
        ev_text = string.format(" [q%.4g %s of %d, needs %s]", (e.q or 0) * 100, M.value(c.signal, e.at), e.n or 0,
          e.n_min and tostring(e.n_min) or "-")
      end
      parts[#parts + 1] = string.format("%s %s %s %s%s%s", c.signal, M.value(c.signal, c.value), op,
        M.value(c.signal, c.threshold), ev_text, mark)
    end
  end
  -- a Prometheus source counts with increase(), which extrapolates: 52.3 requests
  local function whole(n) return math.floor((n or 0) + 0.5) end
  if ev.samples then parts[#parts + 1] = string.format("samples %d/%d", whole(ev.samples), whole(ev.min_samples)) end
  if ev.total_rps then parts[#parts + 1] = string.format("rps %.1f/%.0f", ev.total_rps, ev.min_rps or 0) end
  return string.format("gate %s: %s%s  %s", ev.stage or "?", ev.result, ev.why and (" (" .. ev.why .. ")") or "",
    table.concat(parts, ", "))
end

-- "value 17.81%" as the trigger's signal reads (a number of its unit, an alert's name), or
-- nothing when the trigger has no value
local function trigger_value(e, sep)
  if e.value == nil then return "" end
  if type(e.value) == "number" then return "value " .. M.value(e.signal, e.value) .. sep end
  return "value " .. tostring(e.value) .. sep
end

local LINES = {
  judge = function(e) return analysis.line(e) end,
  rollout_started = function(e) return string.format("rollout %s: %s -> %s (%d stages)%s%s", e.service, e.baseline or "?", e.canary or "?", e.stages or 0,
    e.simulate and " [simulation]" or "", e.observe and " [observe-only]" or "") end,
  preflight_check = function(e) return string.format("preflight %-5s %s%s", e.status, e.check, e.detail and (": " .. tostring(e.detail)) or "") end,
  preflight_done = function(e)
    return string.format("preflight: %d passed, %d failed, %d skipped", e.passed, e.failed, e.skipped)
      .. (e.skipped_checks and (" (" .. table.concat(e.skipped_checks, ", ") .. ")") or "")
  end,
  baseline_captured = function(e) return string.format("baseline captured: error_rate %s, p99 %s, rps %s", pct(e.baseline.error_rate), ms(e.baseline.p99), M.value("rps", e.baseline.rps)) end,
  baseline_missing = function(e) return "baseline: " .. e.detail end,
  stage_entered = function(e) return string.format("stage %s (%d): weight %s%%, hold %s", e.stage, e.index, tostring(e.weight), M.clock(e.hold)) end,
  weight_confirmed = function(e) return string.format("weights confirmed: baseline %s%%, canary %s%%", tostring(e.baseline), tostring(e.canary)) end,
  weight_failed = function(e) return string.format("weights NOT confirmed (baseline %s%%, canary %s%%): %s", tostring(e.baseline), tostring(e.canary), tostring(e.error)) end,
  gate = gate_line,
  hold_extended = function(e) return string.format("hold extended (%s): up to %s of %s", e.why, M.clock(e.until_held), M.clock(e.max_hold)) end,
  trigger_pending = function(e) return string.format("trigger %s pending: %s (%sfor %s)", e.trigger, e.condition or e.trigger,
    trigger_value(e, ", "), M.clock(e["for"])) end,
  trigger_fired = function(e) return string.format("trigger %s FIRED after %s: %s%s", e.trigger, M.clock(e.held), e.condition or e.trigger,
    e.value ~= nil and (" (" .. trigger_value(e, "") .. ")") or "") end,
  trigger_resolved = function(e) return string.format("trigger %s resolved", e.trigger) end,
  source_error = function(e) return string.format("source error (%d in a row): %s", e.consecutive, tostring(e.error)) end,
  share_warning = function(e) return string.format("warning: canary gets %.1f%% of requests at weight %s%%", e.share, tostring(e.weight)) end,
  hook_started = function(e) return "hook " .. e.hook .. " started" end,
  hook_finished = function(e) return string.format("hook %s finished (%s)", e.hook, M.clock(e.elapsed)) end,
  hook_failed = function(e) return string.format("hook %s FAILED: %s", e.hook, tostring(e.error)) end,
  hook_cancelled = function(e) return string.format("hook %s cancelled: %s", e.hook, tostring(e.why)) end,
  rollback_started = function(e) return "ROLLBACK: " .. tostring(e.reason) .. (e.detail and (" (" .. tostring(e.detail) .. ")") or "") end,
  rollback_attempt = function(e) if e.ok then return nil end return string.format("rollback attempt %d failed: %s", e.attempt, tostring(e.error)) end,
  paused = function(e) return "PAUSED: " .. tostring(e.reason) end,
  resumed = function(e) return "resumed by " .. tostring(e.by) end,
  command = function(e) return string.format("command %s from %s", e.command, tostring(e.who)) end,
  log = function(e) return e.message end,
  outcome = function(e) return string.format("outcome: %s%s at %s%s%s", e.outcome, e.reason and (" (" .. e.reason .. ")") or "", M.clock(e.at),
    e.observe and " [observe-only: traffic untouched]" or "",
    e.preflight_skipped and (" [pre-flight skipped: " .. table.concat(e.preflight_skipped, ", ") .. "]") or "") end,
  observed_weights = function(e)
    if e.error then return "observe-only: cannot read the router's weights: " .. tostring(e.error) end
    return string.format("observe-only: the router has baseline %s%%, canary %s%%", tostring(e.baseline), tostring(e.canary))
  end,
  would_set_weights = function(e) return string.format("would set weights: baseline %s%%, canary %s%% (observe-only)", tostring(e.baseline), tostring(e.canary)) end,
  scale_down_waiting = function(e) return string.format("blue-green: %s stays up for %s, then scale_down", tostring(e.version), M.clock(e.delay)) end,
  trigger_error = function(e) -- the first, the one that makes the trigger count as no data, then every 20th
    local n = e.consecutive or 1
    if n ~= 1 and n ~= e.limit and n % 20 ~= 0 then return nil end
    return string.format("trigger %s: its check FAILED%s: %s%s", tostring(e.trigger), n > 1 and (" (" .. n .. " in a row)") or "",
      tostring(e.error), (e.limit and n >= e.limit) and "; no gate passes while it fails (no data)" or "")
  end,
  promotion_refused = function(e) return "promotion refused" .. (e.hook and (" before " .. e.hook) or "") .. ": " .. tostring(e.why) end,
  no_return_interrupt = function(e) return string.format("%s from %s NOT acted on: %s had started (the point of no return); "
    .. "it ran to its end and the canary keeps 100%%: pausing instead", tostring(e.action), tostring(e.who or e.reason), tostring(e.hook)) end,
  would_roll_back = function(e) return string.format("would roll back: %s at %s", tostring(e.reason), M.clock(e.at)) end,
}

--- The plain line for an event (without the time column), or nil for events a person
--- does not need (per-tick evaluations, router and source chatter).
function M.line(ev)
  local f = LINES[ev.event]
  return f and f(ev) or nil
end

--- Whether stdout is a terminal a person watches (the progress view's condition): a
--- terminal, NO_COLOR unset or empty, TERM not dumb (rollout.term), ROLLOUT_PROGRESS not 0.
function M.interactive(out)
  if out ~= io.stdout then return false end
  local p = os.getenv("ROLLOUT_PROGRESS")
  if p == "0" or p == "no" then return false end
  return term.fancy(1)
end

--- printer{json = bool, verbose = bool, out = file, progress = bool} -> emit(ev [, engine])
--- progress: true forces the live view, false plain lines; default: on a terminal.
function M.printer(opts)
  opts = opts or {}
  local out = opts.out or io.stdout
  if opts.json then
    return function(ev)
      out:write(redact.text(json.encode(ev, { sort = true, non_finite = "null", invalid_utf8 = "replace" })), "\n")
      out:flush()
    end
  end
  local progress = opts.progress
  if progress == nil then progress = M.interactive(out) end
  if progress then
    local view = progress_view.new({ out = out, line = function(ev) return redact.text(M.line(ev)) end, value = M.value, clock = M.clock, verbose = opts.verbose })
    return function(ev, engine) return view.emit(redact.value(ev), engine) end -- the view shows fields too
  end
  return function(ev)
    local line = M.line(ev)
    if not line and opts.verbose then line = ev.event end
    if line then
      out:write(string.format("[%8s] %s\n", M.clock(ev.t), redact.text(line)))
      out:flush()
    end
  end
end

function M.summary(outcome, opts)
  if opts.json then
    local s = { outcome = outcome.outcome, reason = outcome.reason or json.null, at = outcome.at, stage = outcome.stage or json.null,
      preflight_skipped = outcome.preflight_skipped }
    io.stdout:write(json.encode(s, { sort = true }), "\n")
  end
end

return M

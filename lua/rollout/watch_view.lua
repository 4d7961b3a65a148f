-- rollout.watch_view: what `rollout watch` shows, built from a rollout's events and, when the
-- source has one, the engine's status (the control socket's `watch`; fleet mode has events
-- and etcd's status summary only).
--
--   local v = watch_view.new{stages = {...}, triggers = {...}}   -- from the playbook
--   v:feed(ev); v:status(st)                                     -- as they arrive
--   v:frame{width = 100, color = true} -> lines                  -- the screen (a TTY)
--   v:line(ev) -> string | nil                                   -- one line per change
--
-- The frame: a header (service, versions, state, weights, elapsed), the stages with weight,
-- hold and status (passed, holding with time left, extended, pending, rolled back), each
-- trigger's state (inactive, no data, pending with the time held of its `for`, FIRED), the
-- last gate's values against its thresholds, and the last events as rollout.output prints
-- them. It only reads.
-- Error policy: never raises on an unknown or partial event; nothing to return or journal.
local output = require("rollout.output")

local M = {}
local V = {}
V.__index = V

M.RECENT = 8

--- new{stages = {{name=, weight=, hold=}...}, triggers = {{name=, ["for"]=, condition=}...}} -> view
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ stages = {}, triggers = {}, trigger_order = {}, recent = {}, weights = {},
    state = "starting", elapsed = 0 }, V)
  self:learn(opts.stages, opts.triggers)
  return self
end

--- learn(stages, triggers): the playbook's shape (once; later calls only fill gaps)
function V:learn(stages, triggers)
  if stages and #self.stages == 0 then
    for i, st in ipairs(stages) do self.stages[i] = { name = st.name, weight = st.weight, hold = st.hold, status = "pending" } end
  end
  for _, tr in ipairs(triggers or {}) do self:trigger(tr.name, { ["for"] = tr["for"], condition = tr.condition }) end
end

function V:trigger(name, fields)
  if not name then return nil end
  local t = self.triggers[name]
  if not t then
    t = { name = name, state = "inactive" }
    self.triggers[name] = t
    self.trigger_order[#self.trigger_order + 1] = name
  end
  for k, v in pairs(fields or {}) do if t[k] == nil then t[k] = v end end
  return t
end

function V:stage_at(index, ev)
  if not index then return nil end
  local st = self.stages[index]
  if not st then
    st = { name = ev and ev.stage, weight = ev and ev.weight, hold = ev and ev.hold, status = "pending" }
    self.stages[index] = st
  end
  return st
end

local H = {}
function H.rollout_started(self, ev)
  self.service, self.baseline_v, self.canary_v, self.observe = ev.service, ev.baseline, ev.canary, ev.observe
  self.nstages = ev.stages
  self.state = "preflight"
end
function H.rollout_resumed(self) self.state = "resumed" end
function H.preflight_done(self) self.state = "deploy" end
function H.stage_entered(self, ev)
  for i = 1, (ev.index or 1) - 1 do
    local s = self.stages[i]
    if s and s.status ~= "passed" then s.status = "passed" end
  end
  local st = self:stage_at(ev.index, ev)
  st.name, st.weight, st.hold = ev.stage or st.name, ev.weight or st.weight, ev.hold or st.hold
  st.status, st.start, st.until_held = "shifting", nil, nil
  self.current = ev.index
  self.state = "stage"
end
H.stage_resumed = function(self, ev)
  H.stage_entered(self, ev)
  local st = self.stages[ev.index]
  st.status, st.start = "holding", (ev.t or 0) - (ev.held or 0)
end
function H.weight_confirmed(self, ev)
  self.weights = { baseline = ev.baseline, canary = ev.canary }
  local st = self.current and self.stages[self.current]
  if st and st.status == "shifting" then st.status, st.start = "holding", ev.t end
end
function H.observed_weights(self, ev)
  if ev.canary then self.weights = { baseline = ev.baseline, canary = ev.canary } end
  local st = self.current and self.stages[self.current]
  if st and st.status == "shifting" then st.status, st.start = "holding", ev.t end
end
function H.hold_extended(self, ev)
  local st = self.current and self.stages[self.current]
  if st then st.status, st.until_held, st.why = "extended", ev.until_held, ev.why end
end
function H.gate(self, ev)
  self.gate = ev
  local st = self.current and self.stages[self.current]
  if st and ev.result == "pass" then st.status = "passed" end
  if st and ev.result == "fail" then st.status = "gate failed" end
end
function H.trigger_pending(self, ev)
  local t = self:trigger(ev.trigger, { ["for"] = ev["for"], condition = ev.condition })
  t.state, t.since_t, t.value = "pending", ev.t, ev.value
end
function H.trigger_fired(self, ev)
  local t = self:trigger(ev.trigger, { ["for"] = ev["for"], condition = ev.condition })
  t.state, t.fired_t, t.value, t.held = "fired", ev.t, ev.value, ev.held
end
function H.trigger_resolved(self, ev)
  local t = self:trigger(ev.trigger)
  t.state, t.since_t, t.value = "inactive", nil, ev.value
end
function H.trigger_reset(self, ev)
  local t = self:trigger(ev.trigger)
  t.state, t.since_t = ev.why == "no data" and "no data" or "inactive", nil
end
function H.paused(self, ev) self.state, self.pause_reason = "paused", ev.reason end
function H.resumed(self) self.state, self.pause_reason = "stage", nil end
function H.rollback_started(self, ev)
  self.state = "rolling back"
  local st = self.current and self.stages[self.current]
  if st then st.status = "rolling back (" .. tostring(ev.reason) .. ")" end
end
function H.would_roll_back(self, ev)
  local st = self.current and self.stages[self.current]
  if st then st.status = "would roll back (" .. tostring(ev.reason) .. ")" end
end
function H.promoting(self) self.state = "promoting" end
function H.outcome(self, ev)
  self.outcome = { outcome = ev.outcome, reason = ev.reason, at = ev.at, observe = ev.observe }
  self.state = ev.outcome
  local st = self.current and self.stages[self.current]
  if st then
    if ev.outcome == "promoted" then
      for _, s in ipairs(self.stages) do s.status = "passed" end
    elseif ev.outcome == "rolled_back" then
      st.status = (ev.observe and "would roll back" or "rolled back") .. (ev.reason and (" (" .. ev.reason .. ")") or "")
    else
      st.status = ev.outcome .. (ev.reason and (" (" .. ev.reason .. ")") or "")
    end
  end
end

--- feed(ev): one event, in order
function V:feed(ev)
  if type(ev) ~= "table" then return end
  if type(ev.t) == "number" and ev.t > (self.elapsed or 0) then self.elapsed = ev.t end
  local h = H[ev.event]
  if h then h(self, ev) end
  local line = self:line(ev)
  if line then
    self.recent[#self.recent + 1] = line
    if #self.recent > M.RECENT then table.remove(self.recent, 1) end
  end
end

--- status(st): the engine's status (rollout.engine E:status) or fleet's summary
function V:status(st)
  if type(st) ~= "table" then return end
  self.service = st.service or self.service
  self.baseline_v, self.canary_v = st.baseline or self.baseline_v, st.canary or self.canary_v
  if type(st.weights) == "table" and st.weights.canary then self.weights = { baseline = st.weights.baseline, canary = st.weights.canary } end
  if type(st.elapsed) == "number" then self.elapsed = st.elapsed end
  if st.state and not self.outcome then self.state = st.state end
  self.pause_reason = st.reason or self.pause_reason
  if st.stage_index then
    self.current = st.stage_index
    local cur = self:stage_at(st.stage_index, { stage = st.stage })
    for i = 1, st.stage_index - 1 do if self.stages[i] then self.stages[i].status = "passed" end end
    if st.held then cur.start = self.elapsed - st.held end
    cur.hold = st.hold or cur.hold
    if not self.outcome and st.state == "stage" and (cur.status == "pending" or cur.status == "shifting") and st.held then
      cur.status = "holding"
    end
  end
  if type(st.triggers) == "table" then
    for name, t in pairs(st.triggers) do
      local tr = self:trigger(name)
      local s = t.state
      if s == "pending" then tr.state, tr.since_t, tr.value = "pending", self.elapsed - (t.since or 0), t.value
      elseif s == "firing" then tr.state, tr.value = "fired", t.value; tr.fired_t = tr.fired_t or self.elapsed
      elseif s == "nodata" then tr.state, tr.since_t = "no data", nil
      else tr.state, tr.since_t = "inactive", nil end
    end
  end
  if type(st.outcome) == "table" and st.outcome.outcome and not self.outcome then
    H.outcome(self, st.outcome)
  end
end

-- ---- text -----------------------------------------------------------------------------------

--- line(ev) -> "[  14m40s] trigger error_rate FIRED ..." | nil (events a person does not need)
function V:line(ev)
  local l = output.line(ev)
  if not l then return nil end
  return string.format("[%8s] %s", output.clock(ev.t), l)
end

local ESC = "\27["
local COLORS = { green = "32", yellow = "33", red = "31", bold = "1", dim = "2", cyan = "36" }
local function paint(on, color, s) if not on or not COLORS[color] then return s end return ESC .. COLORS[color] .. "m" .. s .. ESC .. "0m" end

local function stage_color(status)
  if status == "passed" then return "green" end
  if status:find("^holding") or status:find("^extended") or status:find("^shifting") then return "yellow" end
  if status == "pending" then return "dim" end
  return "red"
end

local function trigger_text(self, t)
  if t.state == "pending" then
    local held = self.elapsed - (t.since_t or self.elapsed)
    return string.format("pending %s of %s", output.clock(math.max(0, held)), output.clock(t["for"])), "yellow"
  elseif t.state == "fired" then
    return "FIRED" .. (t.fired_t and (" at " .. output.clock(t.fired_t)) or ""), "red"
  elseif t.state == "no data" then
    return "no data", "dim"
  end
  return "inactive", "green"
end

local function fmt_value(v)
  if type(v) == "number" then return string.format("%.4g", v) end
  return v ~= nil and tostring(v) or nil
end

--- frame{width=, color=} -> list of lines (no escapes for the cursor; colour only if asked)
function V:frame(opts)
  opts = opts or {}
  local c = opts.color
  local width = opts.width or 100
  local L = {}
  local function add(s) L[#L + 1] = s end
  local state = self.state .. (self.pause_reason and self.state == "paused" and (" (" .. tostring(self.pause_reason) .. ")") or "")
  add(paint(c, "bold", string.format("rollout %s  %s -> %s", tostring(self.service or "?"), tostring(self.baseline_v or "?"),
    tostring(self.canary_v or "?"))) .. string.format("   %s%s   elapsed %s", state, self.observe and " [observe-only]" or "",
    output.clock(self.elapsed)))
  add(string.format("weights  baseline %s%%  canary %s%%", tostring(self.weights.baseline or "?"), tostring(self.weights.canary or "?")))
  add("")
  add(paint(c, "bold", string.format("%-3s %-22s %7s %9s  %s", "#", "STAGE", "WEIGHT", "HOLD", "STATUS")))
  for i, st in ipairs(self.stages) do
    local status = st.status or "pending"
    local text = status
    if (status == "holding" or status == "extended") and st.start and st.hold then
      local held = self.elapsed - st.start
      if status == "extended" and st.until_held then
        text = string.format("extended (%s): held %s, up to %s", tostring(st.why), output.clock(held), output.clock(st.until_held))
      else
        text = string.format("holding: %s held, %s left", output.clock(held), output.clock(math.max(0, st.hold - held)))
      end
    end
    add(string.format("%-3s %-22s %6s%% %9s  %s", tostring(i), tostring(st.name or "?"):sub(1, 22), tostring(st.weight or "?"),
      st.hold and output.clock(st.hold) or "-", paint(c, stage_color(status), text)))
  end
  add("")
  add(paint(c, "bold", string.format("%-22s %-26s %s", "TRIGGER", "STATE", "CONDITION")))
  for _, name in ipairs(self.trigger_order) do
    local t = self.triggers[name]
    local text, color = trigger_text(self, t)
    local cond = (t.condition or "") .. (t.value ~= nil and t.state ~= "inactive" and (" (value " .. fmt_value(t.value) .. ")") or "")
    add(string.format("%-22s %s %s", name:sub(1, 22), paint(c, color, text .. string.rep(" ", math.max(0, 26 - #text))), cond))
  end
  add("")
  local g = self.gate
  if g then
    add(paint(c, "bold", string.format("LAST GATE  %s at %s: %s%s", tostring(g.stage), output.clock(g.t),
      tostring(g.result), g.why and (" (" .. tostring(g.why) .. ")") or "")))
    for _, ch in ipairs(g.checks or {}) do
      if ch.status == "not_measured" then add(string.format("  %-12s %12s", tostring(ch.signal), "not measured")); goto next_check end
      local op = ch.dir == "max" and "<=" or ">="
      local color = ch.status == "pass" and "green" or (ch.status == "fail" and "red" or "yellow")
      add(string.format("  %-12s %12s %s %-12s %s", tostring(ch.signal), output.value(ch.signal, ch.value), op,
        output.value(ch.signal, ch.threshold), paint(c, color, tostring(ch.status))))
      ::next_check::
    end
    if g.samples then add(string.format("  samples %d of %d", math.floor(g.samples + 0.5), math.floor((g.min_samples or 0) + 0.5))) end
  else
    add(paint(c, "bold", "LAST GATE") .. "  none yet")
  end
  add("")
  add(paint(c, "bold", "RECENT EVENTS"))
  for _, l in ipairs(self.recent) do add(l) end
  if self.outcome then
    local o = self.outcome
    add("")
    add(paint(c, o.outcome == "promoted" and "green" or "red", M.outcome_line(o)))
  end
  for i, l in ipairs(L) do
    -- never wrap: a wrapped line breaks the redraw (escapes do not take columns)
    local visible = l:gsub("\27%[[%d;]*m", "")
    if #visible > width then L[i] = visible:sub(1, width) end
  end
  return L
end

function M.outcome_line(o)
  if o.observe and o.outcome == "rolled_back" then
    return string.format("outcome: would roll back: %s at %s (observe-only)", tostring(o.reason), output.clock(o.at))
  end
  return string.format("outcome: %s%s at %s", tostring(o.outcome), o.reason and (" (" .. tostring(o.reason) .. ")") or "", output.clock(o.at))
end

return M

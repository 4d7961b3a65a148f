-- rollout.progress: the live progress view of a rollout on a terminal.
--
-- A block of a few lines at the bottom of the terminal, redrawn in place (ANSI: cursor up,
-- clear to the end of the screen) as the engine's events arrive:
--
--   dwcp-v3  v2.9.0 -> v3.0.0                                  stage  elapsed 0m23s
--   stage 2/5 Ramp-Up   weight 25%   hold 10.0s   6.2s left
--   [##############.........................................]  28%   5 25 50 75 100
--                 error rate        p99          rps
--   baseline           0.00%        2ms      150.2/s
--   canary            19.87%        3ms       49.8/s   error_rate > 1.00%
--   trigger error_rate pending 1.0s of 2.0s (value 19.87%)
--
-- Every decision (the plain line rollout.output prints for it) scrolls above the block, so
-- the terminal keeps the story; the block shows where the rollout is now. The progress bar
-- covers the whole rollout, each stage by its hold. Between events a timer keeps "time
-- left" moving (real clock only: under the virtual clock a simulation redraws per
-- decision). When the outcome arrives the block is drawn a last time and the outcome line
-- goes under it.
--
-- It only reads events (and the engine passed beside them, for the stages' holds and
-- thresholds); it never changes them. rollout.output picks it when stdout is a terminal.
-- Width: opts.width, else the terminal's (rollout.term: TIOCGWINSZ, $COLUMNS, 80), read
-- again at each redraw so a resized window is followed. Colour: opts.color, else only when
-- NO_COLOR is unset or empty.
-- Error policy: it only reads the events the engine writes and draws them; a kind without
-- a handler only scrolls its line. Nothing here returns nil, err or journals: the journal,
-- not the terminal, is the record, and a failed write to the terminal is not checked.
local rollout = require("rollout")
local term = require("rollout.term")
local playbook = require("rollout.playbook")

local M = {}

local V = {}
V.__index = V

local ESC = "\27["
local function sgr(code, s, on) if not on then return s end return ESC .. code .. "m" .. s .. ESC .. "0m" end

local function pct(v) return v and string.format("%.2f%%", v * 100) or "-" end
local function msec(v)
  if not v then return "-" end
  if v >= 10 then return string.format("%.1fs", v) end
  return string.format("%.0fms", v * 1000)
end
local function rps(v) return v and string.format("%.1f/s", v) or "-" end
local function secs(v)
  v = math.max(0, v or 0)
  if v >= 60 then return string.format("%dm%02ds", math.floor(v) // 60, math.floor(v) % 60) end
  return string.format("%.1fs", v)
end
local function clock(t)
  t = math.max(0, math.floor(t or 0))
  if t >= 3600 then return string.format("%dh%02dm%02ds", t // 3600, t % 3600 // 60, t % 60) end
  return string.format("%dm%02ds", t // 60, t % 60)
end

local function utf8_locale()
  local l = os.getenv("LC_ALL") or os.getenv("LC_CTYPE") or os.getenv("LANG") or ""
  return l:upper():find("UTF%-?8") ~= nil
end

--- new{out = file, line = fn(ev) -> string|nil, value = fn(signal, v) -> string, clock = fn(t),
---     color = bool, unicode = bool, width = columns, refresh = seconds|false} -> view
--- view.emit(ev, engine) is the printer function.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({
    out = opts.out or io.stdout, line = opts.line or function() return nil end,
    value = opts.value or function(_, v) return tostring(v) end, tclock = opts.clock or clock,
    color = opts.color == nil and not term.no_color() or opts.color == true,
    unicode = opts.unicode == nil and utf8_locale() or opts.unicode,
    fixed_width = opts.width, width = M.fit_width(opts.width or term.width(1)),
    refresh = opts.refresh == nil and 0.5 or opts.refresh,
    drawn = 0, state = "starting", triggers = {}, trigger_order = {}, stages = {}, verbose = opts.verbose,
  }, V)
  self.emit = function(ev, engine) self:event(ev, engine) end
  return self
end

-- ---- what the events say ----------------------------------------------------------

-- The elapsed time now, between events too (events carry t; the offset maps it to now()).
function V:now_t()
  if not self.offset then return self.last_t or 0 end
  return rollout.now() - self.offset
end

function V:learn(engine)
  if self.pb or type(engine) ~= "table" or type(engine.pb) ~= "table" then return end
  local pb = engine.pb
  self.pb = pb
  -- the header's names also after --resume, when no rollout_started comes
  self.service = self.service or pb.service
  if type(pb.versions) == "table" then
    self.baseline_v = self.baseline_v or (pb.versions.baseline or {}).version
    self.canary_v = self.canary_v or (pb.versions.canary or {}).version
  end
  self.nstages = self.nstages or (pb.stages and #pb.stages)
  self.stages = {}
  for i, st in ipairs(pb.stages or {}) do self.stages[i] = { name = st.name, weight = st.weight, hold = st.hold } end
  for _, tr in ipairs(pb.triggers or {}) do
    self.trigger_order[#self.trigger_order + 1] = tr.name
    self.triggers[tr.name] = { state = "ok", ["for"] = tr.duration, signal = tr.condition and tr.condition.signal,
      version = tr.condition and tr.condition.version or "canary", kind = tr.kind }
  end
  self.stage_thresholds = function(stage) return playbook.stage_thresholds(pb, stage) end
end

local HANDLERS = {}

function HANDLERS.rollout_started(self, ev)
  self.service, self.baseline_v, self.canary_v = ev.service, ev.baseline, ev.canary
  self.nstages = ev.stages
  self.state = "preflight"
end
HANDLERS.rollout_resumed = function(self) self.state = "resumed" end
function HANDLERS.preflight_done(self, ev)
  self.preflight = string.format("%d passed, %d failed, %d skipped", ev.passed, ev.failed, ev.skipped)
  self.state = "deploy"
end
function HANDLERS.hook_started(self, ev) self.hook = ev.hook end
function HANDLERS.hook_finished(self) self.hook = nil end
HANDLERS.hook_failed, HANDLERS.hook_cancelled = HANDLERS.hook_finished, HANDLERS.hook_finished
function HANDLERS.baseline_captured(self, ev) self.signals = { baseline = ev.baseline }; self.state = "baseline" end
function HANDLERS.stage_entered(self, ev)
  self.stage = { index = ev.index, name = ev.stage, weight = ev.weight, hold = ev.hold }
  self.stage_start, self.until_held, self.gate = nil, nil, nil
  self.state = "shifting"
end
function HANDLERS.stage_resumed(self, ev)
  self.stage = { index = ev.index, name = ev.stage, weight = ev.weight, hold = ev.hold }
  self.stage_start = ev.t - (ev.held or 0)
  self.state = "holding"
end
function HANDLERS.weight_confirmed(self, ev)
  self.weight = ev.canary
  if self.state == "shifting" and self.stage and ev.canary == self.stage.weight then
    self.stage_start = ev.t
    self.state = "holding"
  end
end
function HANDLERS.evaluation(self, ev)
  self.signals = { baseline = ev.baseline, canary = ev.canary }
  self.source_error = nil
  for _, t in pairs(self.triggers) do -- a pending trigger shows the value now, not at its start
    local sig = t.signal and ev[t.version or "canary"]
    if t.state == "pending" and type(sig) == "table" and sig[t.signal] ~= nil then t.value = sig[t.signal] end
  end
end
function HANDLERS.source_error(self, ev) self.source_error = ev.error end
function HANDLERS.gate(self, ev) self.gate = ev end
function HANDLERS.hold_extended(self, ev) self.until_held = ev.until_held end
local function trig(self, ev)
  local t = self.triggers[ev.trigger]
  if not t then
    t = { state = "ok" }
    self.triggers[ev.trigger] = t
    self.trigger_order[#self.trigger_order + 1] = ev.trigger
  end
  return t
end
function HANDLERS.trigger_pending(self, ev)
  local t = trig(self, ev)
  t.state, t.since, t.value = "pending", ev.t, ev.value
  if ev["for"] then t["for"] = ev["for"] end
end
function HANDLERS.trigger_fired(self, ev)
  local t = trig(self, ev)
  t.state, t.value = "fired", ev.value
end
function HANDLERS.trigger_reset(self, ev) trig(self, ev).state = "ok" end
HANDLERS.trigger_resolved = HANDLERS.trigger_reset
function HANDLERS.rollback_started(self, ev) self.state = "rolling back"; self.reason = ev.reason; self.stage_stop = ev.t end
function HANDLERS.paused(self, ev) self.state = "paused"; self.reason = ev.reason; self.stage_stop = ev.t end
function HANDLERS.resumed(self, ev)
  self.state = "holding"
  if self.stage_stop and self.stage_start then self.stage_start = self.stage_start + (ev.t - self.stage_stop) end
  self.stage_stop = nil
end
function HANDLERS.promoting(self) self.state = "promoting" end
function HANDLERS.outcome(self, ev)
  self.state, self.outcome = ev.outcome, ev
end

-- ---- drawing ----------------------------------------------------------------------

local function dwidth(s)
  local plain = s:gsub("\27%[[%d;]*[A-Za-z]", "")
  return utf8.len(plain) or #plain
end

local function pad(s, n) return s .. string.rep(" ", math.max(0, n - dwidth(s))) end

-- How far through the whole rollout: completed holds plus the current one, over all holds.
function V:fraction()
  if self.outcome and self.outcome.outcome == "promoted" then return 1 end
  local total, done = 0, 0
  local idx = self.stage and self.stage.index or 0
  for i, st in ipairs(self.stages) do
    total = total + (st.hold or 0)
    if i < idx then done = done + (st.hold or 0) end
  end
  if total <= 0 then
    local n = self.nstages or 0
    if n == 0 or idx == 0 then return 0 end
    return math.min(1, (idx - 1 + self:stage_fraction()) / n)
  end
  if idx > 0 then done = done + (self.stages[idx] and self.stages[idx].hold or 0) * self:stage_fraction() end
  return math.min(1, done / total)
end

function V:held()
  if not self.stage_start then return 0 end
  return (self.stage_stop or self.frozen_t or self:now_t()) - self.stage_start
end

function V:stage_fraction()
  local hold = self.stage and self.stage.hold
  if not hold or hold <= 0 then return 0 end
  return math.min(1, self:held() / hold)
end

function V:bar(width)
  local frac = self:fraction()
  local cells = frac * width
  local full = math.floor(cells)
  local s
  if self.unicode then
    local parts = { "▏", "▎", "▍", "▌", "▋", "▊", "▉" }
    local rest = math.floor((cells - full) * 8)
    s = string.rep("█", full) .. (full < width and rest > 0 and parts[rest] or "")
    s = s .. string.rep("·", width - full - ((full < width and rest > 0) and 1 or 0))
  else
    s = string.rep("#", full) .. string.rep(".", width - full)
  end
  local col = "36"
  if self.outcome then col = self.outcome.outcome == "promoted" and "32" or "31"
  elseif self.state == "rolling back" then col = "31" end
  return "[" .. sgr(col, s, self.color) .. "]" .. string.format(" %3d%%", math.floor(frac * 100 + 0.5))
end

function V:weights_path()
  local parts = {}
  for i, st in ipairs(self.stages) do
    local w = tostring(st.weight)
    if self.stage and i == self.stage.index then w = sgr("7", w, self.color)
    elseif self.stage and i < self.stage.index then w = sgr("2", w, self.color) end
    parts[#parts + 1] = w
  end
  return table.concat(parts, " ")
end

-- The canary's threshold breaches at this stage, for the signal table.
function V:breaches(c)
  if not (c and self.stage and self.stage_thresholds and self.pb) then return "" end
  local stage = self.pb.stages and self.pb.stages[self.stage.index]
  if not stage then return "" end
  local ok, th = pcall(self.stage_thresholds, stage)
  if not ok then return "" end
  local out = {}
  for _, name in ipairs({ "error_rate", "p99" }) do
    local t = th[name]
    local v = c[name]
    if t and t.value and v and ((t.dir == "max" and v > t.value) or (t.dir == "min" and v < t.value)) then
      out[#out + 1] = string.format("%s %s %s", name, t.dir == "max" and ">" or "<", self.value(name, t.value))
    end
  end
  return table.concat(out, ", ")
end

function V:trigger_line()
  local pend, fired = {}, nil
  for _, name in ipairs(self.trigger_order) do
    local t = self.triggers[name]
    if t.state == "fired" then fired = name
    elseif t.state == "pending" then
      local held = self:now_t() - (t.since or 0)
      pend[#pend + 1] = string.format("%s pending %s of %s (value %s)", name, secs(math.min(held, t["for"] or held)),
        secs(t["for"] or 0), self.value(t.signal or name, t.value))
    end
  end
  if fired then
    local t = self.triggers[fired]
    return sgr("1;31", "trigger " .. fired .. " FIRED", self.color) .. " (value " .. self.value(t.signal or fired, t.value) .. ")"
  end
  if #pend > 0 then return sgr("33", "trigger " .. table.concat(pend, "; "), self.color) end
  if self.source_error then return sgr("33", "source error: " .. tostring(self.source_error), self.color) end
  if #self.trigger_order > 0 and self.stage then
    return string.format("triggers: %d watching, none pending", #self.trigger_order)
  end
  return ""
end

--- fit_width(columns) -> the view's width: 40..99 (one column spare, so a line never wraps)
function M.fit_width(cols)
  return math.max(40, math.min(cols, 100) - 1)
end

function V:lines()
  if not self.fixed_width then self.width = M.fit_width(term.width(1)) end
  local w = self.width
  local L = {}
  local now = self.frozen_t or self:now_t()
  local head = string.format("%s  %s -> %s", sgr("1", self.service or "rollout", self.color), self.baseline_v or "?", self.canary_v or "?")
  local right = string.format("%s  elapsed %s", self.state, clock(now))
  L[#L + 1] = pad(head, w - dwidth(right)) .. right
  if self.stage then
    local st = self.stage
    local left = string.format("stage %d/%d %s", st.index, self.nstages or #self.stages, sgr("1", st.name or "?", self.color))
    local hold = st.hold or 0
    local info
    if not self.stage_start then
      info = string.format("weight %s%% (shifting)   hold %s", tostring(st.weight), secs(hold))
    else
      local limit = self.until_held or hold
      local left_s = limit - self:held()
      info = string.format("weight %s%%   hold %s   ", tostring(self.weight or st.weight), secs(hold))
      if self.stage_stop then info = info .. "stopped after " .. secs(self:held())
      else info = info .. secs(left_s) .. " left" .. (self.until_held and " (extended)" or "") end
    end
    L[#L + 1] = left .. "   " .. info
  else
    local what = self.state
    if self.hook then what = what .. " (hook " .. self.hook .. ")" end
    if self.preflight then what = what .. "   preflight: " .. self.preflight end
    L[#L + 1] = "before the first stage: " .. what
  end
  local path = self:weights_path()
  local bw = math.max(10, w - 8 - dwidth(path) - 3)
  L[#L + 1] = self:bar(bw) .. "   " .. path
  local s = self.signals or {}
  L[#L + 1] = string.format("%-10s %12s %10s %12s", "", "error rate", "p99", "rps")
  for _, v in ipairs({ "baseline", "canary" }) do
    local x = s[v]
    local row = string.format("%-10s %12s %10s %12s", v, pct(x and x.error_rate), msec(x and x.p99), rps(x and x.rps))
    if v == "canary" then
      local b = self:breaches(x)
      if b ~= "" then row = row .. "   " .. sgr("31", b, self.color) end
    end
    L[#L + 1] = row
  end
  L[#L + 1] = self:trigger_line()
  for i, l in ipairs(L) do
    if dwidth(l) > w then -- never wrap: a wrapped line would break the redraw
      local plain = l:gsub("\27%[[%d;]*[A-Za-z]", "")
      L[i] = plain:sub(1, utf8.offset(plain, w) and utf8.offset(plain, w) - 1 or w - 1) .. "…"
    end
  end
  return L
end

function V:erase()
  if self.drawn > 0 then self.out:write(ESC .. self.drawn .. "F" .. ESC .. "J") end
  self.drawn = 0
end

function V:draw()
  local lines = self:lines()
  local buf = {}
  for i, l in ipairs(lines) do buf[i] = l .. ESC .. "K\n" end
  self.out:write(table.concat(buf))
  self.drawn = #lines
end

function V:redraw(log)
  self:erase()
  if log then self.out:write(log, "\n") end
  self:draw()
  self.out:flush()
end

function V:start_timer()
  if self.timer or not self.refresh or rollout.clock() ~= "real" then return end
  self.timer = rollout.every(self.refresh, function()
    if self.finished then return false end
    self:redraw()
  end)
end

--- event(ev, engine): update the state, print the decision line (if any) above the block,
--- redraw. After the outcome the block stays and further lines print plainly.
function V:event(ev, engine)
  self:learn(engine)
  if ev.t then
    self.last_t = ev.t
    if rollout.clock() == "real" then self.offset = rollout.now() - ev.t end
  end
  local h = HANDLERS[ev.event]
  if h then h(self, ev) end
  local text = self.line(ev)
  if not text and self.verbose then text = ev.event end
  if text then text = string.format("[%8s] %s", self.tclock(ev.t), text) end
  if self.finished then
    if text then self.out:write(text, "\n"); self.out:flush() end
    return
  end
  if ev.event == "outcome" then
    self.frozen_t = ev.t
    self.finished = true
    if self.timer then self.timer:cancel("finished"); self.timer = nil end
    self:erase()
    self:draw()
    self.drawn = 0
    local col = ev.outcome == "promoted" and "1;32" or (ev.outcome == "rolled_back" and "1;31" or "1;33")
    self.out:write(sgr(col, text or ("outcome: " .. tostring(ev.outcome)), self.color), "\n")
    self.out:flush()
    return
  end
  if text or ev.event == "evaluation" or HANDLERS[ev.event] then
    if rollout.clock() ~= "real" and not text then return end -- a simulation: decisions only
    self:redraw(text)
  end
  self:start_timer()
end

return M

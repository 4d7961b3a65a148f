-- rollout.progress (the live view on a terminal) fed with an engine's events, and
-- rollout.output's choice between it and the plain lines.
local progress = require("rollout.progress")
local output = require("rollout.output")

local function buffer()
  local b = { parts = {} }
  function b:write(...) for _, s in ipairs({ ... }) do self.parts[#self.parts + 1] = s end return self end
  function b.flush() end
  function b:text() return table.concat(self.parts) end
  return b
end

-- What a terminal shows after the output: cursor-up-N-lines + clear-to-end handled, SGR dropped.
local function screen(text)
  local lines, row = { "" }, 1
  local i = 1
  while i <= #text do
    local n, cmd, len = text:match("^\27%[([%d;]*)([A-Za-z])()", i)
    if cmd then
      if cmd == "F" then row = math.max(1, row - (tonumber(n) or 1))
        for k = #lines, row + 1, -1 do lines[k] = nil end
        lines[row] = ""
      end
      i = len
    else
      local c = text:sub(i, i)
      if c == "\n" then row = row + 1; lines[row] = lines[row] or "" else lines[row] = (lines[row] or "") .. c end
      i = i + 1
    end
  end
  if lines[#lines] == "" then lines[#lines] = nil end
  return lines
end

local engine = { pb = {
  stages = { { name = "Initial", weight = 5, hold = 5, thresholds = {} }, { name = "Ramp-Up", weight = 25, hold = 10,
    thresholds = { error_rate = { signal = "error_rate", dir = "max", value = 0.01 } } },
    { name = "Half", weight = 50, hold = 15, thresholds = {} }, { name = "Majority", weight = 75, hold = 15, thresholds = {} },
    { name = "Full", weight = 100, hold = 10, thresholds = {} } },
  triggers = { { name = "error_rate", duration = 2, kind = "condition", condition = { signal = "error_rate" } } },
  thresholds = {},
} }

local EVENTS = {
  { event = "rollout_started", t = 0, service = "dwcp-v3", baseline = "v2.9.0", canary = "v3.0.0", stages = 5 },
  { event = "stage_entered", t = 1, stage = "Initial", index = 1, weight = 5, hold = 5 },
  { event = "weight_confirmed", t = 1, baseline = 95, canary = 5 },
  { event = "gate", t = 6, stage = "Initial", result = "pass", checks = {} },
  { event = "stage_entered", t = 6, stage = "Ramp-Up", index = 2, weight = 25, hold = 10 },
  { event = "weight_confirmed", t = 6, baseline = 75, canary = 25, stage = "Ramp-Up" },
  { event = "evaluation", t = 7, weight = 25, baseline = { error_rate = 0, p99 = 0.061, rps = 150 },
    canary = { error_rate = 0.2, p99 = 0.07, rps = 50 }, stage = "Ramp-Up" },
  { event = "trigger_pending", t = 7, trigger = "error_rate", value = 0.2, ["for"] = 2, condition = "error_rate > 5%" },
}

describe("progress view", function()
  it("redraws one block in place and scrolls each decision above it", function()
    local out = buffer()
    local view = progress.new({ out = out, line = output.line, value = output.value, clock = output.clock,
      color = false, unicode = false, refresh = false, width = 80 })
    for _, ev in ipairs(EVENTS) do view.emit(ev, engine) end
    local text = out:text()
    assert.truthy(text:find("\27[7F\27[J", 1, true), "the block is erased before it is redrawn")
    local lines = screen(text)
    local shown = table.concat(lines, "\n")
    -- the decisions, each once, in order, above the block
    local a = shown:find("stage Initial (1): weight 5%", 1, true)
    local b = shown:find("gate Initial: pass", 1, true)
    local c = shown:find("trigger error_rate pending", 1, true)
    assert.truthy(a and b and c and a < b and b < c, shown)
    local _, count = shown:gsub("stage Initial %(1%)", "")
    assert.equals(1, count, "a decision is printed once, never redrawn")
    -- the block: stage, weight, time left, the bar over the whole rollout, both versions
    local block = table.concat(lines, "\n", #lines - 6)
    assert.matches("dwcp%-v3  v2%.9%.0 %-> v3%.0%.0", block)
    assert.matches("stage 2/5 Ramp%-Up   weight 25%%   hold 10%.0s   9%.0s left", block)
    -- 5 s of Initial + 1 s of Ramp-Up over 55 s: 11 %
    assert.matches("%[#+%.+%]  11%%", block)
    assert.matches("canary +20%.00%% +70ms +50%.0/s   error_rate > 1%.00%%", block)
    assert.matches("baseline +0%.00%% +61ms +150%.0/s", block)
    assert.matches("trigger error_rate pending 0%.0s of 2%.0s %(value 20%.00%%%)", block)
    for _, l in ipairs(lines) do
      if not l:find("^%[") then assert.le(utf8.len(l), 79, "a block line never wraps: " .. l) end
    end
  end)

  it("leaves the final block on screen with the outcome under it", function()
    local out = buffer()
    local view = progress.new({ out = out, line = output.line, value = output.value, clock = output.clock,
      color = false, unicode = false, refresh = false, width = 80 })
    for _, ev in ipairs(EVENTS) do view.emit(ev, engine) end
    view.emit({ event = "trigger_fired", t = 9, trigger = "error_rate", value = 0.21, held = 2 }, engine)
    view.emit({ event = "rollback_started", t = 9, reason = "trigger:error_rate" }, engine)
    view.emit({ event = "weight_confirmed", t = 9, baseline = 100, canary = 0 }, engine)
    view.emit({ event = "outcome", t = 9, outcome = "rolled_back", reason = "trigger:error_rate", at = 9 }, engine)
    view.emit({ event = "log", t = 9.5, message = "after the end" }, engine)
    local lines = screen(out:text())
    assert.matches("outcome: rolled_back %(trigger:error_rate%) at 9%.0s", lines[#lines - 1])
    assert.matches("after the end", lines[#lines])
    local block = table.concat(lines, "\n", #lines - 8, #lines - 2)
    assert.matches("rolled_back  elapsed 0m09s", block)
    assert.matches("weight 0%%   hold 10%.0s   stopped after 3%.0s", block)
    assert.matches("trigger error_rate FIRED", block)
  end)

  it("fills the bar when the canary is promoted", function()
    local out = buffer()
    local view = progress.new({ out = out, line = output.line, value = output.value, color = false, unicode = true,
      refresh = false, width = 80 })
    view.emit(EVENTS[1], engine)
    view.emit({ event = "outcome", t = 56, outcome = "promoted", at = 56 }, engine)
    local shown = table.concat(screen(out:text()), "\n")
    assert.matches("%[" .. string.rep("█", 10), shown)
    assert.matches("%] 100%%", shown)
  end)
end)

describe("output.printer", function()
  it("prints plain lines, unchanged, where stdout is not a terminal", function()
    local out = buffer()
    local emit = output.printer({ out = out })
    emit({ event = "stage_entered", t = 1, stage = "Initial", index = 1, weight = 5, hold = 5 })
    emit({ event = "evaluation", t = 2 })
    assert.equals("[    1.0s] stage Initial (1): weight 5%, hold 5.0s\n", out:text())
    assert.is_false(output.interactive(out))
  end)

  it("rounds a Prometheus source's extrapolated sample count in the gate line", function()
    local line = output.line({ event = "gate", stage = "Initial", result = "pass", checks = {}, samples = 52.6,
      min_samples = 17 })
    assert.matches("samples 53/17", line)
  end)

  it("gives the progress view when asked to (progress = true)", function()
    local out = buffer()
    local emit = output.printer({ out = out, progress = true })
    emit(EVENTS[1], engine)
    assert.truthy(out:text():find("\27[", 1, true))
    emit({ event = "outcome", t = 1, outcome = "aborted", reason = "preflight:x", at = 1 }, engine) -- stops its timer
  end)
end)

-- rollout.repl: evaluate what a person types, the way lua.c does, for the control socket
-- (control.lua), `rollout attach` and `rollout repl`.
--
--   local s = repl.new{env = {...}, commands = {status = fn, ...}, budget = {instructions=, seconds=}}
--   local r = s:eval("1 + 1")   --> {ok = true, value = 2, values = {n=1, 2}, text = "2"}
--   s:eval("for i = 1, 2 do")   --> {ok = true, incomplete = true}
--   s:eval("end")               --> {ok = true, text = ""}
--   s:eval("error('x')")        --> {ok = false, error = "repl:1: x", text = "repl:1: x"}
--
-- A line is first tried as `return <line>`, so an expression prints its value; otherwise as a
-- statement. A statement that ends early (the syntax error ends in "<eof>") waits for more
-- lines, as lua.c's multiline mode. Tables print pretty (rollout.pretty), strings as they are,
-- several values separated by tabs; print() inside the code is captured into the text.
--
-- Commands: a line whose first word names one of `commands` (and that is not followed by
-- `(`, `=`, `.`, `:` or `[`, so `status()` or `status.x` stay Lua) calls
-- commands[word](rest, session) -> value [, text] | nil, err.
--
-- Every evaluation runs as its own task under rollout.budget: `instructions` VM instructions
-- and `seconds` of wall time (defaults 1e8 and 10 s); a runaway (`while true do end`) gets
-- "budget exceeded", yields to the loop every 10 ms meanwhile, and the session goes on. An
-- evaluation still waiting (a slow http.get) when the seconds run out is cancelled.
--
-- session.on_lua(chunk), when set, is called with every complete chunk of Lua before it runs
-- (the control socket journals it).
--
-- Error policy: eval never raises; the result says what happened.
local rollout = require("rollout")
local budget = require("rollout.budget")
local pretty = require("rollout.pretty")
local alloc = require("rollout.alloc")
local redact = require("rollout.redact")

local M = {}
local S = {}
S.__index = S

M.DEFAULT_BUDGET = { instructions = 1e8, seconds = 10 }
M.DEFAULT_MEMORY = 64 * 1024 * 1024 -- bytes an evaluation's Lua heap may grow by (budget.memory)

--- Text of one value: strings as they are, tables pretty, the rest tostring.
function M.show(v)
  if type(v) == "string" then return v end
  if type(v) == "table" then return pretty.format(v, { depth = 6, width = 100 }) end
  return tostring(v)
end

local function show_all(values)
  local parts = {}
  for i = 1, values.n do parts[i] = M.show(values[i]) end
  return table.concat(parts, "\t")
end

local function error_text(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return "(error object is a " .. type(e) .. " value) " .. M.show(e)
end

--- new{env=, commands=, budget=, chunkname="=repl", isolated=false} -> session
--- Assignments to globals stay in the session: its env reads through to opts.env, then _G
--- (not with isolated = true: opts.env is all there is).
function M.new(opts)
  opts = opts or {}
  local base = opts.env or {}
  if getmetatable(base) == nil and not opts.isolated then setmetatable(base, { __index = _G }) end
  local self = setmetatable({
    commands = opts.commands or {}, pending = nil, out = nil,
    budget = opts.budget or M.DEFAULT_BUDGET, chunkname = opts.chunkname or "=repl",
  }, S)
  self.env = setmetatable({}, { __index = base })
  self.env.print = function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    local line = table.concat(parts, "\t")
    if self.out then self.out[#self.out + 1] = line else io.stdout:write(line, "\n") end
  end
  return self
end

-- Run fn under the budget in a task of its own; returns true, packed values | false, err.
function S:run(fn)
  local b = self.budget
  local limits = {} -- rollout.budget's options; the memory cap is rollout.alloc's
  for k, v in pairs(b) do if k ~= "memory" then limits[k] = v end end
  local task = rollout.spawn(function()
    return table.pack(budget.run(alloc.run, limits, fn, b.memory or M.DEFAULT_MEMORY))
  end)
  local r = table.pack(pcall(task.wait, task, b.seconds))
  if not r[1] then return false, error_text(r[2]) end
  if r[2] == nil and r[3] == "timeout" and task:state() ~= "done" then
    task:cancel("budget exceeded")
    return false, string.format("budget exceeded: still running after %g s (cancelled)", b.seconds)
  end
  return true, r[2]
end

function S:command(line)
  if self.pending then return nil end
  local word, rest = line:match("^%s*([%a_][%w_]*)(.*)$")
  if not word or not self.commands[word] then return nil end
  if rest:match("^%s*[%(=%.:%[]") then return nil end
  return self.commands[word], (rest:gsub("^%s+", ""):gsub("%s+$", ""))
end

--- eval(line) -> {ok=, incomplete=, value=, values=, text=, error=}
function S:eval(line)
  line = tostring(line or "")
  local cmd, args = self:command(line)
  self.out = {}
  local res
  if cmd then
    res = self:eval_command(cmd, args)
  else
    res = self:eval_lua(line)
  end
  local printed = table.concat(self.out, "\n")
  self.out = nil
  if printed ~= "" then
    res.text = (res.text and res.text ~= "") and (printed .. "\n" .. res.text) or printed
  end
  res.text = redact.text(res.text or "") -- REPL printing never shows a secret
  return res
end

function S:eval_command(cmd, args)
  local ok, v, text = pcall(cmd, args, self)
  if not ok then return { ok = false, error = error_text(v), text = error_text(v) } end
  if v == nil and text ~= nil then return { ok = false, error = tostring(text), text = tostring(text) } end
  return { ok = true, value = v, values = table.pack(v), text = text or (v ~= nil and M.show(v) or "") }
end

function S:eval_lua(line)
  local chunk = self.pending and (self.pending .. "\n" .. line) or line
  local fn
  if not self.pending then fn = load("return " .. chunk, self.chunkname, "t", self.env) end
  if not fn then
    local err
    fn, err = load(chunk, self.chunkname, "t", self.env)
    if not fn then
      if err:match("<eof>$") then
        self.pending = chunk
        return { ok = true, incomplete = true }
      end
      self.pending = nil
      return { ok = false, error = err, text = err }
    end
  end
  self.pending = nil
  if self.on_lua then self.on_lua(chunk) end -- an audit hook (control.lua journals every chunk)
  local ok, values = self:run(fn)
  if not ok then return { ok = false, error = values, text = values } end
  local value = values[1]
  if values.n > 1 then value = { table.unpack(values, 1, values.n) } end
  return { ok = true, value = value, values = values, text = show_all(values) }
end

--- Drop a half-typed statement (Ctrl-C at a continuation prompt).
function S:reset() self.pending = nil end

return M

-- rollout.term: what the terminal on an output descriptor can show. Width: the terminal's
-- own size (TIOCGWINSZ on the descriptor), else $COLUMNS, else 80. Colour and in-place
-- redraws only where a person watches: the descriptor is a terminal, NO_COLOR is unset or
-- empty (https://no-color.org), and TERM is not "dumb". No state.
-- Error policy: never raises; without a terminal the answers are the plain ones: no
-- colour, no redraws, the width from $COLUMNS or 80.
local fs = require("rollout.fs")

local M = {}

--- width([fd = 1]) -> columns (an integer >= 1)
function M.width(fd)
  local cols = fs.winsize(fd or 1)
  if cols then return cols end
  local env = math.tointeger(tonumber(os.getenv("COLUMNS") or ""))
  if env and env > 0 then return env end
  return 80
end

--- no_color() -> true when NO_COLOR holds any non-empty value
function M.no_color()
  local v = os.getenv("NO_COLOR")
  return v ~= nil and v ~= ""
end

--- fancy([fd = 1]) -> whether colour and in-place redraws may be written to fd
function M.fancy(fd)
  if M.no_color() then return false end
  if os.getenv("TERM") == "dumb" then return false end
  return fs.isatty(fd or 1)
end

return M

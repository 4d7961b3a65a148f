-- rollout attach SOCKET
-- An interactive session with a running rollout: the control socket's commands and a Lua
-- REPL inside the engine, with line editing and history (libedit; ~/.rollout_history).
-- Speaks the socket's machine mode, so prompts and multi-line statements are handled here:
-- "rollout> ", and ">> " while a statement continues. Reads a pipe as well (no prompts).
-- Ends at end of input (Ctrl-D) or `quit`; exit (rollout.exit) NOT_FOUND 2 if no socket is at
-- the path, UNREACHABLE 3 if the socket cannot be reached or the rollout goes away.
-- Error policy: usage errors return 2; a socket that is not there, cannot be reached or stops
-- answering is printed ("rollout attach: ...") and returns the code of the reason; a line that fails inside the engine is
-- the engine's answer, printed on stderr, and the session goes on. Nothing raises.
local args = require("rollout.args")
local control = require("rollout.control")
local edit = require("rollout.edit")
local exit = require("rollout.exit")

local M = {}
M.summary = "an interactive session with a running rollout: its commands and a Lua REPL inside it"
M.usage = "rollout attach SOCKET"
M.description = "Connects to a running rollout's control socket: the socket's commands (status, pause, "
  .. "resume, promote, abort, ...) and Lua evaluated inside the engine, with line editing and history. "
  .. "SOCKET is the socket's path, or a service name looked up in the default run directory. Ends at "
  .. "end of input (Ctrl-D) or `quit`."
M.options = {}
M.exit = exit.describe({ { "OK", "at the end of the session" }, { "USAGE", "usage error" },
  { "NOT_FOUND", "no such rollout (no socket at the path)" },
  { "UNREACHABLE", "the socket cannot be reached or the rollout went away" } })

local function history_file()
  local home = os.getenv("HOME")
  return home and home ~= "" and (home .. "/.rollout_history") or nil
end

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("attach", pos, M.usage) end
  if #pos ~= 1 then return args.usage_error("attach", "expected a socket", M.usage) end
  local path = control.resolve(pos[1])
  local client, err, why = control.connect(path, 5)
  if not client then
    io.stderr:write("rollout attach: ", tostring(err), "\n")
    return exit.for_reason(why)
  end
  local tty = edit.isatty()
  local hist = history_file()
  if tty and hist then edit.read_history(hist) end
  local first = client:request("status")
  if not first then
    io.stderr:write("rollout attach: ", path, ": no answer\n")
    return exit.UNREACHABLE
  end
  if tty then io.stdout:write(first.text, "\n`help` lists the commands; anything else is Lua. Ctrl-D leaves.\n") end
  local prompt = "rollout> "
  local code = exit.OK
  while true do
    local line = edit.readline(prompt)
    if not line then break end
    if tty and line:find("%S") then edit.add_history(line) end
    local res, rerr = client:request(line)
    if not res then
      io.stderr:write("rollout attach: ", tostring(rerr), "\n")
      code = exit.UNREACHABLE
      break
    end
    if res.text and res.text ~= "" then
      local out = res.ok and io.stdout or io.stderr
      out:write(res.text, "\n")
      out:flush()
    end
    prompt = res.incomplete and ">> " or "rollout> "
    if line:match("^%s*quit%s*$") or line:match("^%s*exit%s*$") then break end
  end
  edit.close()
  if tty and hist then edit.write_history(hist) end
  client:close()
  return code
end

return M

-- rollout.cli: the command line. main.c runs M.main(argv) as the main task; its return
-- value is the exit code (0 ok/promoted, 1 rolled back, 2 usage or config, 3 aborted/failed).
-- Each command lives in lua/rollout/cmd/<name>.lua and exports main(args) -> code, and
-- declares summary, usage and options (rollout.args): `rollout CMD --help`, `-h` and
-- `rollout help CMD` print its usage from that declaration, here, before main runs.
-- A new command: add its name to COMMANDS below and write lua/rollout/cmd/<name>.lua
-- (docs/contributing.md).
-- Error policy: usage errors (an unknown command or option, with a "did you mean") are
-- printed and return 2; a command that cannot be loaded for another reason raises, and
-- main.c prints the error and exits 3. A command's own errors are its exit code.
local rollout = require("rollout")
local args = require("rollout.args")
local term = require("rollout.term")

local M = {}

local HOST_GLOBALS = {
  http = true, json = true, yaml = true, proc = true, fs = true, units = true, net = true,
  promtext = true, histogram = true, stats = true,
}

--- Give scripts the host API as globals: `rollout` now, the rest on first use.
function M.install_globals()
  _G.rollout = rollout
  setmetatable(_G, {
    __index = function(_, k)
      if HOST_GLOBALS[k] then
        -- lazy: the host API module a script names, loaded when it first uses it
        local ok, mod = pcall(require, "rollout." .. k)
        if ok then rawset(_G, k, mod); return mod end
      end
      return nil
    end,
  })
end

-- The commands in the order `rollout --help` lists them; each one's summary comes from its
-- module (the text here is used only when the module cannot be loaded).
local COMMANDS = {
  { "run", "run a playbook for real" },
  { "check", "validate a playbook and its router without side effects" },
  { "simulate", "run a playbook in virtual time against a scenario" },
  { "verify", "policy tests: a playbook against labelled scenarios" },
  { "replay", "run a playbook against recorded metrics" },
  { "backtest", "re-decide past rollouts from their journals under another playbook" },
  { "scrape", "print what a /metrics target exposes" },
  { "repl", "a local REPL with the host API and a playbook's sources and routers" },
  { "attach", "attach to a running rollout's control socket" },
  { "ctl", "send one command to a running rollout" },
  { "watch", "a live view of a running rollout" },
  { "report", "render a journal as HTML, Markdown or JSON" },
  { "agent", "fleet mode: drive many rollouts coordinated through etcd" },
  { "submit", "fleet mode: store a rollout in etcd for the agents" },
  { "list", "fleet mode: every rollout in etcd" },
  { "test", "run the specs" },
  { "version", "print the version" },
  { "help", "show the usage of rollout or of a command" },
}

local function names()
  local out = {}
  for _, c in ipairs(COMMANDS) do out[#out + 1] = c[1] end
  return out
end

local function is_command(name)
  for _, c in ipairs(COMMANDS) do if c[1] == name then return true end end
  return false
end

local function load_command(name)
  -- lazy: only the command asked for is loaded (its name comes from argv)
  local ok, mod = pcall(require, "rollout.cmd." .. name)
  if ok then return mod end
  if tostring(mod):find("module 'rollout.cmd." .. name .. "' not found", 1, true) then return nil, "missing" end
  error(mod, 0)
end

local function width()
  return term.width(1)
end

local function usage(out)
  out:write("usage: rollout [--clock=real|virtual] COMMAND [ARGS...]\n",
            "       rollout [--clock=real|virtual] FILE.lua [ARGS...]   run a script with the host API\n",
            "       rollout --help | --version\n\n",
            "commands:\n")
  for _, c in ipairs(COMMANDS) do
    local ok, mod = pcall(load_command, c[1])
    local summary = ok and type(mod) == "table" and mod.summary or c[2]
    out:write(args.wrap(summary, math.min(width(), 100), string.rep(" ", 13), string.format("  %-10s ", c[1])), "\n")
  end
  out:write("\noptions:\n",
            "  --clock=real|virtual   the clock scripts run under (default real)\n",
            "  -h, --help             show this help and exit\n",
            "  --version              print the version and exit\n",
            "\n'rollout help COMMAND' or 'rollout COMMAND --help' explains a command and every flag it takes.\n",
            "exit codes: 0 promoted/ok, 1 rolled back, 2 usage or config error, 3 paused, aborted or failed,\n",
            "            4 (run) the journal is incomplete\n")
end

local function usage_error(msg)
  io.stderr:write("rollout: ", msg, "\nTry 'rollout --help'.\n")
  return 2
end

local function unknown_command(cmd)
  local s = args.suggest(cmd, names())
  return usage_error("unknown command '" .. cmd .. "'" .. (s and (" (did you mean '" .. s .. "'?)") or ""))
end

--- The usage of one command, from its declaration (rollout.args).
local function command_help(name)
  if name == "help" then
    return "usage: rollout help [COMMAND]\n\nShow the usage of rollout, or of COMMAND with every flag it takes.\n"
  end
  local mod, why = load_command(name)
  if not mod then return nil, why end
  return args.help(name, mod, width())
end

local function help(name)
  if not name then usage(io.stdout); return 0 end
  if not is_command(name) then return unknown_command(name) end
  local text = command_help(name)
  if not text then
    io.stderr:write("rollout: command '" .. name .. "' is not available in this build yet\n")
    return 2
  end
  io.stdout:write(text)
  return 0
end

local function run_script(path, argv, first)
  local chunk, err = loadfile(path, "t")
  if not chunk then
    io.stderr:write("rollout: ", err, "\n")
    return 2
  end
  local arg = { [-1] = argv[0], [0] = path }
  for i = first + 1, #argv do arg[#arg + 1] = argv[i] end
  _G.arg = arg
  local r = chunk(table.unpack(arg))
  if math.type(r) == "integer" then return r end
  return 0
end

function M.main(argv)
  M.install_globals()
  local i = 1
  while argv[i] and argv[i]:sub(1, 1) == "-" do
    local a = argv[i]
    if a == "--help" or a == "-h" then usage(io.stdout); return 0
    elseif a == "--version" then print("rollout " .. rollout.version); return 0
    elseif a:match("^%-%-clock=") then
      local c = a:match("^%-%-clock=(.*)$")
      if c ~= "real" and c ~= "virtual" then return usage_error("--clock must be real or virtual, not '" .. c .. "'") end
      rollout.clock(c)
    else
      local s = a:match("^%-%-([%w%-]+)") and args.suggest(a:match("^%-%-([%w%-]+)"), { "clock", "help", "version" })
      return usage_error("unknown option '" .. a .. "'" .. (s and (" (did you mean '--" .. s .. "'?)") or ""))
    end
    i = i + 1
  end
  local cmd = argv[i]
  if not cmd then usage(io.stderr); return 2 end
  if cmd:match("%.lua$") and not is_command(cmd) then return run_script(cmd, argv, i) end
  if not is_command(cmd) then return unknown_command(cmd) end
  local rest = {}
  for j = i + 1, #argv do rest[#rest + 1] = argv[j] end
  if cmd == "help" then
    if #rest > 1 then return usage_error("help takes at most one command") end
    if rest[1] == "-h" or rest[1] == "--help" then return help("help") end
    return help(rest[1])
  end
  if args.wants_help(rest) then return help(cmd) end
  local mod = load_command(cmd)
  if not mod then
    io.stderr:write("rollout: command '" .. cmd .. "' is not available in this build yet\n")
    return 2
  end
  return mod.main(rest)
end

return M

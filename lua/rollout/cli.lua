-- rollout.cli: the command line. main.c runs M.main(argv) as the main task; its return
-- value is the exit code (0 ok/promoted, 1 rolled back, 2 usage or config, 3 aborted/failed).
-- Each command lives in lua/rollout/cmd/<name>.lua and exports main(args) -> code.
local M = {}

local HOST_GLOBALS = {
  http = true, json = true, yaml = true, proc = true, fs = true, units = true, net = true,
  promtext = true, histogram = true, stats = true,
}

--- Give scripts the host API as globals: `rollout` now, the rest on first use.
function M.install_globals()
  _G.rollout = require("rollout")
  setmetatable(_G, {
    __index = function(_, k)
      if HOST_GLOBALS[k] then
        local ok, mod = pcall(require, "rollout." .. k)
        if ok then rawset(_G, k, mod); return mod end
      end
      return nil
    end,
  })
end

local COMMANDS = {
  { "run", "run a playbook: rollout run PLAYBOOK [--config FILE] [--set k=v] [--json]" },
  { "check", "validate a playbook and its router without side effects" },
  { "simulate", "run a playbook in virtual time against a scenario" },
  { "verify", "policy tests: rollout verify PLAYBOOK SCENARIO|DIR... [--junit FILE] [--json]" },
  { "replay", "run a playbook against recorded metrics" },
  { "scrape", "print what a /metrics target exposes: rollout scrape URL|FILE [--json]" },
  { "repl", "a local REPL with the host API and a playbook's sources and routers" },
  { "attach", "attach to a running rollout's control socket" },
  { "ctl", "send one command to a running rollout" },
  { "watch", "a live view of a running rollout: rollout watch SOCKET | --etcd URL ROLLOUT" },
  { "report", "render a journal as HTML, Markdown or JSON" },
  { "agent", "fleet mode: drive many rollouts coordinated through etcd: rollout agent --etcd URL" },
  { "submit", "fleet mode: store a rollout in etcd for the agents: rollout submit PLAYBOOK --etcd URL" },
  { "list", "fleet mode: every rollout in etcd, its owner, stage, weight and state" },
  { "test", "run the specs: rollout test [PATH...] [--filter TEXT]" },
  { "version", "print the version" },
}

local function usage(out)
  out:write("usage: rollout [--clock=real|virtual] COMMAND [ARGS...]\n",
            "       rollout [--clock=real|virtual] FILE.lua [ARGS...]   run a script with the host API\n\n",
            "commands:\n")
  for _, c in ipairs(COMMANDS) do out:write(string.format("  %-10s %s\n", c[1], c[2])) end
  out:write("\nexit codes: 0 promoted/ok, 1 rolled back, 2 usage or config error, 3 paused, aborted or failed\n")
end

local function usage_error(msg)
  io.stderr:write("rollout: ", msg, "\nTry 'rollout --help'.\n")
  return 2
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

local function is_command(name)
  for _, c in ipairs(COMMANDS) do if c[1] == name then return true end end
  return false
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
      return usage_error("unknown option '" .. a .. "'")
    end
    i = i + 1
  end
  local cmd = argv[i]
  if not cmd then usage(io.stderr); return 2 end
  if cmd == "help" then usage(io.stdout); return 0 end
  if cmd == "version" then print("rollout " .. rollout.version); return 0 end
  if cmd:match("%.lua$") and not is_command(cmd) then return run_script(cmd, argv, i) end
  if not is_command(cmd) then return usage_error("unknown command '" .. cmd .. "'") end
  local args = {}
  for j = i + 1, #argv do args[#args + 1] = argv[j] end
  if cmd == "test" then return require("rollout.testing").main(args) end
  local ok, mod = pcall(require, "rollout.cmd." .. cmd)
  if not ok then
    if tostring(mod):find("module 'rollout.cmd." .. cmd .. "' not found", 1, true) then
      io.stderr:write("rollout: command '" .. cmd .. "' is not available in this build yet\n")
      return 2
    end
    error(mod, 0)
  end
  return mod.main(args)
end

return M

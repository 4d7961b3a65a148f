-- rollout ctl SOCKET COMMAND [ARGS...] [--json] [--timeout D]
-- Sends one command (or one line of Lua) to a running rollout's control socket and prints
-- the answer: the text a person would see, or with --json the response's value as JSON.
-- SOCKET is the socket's path, or a service name looked up in the default run directory.
--
--   rollout ctl /run/rollout/dwcp-v3.sock status
--   rollout ctl dwcp-v3 abort "p99 regression seen by support"
--   rollout ctl dwcp-v3 set weight 10
--   rollout ctl dwcp-v3 --json signals
--
-- Exit codes: 0 the rollout did it (or answered), 1 it refused the command or the Lua
-- failed (the message says why), 2 usage error, 3 the socket cannot be reached.
local args = require("rollout.args")
local control = require("rollout.control")
local json = require("rollout.json")
local units = require("rollout.units")

local M = {}
M.summary = "send one command (or one line of Lua) to a running rollout"
M.usage = { "rollout ctl SOCKET COMMAND [ARGS...] [--json] [--timeout DURATION]",
  "rollout ctl --etcd URL [--prefix P] [--wait DURATION] [--who NAME] [--json] ROLLOUT COMMAND [ARG]" }
M.description = "Sends one command to a running rollout's control socket and prints the answer. SOCKET is "
  .. "the socket's path, or a service name looked up in the default run directory. Commands: status, "
  .. "signals, pause [REASON], resume, promote, promote --full, abort [REASON], retry, set weight N, "
  .. "events [N], help; anything else is Lua evaluated inside the engine. Words after COMMAND belong to "
  .. "it. With --etcd the command goes through etcd to the agent that owns ROLLOUT (fleet mode: status, "
  .. "pause, resume, promote, promote_full, abort, retry, set_weight).\n\n"
  .. "  rollout ctl dwcp-v3 status\n"
  .. "  rollout ctl dwcp-v3 abort \"p99 regression seen by support\"\n"
  .. "  rollout ctl /run/rollout/dwcp-v3.sock set weight 10"
M.options = {
  { "--json", "print the response's value as JSON instead of text" },
  { "--timeout DURATION", "how long to wait for the answer (default 60s)" },
  { "--etcd URL", "fleet mode: send the command through this etcd to the rollout's owner" },
  { "--prefix P", "fleet mode: the key prefix the fleet uses (default /rollout/)" },
  { "--wait DURATION", "fleet mode: how long to wait for the owner's acknowledgement (default 10s)" },
  { "--who NAME", "fleet mode: who sends the command, for the journal (default $SUDO_USER, $USER)" },
}
M.exit = "0 the rollout did it (or answered), 1 it refused the command or the Lua failed, 2 usage error, "
  .. "3 the socket cannot be reached (fleet mode: not acknowledged in time)"

-- --json and --timeout are ours; every other word (`promote --full`) belongs to the command.
local function parse(argv)
  local opts, pos = {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do pos[#pos + 1] = argv[j] end
      break
    elseif a == "--json" then opts.json = true
    elseif a == "--timeout" then
      i = i + 1
      if not argv[i] then return nil, "option '--timeout' needs a value" end
      opts.timeout = argv[i]
    elseif a:match("^%-%-timeout=") then opts.timeout = a:match("=(.*)$")
    elseif a:match("^%-%-?%a") and #pos < 2 then
      -- before COMMAND a dash-word can only be one of ours (after it, it is the command's)
      local name = a:match("^%-%-([%w%-_]+)")
      local s = name and args.suggest(name, { "json", "timeout", "etcd", "help" })
      return nil, "unknown option '" .. a .. "'" .. (s and (" (did you mean '--" .. s .. "'?)") or "")
    else pos[#pos + 1] = a end
    i = i + 1
  end
  return opts, pos
end

function M.main(argv)
  for _, a in ipairs(argv) do if a == "--etcd" or a:match("^%-%-etcd=") then return require("rollout.fleet").ctl_main(argv) end end -- FLEET: `rollout ctl --etcd URL ROLLOUT COMMAND` goes through etcd (rollout.fleet)
  local opts, pos = parse(argv)
  if not opts then return args.usage_error("ctl", pos, M.usage) end
  if #pos < 2 then return args.usage_error("ctl", "expected a socket and a command", M.usage) end
  local timeout = 60
  if opts.timeout then
    local ok, t = pcall(units.duration, opts.timeout)
    if not ok then return args.usage_error("ctl", "--timeout: " .. tostring(t), M.usage) end
    timeout = t
  end
  local path = control.resolve(pos[1])
  local words = {}
  for i = 2, #pos do words[#words + 1] = pos[i] end
  local client, err = control.connect(path, 5)
  if not client then
    io.stderr:write("rollout ctl: ", tostring(err), "\n")
    return 3
  end
  local res, rerr = client:request(table.concat(words, " "), timeout)
  client:close()
  if not res then
    io.stderr:write("rollout ctl: ", path, ": ", tostring(rerr), "\n")
    return 3
  end
  if res.incomplete then
    io.stderr:write("rollout ctl: incomplete statement (send it on one line)\n")
    return 1
  end
  if opts.json then
    local v = res.value
    if not res.ok then v = { error = res.error } end
    io.stdout:write(json.encode(v == nil and json.null or v, { sort = true, non_finite = "null" }), "\n")
  elseif res.ok then
    if res.text and res.text ~= "" then io.stdout:write(res.text, "\n") end
  end
  if not res.ok then
    io.stderr:write("rollout ctl: ", tostring(res.error or res.text), "\n")
    return 1
  end
  return 0
end

return M

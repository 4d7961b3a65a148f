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
-- Exit codes (rollout.exit), the same with a socket and with --etcd (fleet mode): OK 0 the
-- rollout did it (or answered), REFUSED 1 it refused the command (or the Lua failed, or the
-- rollout has ended), USAGE 2 usage error, NOT_FOUND 2 no such rollout (no socket at the
-- path, no such id in etcd), UNREACHABLE 3 the socket or etcd cannot be reached, or the owner
-- did not acknowledge the command within --wait (it stays queued for the owner).
-- Error policy: failures are exit codes as above with the reason on stderr, the code picked
-- from the reason word the client returns; nothing raises (an unexpected error reaches
-- main.c: printed, exit 3).
local args = require("rollout.args")
local control = require("rollout.control")
local json = require("rollout.json")
local units = require("rollout.units")
local rollout = require("rollout")
local etcd = require("rollout.etcd")
local fleet_keys = require("rollout.fleet.keys")
local fleet_client = require("rollout.fleet.client")
local exit = require("rollout.exit")

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
M.exit = exit.describe({
  { "OK", "the rollout did it (or answered)" },
  { "REFUSED", "it refused the command, the Lua failed or the rollout has ended" },
  { "USAGE", "usage error" },
  { "NOT_FOUND", "no such rollout" },
  { "UNREACHABLE", "the socket or etcd cannot be reached, or (fleet mode) the owner did not acknowledge in time" },
})

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

local FLEET_COMMANDS = { status = true, pause = true, resume = true, promote = true, promote_full = true,
  abort = true, retry = true, set_weight = true }

local function status_line(id, s)
  local st = s.status
  local w = st.weights and string.format("%d/%d", st.weights.baseline or 0, st.weights.canary or 0) or "-"
  local owner = s.owner and s.owner.agent or ("none" .. (st.agent and (" (last: " .. st.agent .. ")") or ""))
  local state = s.done and s.done.outcome or st.state or "?"
  local reason = (s.done and s.done.reason) or st.reason
  return string.format("%s: %s%s, stage %s (%s/%s), weights baseline/canary %s, owner %s", id, state,
    reason and (" (" .. tostring(reason) .. ")") or "", tostring(st.stage or "-"), tostring(st.stage_index or "-"),
    tostring(st.stages or "-"), w, owner)
end

-- `rollout ctl --etcd URL ROLLOUT COMMAND [ARG]`: status reads etcd; the others are queued
-- for the owner, which applies each exactly once and acknowledges it. Exit codes as for a
-- socket (see the header): 1 refused (also: the rollout has ended), 3 etcd unreachable or
-- not acknowledged within --wait (the command stays queued for the owner).
local function fleet_main(argv)
  local opts, pos = args.parse(argv, { etcd = "value", prefix = "value", wait = "value", json = "flag", who = "value" })
  if not opts then return args.usage_error("ctl", pos, M.usage) end
  if not opts.etcd then return args.usage_error("ctl", "--etcd URL is required in fleet mode", M.usage) end
  local id, name, arg = pos[1], pos[2], pos[3]
  if not id or not name or #pos > 3 then return args.usage_error("ctl", "expected ROLLOUT COMMAND [ARG]", M.usage) end
  if not FLEET_COMMANDS[name] then return args.usage_error("ctl", "unknown command '" .. name .. "'", M.usage) end
  local c = etcd.new({ url = opts.etcd, timeout = 5 })
  local K = fleet_keys.keys(opts.prefix)
  local s, err, why = fleet_client.status(c, K, id)
  if not s then io.stderr:write("rollout ctl: ", err, "\n"); return exit.for_reason(why) end
  if name == "status" then
    if opts.json then print(json.encode(s, { non_finite = "null" })) else print(status_line(id, s)) end
    return exit.OK
  end
  if s.done then
    io.stderr:write("rollout ctl: ", id, " has ended (", tostring(s.done.outcome), ")\n")
    return exit.REFUSED
  end
  local who = opts.who or os.getenv("SUDO_USER") or os.getenv("USER") or "operator"
  local ack_key, cerr, cwhy = fleet_client.command(c, K, id, name, arg, who)
  if not ack_key then io.stderr:write("rollout ctl: ", cerr, "\n"); return exit.for_reason(cwhy) end
  local wait = units.duration(opts.wait or 10)
  local deadline = rollout.now() + wait
  while rollout.now() < deadline do
    local v = c:get(ack_key)
    if v then
      local ack = fleet_keys.decode(v) or {}
      if opts.json then print(json.encode(ack, { non_finite = "null" })) end
      if ack.ok then
        if not opts.json then print(string.format("%s: %s acknowledged by %s", id, name, tostring(ack.agent))) end
        return exit.OK
      end
      io.stderr:write(string.format("rollout ctl: %s: %s refused by %s: %s\n", id, name, tostring(ack.agent), tostring(ack.error)))
      return exit.REFUSED
    end
    rollout.sleep(0.1)
  end
  io.stderr:write(string.format("rollout ctl: %s: %s queued, not acknowledged within %s s (owner: %s); "
    .. "the owner applies it when it reads it\n",
    id, name, tostring(wait), s.owner and s.owner.agent or "none"))
  return exit.UNREACHABLE
end

function M.main(argv)
  for _, a in ipairs(argv) do if a == "--etcd" or a:match("^%-%-etcd=") then return fleet_main(argv) end end
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
  local client, err, why = control.connect(path, 5)
  if not client then
    io.stderr:write("rollout ctl: ", tostring(err), "\n")
    return exit.for_reason(why)
  end
  local res, rerr = client:request(table.concat(words, " "), timeout)
  client:close()
  if not res then
    io.stderr:write("rollout ctl: ", path, ": ", tostring(rerr), "\n")
    return exit.UNREACHABLE
  end
  if res.incomplete then
    io.stderr:write("rollout ctl: incomplete statement (send it on one line)\n")
    return exit.REFUSED
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
    return exit.REFUSED
  end
  return exit.OK
end

return M

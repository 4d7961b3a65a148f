-- rollout agent --etcd URL [--name NAME] [--prefix P] [--ttl 10s] [--scan S] [--poll S]
--               [--dir DIR] [--no-journal] [--max N] [--json] [--verbose]
-- A long-running engine that drives many rollouts at once, each a task on the one loop,
-- coordinated through etcd with the other agents (rollout.fleet says how). It takes
-- unowned rollouts (`rollout submit`), keeps them alive with its lease, replicates their
-- journals to etcd (and to DIR/journal/<id>.jsonl), applies commands (`rollout ctl
-- --etcd`), and takes over the rollouts of agents that died. SIGINT/SIGTERM hand every
-- rollout back (traffic stays where it is) so the other agents take them at once.
-- Output: one line per decision; every event as a JSON line with --json.
-- Error policy: usage errors (a missing --etcd, a bad --name or duration) are printed and
-- return 2; once running, etcd failures are operational (rollout.fleet retries them and
-- journals what it did) and never end the agent; it returns 0 when it has handed its
-- rollouts back. An unexpected error propagates to main.c (printed, exit 3).
local args = require("rollout.args")
local units = require("rollout.units")
local fleet = require("rollout.fleet")
local exit = require("rollout.exit")

local M = {}
M.summary = "fleet mode: an engine that drives many rollouts, coordinated through etcd"
M.usage = "rollout agent --etcd URL [OPTIONS]"
M.description = "A long-running engine that takes unowned rollouts (rollout submit), keeps them alive with "
  .. "its etcd lease, replicates their journals to etcd, applies commands (rollout ctl --etcd) and takes "
  .. "over the rollouts of agents that died. SIGINT or SIGTERM hands every rollout back (traffic stays "
  .. "where it is) so the other agents take them at once."
M.options = {
  { "--etcd URL", "the etcd endpoint (required)" },
  { "--name NAME", "this agent's name: letters, digits, '.', '_' and '-' (default HOST-PID)" },
  { "--prefix P", "the key prefix the fleet uses (default /rollout/)" },
  { "--ttl DURATION", "the lease's time to live: how soon other agents take over after a crash (default 10s)" },
  { "--scan DURATION", "how often to look for unowned rollouts (default ttl/8)" },
  { "--poll DURATION", "how often to look for operator commands (default 0.5s)" },
  { "--dir DIR", "local journals go to DIR/journal/ID.jsonl (default .rollout/fleet/NAME)" },
  { "--no-journal", "keep no local journal copies (etcd only)" },
  { "--max N", "drive at most N rollouts at once" },
  { "--json", "print every event as a JSON line" },
  { "--verbose", "also print the events that have no line of their own" },
}
M.exit = exit.describe({ { "OK", "stopped by a signal" }, { "USAGE", "usage error" } })

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("agent", pos, M.usage) end
  if #pos > 0 then return args.usage_error("agent", "unexpected argument '" .. pos[1] .. "'", M.usage) end
  if not opts.etcd then return args.usage_error("agent", "--etcd URL is required", M.usage) end
  if opts.name and not fleet.valid_id(opts.name) then
    return args.usage_error("agent", "--name: letters, digits, '.', '_' and '-' only", M.usage)
  end
  local function dur(k)
    if opts[k] == nil then return nil end
    local d, err = units.parse("duration", opts[k])
    if not d or d <= 0 then error({ usage = "--" .. k .. ": " .. tostring(err or "must be > 0") }) end
    return d
  end
  local ok, a = pcall(function()
    return fleet.agent({ etcd = opts.etcd, name = opts.name, prefix = opts.prefix, ttl = dur("ttl"), scan = dur("scan"),
      poll = dur("poll"), dir = opts.dir, journal = not opts.no_journal, json = opts.json, verbose = opts.verbose,
      max = opts.max and math.tointeger(tonumber(opts.max)) or nil })
  end)
  if not ok then
    if type(a) == "table" and a.usage then return args.usage_error("agent", a.usage, M.usage) end
    error(a, 0)
  end
  io.stdout:setvbuf("line")
  return a:run()
end

return M

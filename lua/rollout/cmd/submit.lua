-- rollout submit PLAYBOOK --etcd URL [--set k=v ...] [--config FILE] [--scenario FILE]
--                [--simulated-router] [--id ID] [--prefix P] [--json]
-- Stores a rollout in etcd for the agents (`rollout agent`): the playbook with the .lua
-- files of its directory, the --set list and the optional config, validated here first
-- (nothing is stored when the playbook has errors). --scenario FILE replaces the
-- playbook's sources with synthetic traffic from a scenario (docs/semantics.md format, on the
-- real clock; rollout.fleet_sim); --simulated-router replaces its router likewise.
-- Prints the rollout's id. Exit (rollout.exit) OK 0 stored, USAGE 2 usage or playbook error
-- (or the id exists already, or is invalid), UNREACHABLE 3 etcd cannot be reached or read.
-- Error policy: usage and playbook errors (file:line: key: problem) return 2 with nothing
-- stored; a failure to store is printed and returns the code of the client's reason word
-- (unreachable 3, exists/invalid 2). Nothing raises.
local args = require("rollout.args")
local json = require("rollout.json")
local playbook = require("rollout.playbook")
local fleet = require("rollout.fleet")
local etcd = require("rollout.etcd")
local scenario = require("rollout.sim.scenario")
local exit = require("rollout.exit")

local M = {}
M.summary = "fleet mode: validate a rollout and store it in etcd for the agents"
M.usage = "rollout submit PLAYBOOK --etcd URL [OPTIONS]"
M.description = "Stores a rollout in etcd for the agents (rollout agent): the playbook with the .lua files of "
  .. "its directory, the --set list and the config, validated here first (nothing is stored when the "
  .. "playbook has errors). Prints the rollout's id."
M.options = {
  { "--etcd URL", "the etcd endpoint (required)" },
  { "--set KEY=VALUE", "override a playbook value before validation, e.g. --set stages[2].hold=20s or "
    .. "--set sources[1].url=http://prom:9090; numbers and booleans are read as such, a value starting with "
    .. "[ or { as JSON; repeatable", list = true },
  { "--config FILE", "map a runbook CanaryDeployment YAML onto the playbook (stages, golden signals, "
    .. "rollback triggers, feature flags, abTest); keys rollout cannot use are warned about with file and line" },
  { "--scenario FILE", "replace the playbook's sources with a scenario's synthetic traffic, on the real clock" },
  { "--simulated-router", "replace the playbook's router with a simulated one" },
  { "--id ID", "the rollout's id (default: generated from the service and the time)" },
  { "--prefix P", "the key prefix the fleet uses (default /rollout/)" },
  { "--json", "print {id, ...} as JSON" },
}
M.exit = exit.describe({ { "OK", "stored" }, { "USAGE", "usage or playbook error, or the id exists already" },
  { "UNREACHABLE", "etcd cannot be reached or read" } })

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("submit", pos, M.usage) end
  if #pos ~= 1 then return args.usage_error("submit", "expected one playbook", M.usage) end
  if not opts.etcd then return args.usage_error("submit", "--etcd URL is required", M.usage) end
  local pb, errs = playbook.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then
    return playbook.print_errors(errs)
  end
  if opts.scenario then
    local sc, serrs = scenario.load(opts.scenario)
    if not sc then return playbook.print_errors(serrs) end
  elseif #pb.sources == 0 then
    io.stderr:write("rollout submit: the playbook has no metric source (or pass --scenario FILE)\n")
    return 2
  end
  if not pb.router and not opts.simulated_router then
    io.stderr:write("rollout submit: the playbook names no router (or pass --simulated-router)\n")
    return 2
  end
  local who = os.getenv("SUDO_USER") or os.getenv("USER") or "unknown"
  local b, berr = fleet.bundle(pos[1], { sets = opts.set, config = opts.config, scenario = opts.scenario,
    simulated_router = opts.simulated_router, who = who })
  if not b then io.stderr:write("rollout submit: ", berr, "\n"); return 2 end
  local c = etcd.new({ url = opts.etcd, timeout = 5 })
  local id, err, why = fleet.submit(c, fleet.keys(opts.prefix), b, { id = opts.id, service = pb.service })
  if not id then
    io.stderr:write("rollout submit: ", err, "\n")
    return exit.for_reason(why)
  end
  if opts.json then print(json.encode({ id = id, service = pb.service })) else print(id) end
  return exit.OK
end

return M

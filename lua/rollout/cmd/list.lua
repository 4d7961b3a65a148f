-- rollout list --etcd URL [--prefix P] [--json]
-- Every rollout in etcd with its owner, state, stage and weights, then the live agents.
-- An owner "-" means nobody holds the rollout now (waiting for an agent, or ended).
-- Exit (rollout.exit) OK 0, USAGE 2, UNREACHABLE 3 when etcd cannot be reached or read.
-- Error policy: usage errors return 2; an etcd that cannot be read is printed and returns
-- the code of the client's reason (3); nothing raises.
local args = require("rollout.args")
local json = require("rollout.json")
local fleet = require("rollout.fleet")
local etcd = require("rollout.etcd")
local exit = require("rollout.exit")

local M = {}
M.summary = "fleet mode: every rollout in etcd with its owner, state, stage and weights"
M.usage = "rollout list --etcd URL [--prefix P] [--json]"
M.description = "Lists every rollout stored in etcd with its owner, state, stage and weights, then the "
  .. "live agents. An owner \"-\" means nobody holds the rollout now (waiting for an agent, or ended)."
M.options = {
  { "--etcd URL", "the etcd endpoint (required)" },
  { "--prefix P", "the key prefix the fleet uses (default /rollout/)" },
  { "--json", "print the rollouts and agents as one JSON object" },
}
M.exit = exit.describe({ { "OK", "listed" }, { "USAGE", "usage error" },
  { "UNREACHABLE", "etcd cannot be reached or read" } })

local function age(ts)
  if not ts then return "-" end
  local d = math.max(0, rollout.time() - ts)
  if d < 60 then return string.format("%ds ago", math.floor(d)) end
  if d < 3600 then return string.format("%dm ago", math.floor(d / 60)) end
  return string.format("%dh ago", math.floor(d / 3600))
end

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("list", pos, M.usage) end
  if #pos > 0 then return args.usage_error("list", "unexpected argument '" .. pos[1] .. "'", M.usage) end
  if not opts.etcd then return args.usage_error("list", "--etcd URL is required", M.usage) end
  local c = etcd.new({ url = opts.etcd, timeout = 5 })
  local rows, agents, why = fleet.list(c, fleet.keys(opts.prefix))
  if not rows then io.stderr:write("rollout list: ", agents, "\n"); return exit.for_reason(why) end
  if opts.json then
    print(json.encode({ rollouts = json.array(rows), agents = json.array(agents) }, { non_finite = "null" }))
    return exit.OK
  end
  local fmt = "%-36s %-16s %-14s %-22s %-16s %-8s %s\n"
  io.stdout:write(string.format(fmt, "ROLLOUT", "SERVICE", "OWNER", "STATE", "STAGE", "CANARY", "UPDATED"))
  for _, r in ipairs(rows) do
    local state = tostring(r.state or "?")
    if r.reason and r.state ~= "stage" then state = state .. " " .. tostring(r.reason) end
    if r.etcd_paused then state = state .. " (etcd)" end
    local stage = r.stage and string.format("%s %s/%s", r.stage, tostring(r.stage_index or "?"), tostring(r.stages or "?")) or "-"
    io.stdout:write(string.format(fmt, r.id, tostring(r.service or "-"), r.owner or "-", state:sub(1, 22), stage:sub(1, 16),
      r.weights and (tostring(r.weights.canary) .. "%") or "-", age(r.updated)))
  end
  io.stdout:write(string.format("\n%d rollout(s); agents:", #rows))
  if #agents == 0 then io.stdout:write(" none") end
  for _, a in ipairs(agents) do io.stdout:write(string.format(" %s (%d)", a.name, a.rollouts)) end
  io.stdout:write("\n")
  return exit.OK
end

return M

-- rollout watch SOCKET
-- rollout watch --etcd URL [--prefix P] ROLLOUT
-- A live view of a running rollout from another terminal: its stages with weights and
-- status, the current hold and the time left, each trigger's state, the last gate's values
-- against its thresholds, and the recent events (rollout.watch, rollout.watch_view). On a
-- terminal the view is redrawn in place; otherwise one line per change. NO_COLOR turns
-- colour off. SOCKET is the control socket's path or a service name (as for rollout ctl).
--
-- Exit codes (rollout.exit): the rollout's own when it ends (0 promoted, 1 rolled back, 3
-- paused, aborted or failed), 2 usage or no such rollout (no socket at the path, no such id
-- in etcd), 3 the rollout cannot be reached or went away before it ended.
-- Error policy: the exit codes above, the reason on stderr; nothing raises.
local args = require("rollout.args")
local control = require("rollout.control")
local exit = require("rollout.exit")
local watch = require("rollout.watch")

local M = {}
M.summary = "a live view of a running rollout from another terminal"
M.usage = { "rollout watch SOCKET", "rollout watch --etcd URL [--prefix P] ROLLOUT" }
M.description = "Shows a running rollout: its stages with weights and status, the current hold and the time "
  .. "left, each trigger's state, the last gate's values against its thresholds, and the recent events. On "
  .. "a terminal the view is redrawn in place; otherwise one line per change. NO_COLOR turns colour off. "
  .. "SOCKET is the control socket's path or a service name (as for rollout ctl)."
M.options = {
  { "--etcd URL", "fleet mode: follow ROLLOUT through this etcd instead of a control socket" },
  { "--prefix P", "fleet mode: the key prefix the fleet uses (default /rollout/)" },
}
M.exit = exit.describe({ { "PROMOTED", "the rollout was promoted" }, { "ROLLED_BACK", "it was rolled back" },
  { "USAGE", "usage error" }, { "NOT_FOUND", "no such rollout" }, { "PAUSED", "it paused, was aborted or failed (its own code when it ends)" },
  { "UNREACHABLE", "the rollout cannot be reached or went away before it ended" } })
M.docs = "[operations](operations.md#rollout-watch-a-live-view-from-another-terminal)"   -- for docs/cli.md

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("watch", pos, M.usage) end
  if #pos ~= 1 then return args.usage_error("watch", opts.etcd and "expected one rollout id" or "expected one control socket", M.usage) end
  local src, err, why
  if opts.etcd then src, err, why = watch.etcd(opts.etcd, pos[1], opts.prefix)
  else src, err, why = watch.socket(control.resolve(pos[1])) end
  if not src then
    io.stderr:write("rollout watch: ", pos[1], ": ", tostring(err), "\n")
    return exit.for_reason(why or "unreachable")
  end
  local outcome, werr = watch.run(src)
  if not outcome then
    io.stderr:write("rollout watch: ", tostring(werr), "\n")
    return exit.UNREACHABLE
  end
  return exit.OUTCOME[outcome.outcome] or exit.FAILED
end

return M

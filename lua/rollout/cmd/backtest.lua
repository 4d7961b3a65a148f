-- rollout backtest PLAYBOOK --journals DIR [--json] [--all] [--set k=v] [--config FILE]
-- Re-decides every past rollout journaled under DIR (recursively, *.jsonl) under PLAYBOOK,
-- from the values the journals recorded (rollout.backtest), and prints the decisions that
-- would change: rollout, old outcome and reason, new outcome and reason, when. --all lists
-- unchanged rollouts too; --json prints one JSON document. Exit 0 (whether or not anything
-- changes), 2 for bad input (a playbook that does not load, no journal, a corrupt journal).
-- Error policy: every input problem (usage, a playbook that does not load, printed as
-- file:line: key: problem, no journal, a corrupt one) is printed and returns 2 before any
-- decision is printed; nothing raises.
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local json = require("rollout.json")
local backtest = require("rollout.backtest")
local exit = require("rollout.exit")

local M = {}
M.summary = "re-decide past rollouts from their journals under another playbook"
M.usage = "rollout backtest PLAYBOOK --journals DIR [OPTIONS]"
M.description = "Re-decides every rollout journaled under DIR (recursively, *.jsonl) under PLAYBOOK, from "
  .. "the signal values the journals recorded at every evaluation and gate (no metrics store needed), "
  .. "and prints the decisions that would change: rollout, old outcome and reason, new outcome and reason, when."
M.options = {
  { "--journals DIR", "the journal directory to read (e.g. .rollout/journal)" },
  { "--json", "print one JSON document instead of the table" },
  { "--all", "list every rollout, not only those whose decision would change" },
  { "--set KEY=VALUE", "override a playbook value before validation, e.g. --set thresholds.error_rate=1%; "
    .. "repeatable", list = true },
  { "--config FILE", "map a runbook CanaryDeployment YAML onto the playbook" },
}
M.exit = exit.describe({ { "OK", "done (changes or not)" }, { "USAGE", "bad input" } })
M.docs = "[back-testing a playbook](semantics.md#back-testing-a-playbook-rollout-backtest)"

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("backtest", pos, M.usage) end
  if #pos ~= 1 then return args.usage_error("backtest", "expected one playbook", M.usage) end
  if not opts.journals then return args.usage_error("backtest", "--journals DIR is required", M.usage) end
  local pb, errs = playbook.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then
    return playbook.print_errors(errs)
  end
  local files = backtest.files(opts.journals)
  if #files == 0 then
    io.stderr:write("rollout backtest: no journal (*.jsonl) under ", opts.journals, "\n")
    return 2
  end
  local rows, err = backtest.run(pb, files)
  if not rows then
    io.stderr:write("rollout backtest: ", tostring(err), "\n")
    return 2
  end
  if opts.json then
    local out = { playbook = pos[1], journals = #files, rollouts = #rows, changed = 0, rows = {} }
    for _, r in ipairs(rows) do
      if r.changed then out.changed = out.changed + 1 end
      if r.changed or opts.all then
        out.rows[#out.rows + 1] = { rollout = r.rollout, file = r.file, service = r.service or json.null,
          changed = r.changed, old = r.old, new = r.new, notes = r.notes }
      end
    end
    io.stdout:write(json.encode(out, { sort = true }), "\n")
  else
    io.stdout:write(backtest.table(rows, { all = opts.all }))
  end
  io.stdout:flush()
  return 0
end

return M

-- rollout verify PLAYBOOK SCENARIO|DIR... [--junit FILE] [--json] [--set k=v] [--config FILE]
-- Policy tests: every scenario runs through the playbook in virtual time (as `rollout
-- simulate` runs it) and its outcome is compared with the scenario's `expect`. Prints a
-- table (scenario, expected, got, result), or one JSON document with --json; --junit
-- writes JUnit XML for CI test reporters. Exit 0 when every scenario matches, 1 when any
-- does not, 2 for bad input (nothing runs until every playbook and scenario loads).
-- Error policy: bad input (usage, a playbook or scenario that does not load, printed as
-- file:line: key: problem; a --junit file that cannot be written) returns 2; a mismatch is
-- a result (exit 1), never an error. Nothing raises.
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local fs = require("rollout.fs")
local verify = require("rollout.verify")
local exit = require("rollout.exit")

local M = {}
M.summary = "policy tests: run a playbook against labelled scenarios and compare with their expect"
M.usage = "rollout verify PLAYBOOK SCENARIO|DIR... [OPTIONS]"
M.description = "Runs every scenario (a file, or every .lua file of a directory) through PLAYBOOK in "
  .. "virtual time, as rollout simulate does, and compares the outcome with the scenario's `expect`. "
  .. "Prints a table (scenario, expected, got, result). Nothing runs until every playbook and scenario loads."
M.options = {
  { "--junit FILE", "also write JUnit XML to FILE, for CI test reporters" },
  { "--json", "print one JSON document instead of the table" },
  { "--set KEY=VALUE", "override a playbook value before validation, e.g. --set stages[2].hold=20s or "
    .. "--set sources[1].url=http://prom:9090; numbers and booleans are read as such, a value starting with "
    .. "[ or { as JSON; repeatable", list = true },
  { "--config FILE", "map a runbook CanaryDeployment YAML onto the playbook (stages, golden signals, "
    .. "rollback triggers, feature flags, abTest); keys rollout cannot use are warned about with file and line" },
}
M.exit = exit.describe({ { "OK", "every scenario matches" }, { "UNMET", "one does not" }, { "USAGE", "bad input" } })
M.docs = "[policy tests](simulation.md#policy-tests-rollout-verify)"   -- for docs/cli.md

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("verify", pos, M.usage) end
  if #pos < 2 then return args.usage_error("verify", "expected a playbook and at least one scenario (file or directory)", M.usage) end
  local pb, errs = playbook.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then
    return playbook.print_errors(errs)
  end
  for _, w in ipairs(pb.warnings or {}) do io.stderr:write("warning: ", playbook.format_error(w), "\n") end
  local list, serrs = verify.load(table.move(pos, 2, #pos, 1, {}))
  if not list then return playbook.print_errors(serrs) end
  local results = verify.run(pb, list)
  if opts.junit then
    local ok, werr = fs.write_atomic(opts.junit, verify.junit(results, pos[1]))
    if not ok then
      io.stderr:write("rollout verify: cannot write ", opts.junit, ": ", tostring(werr), "\n")
      return 2
    end
  end
  io.stdout:write(opts.json and verify.json(results, pos[1]) or verify.table(results, pos[1]))
  io.stdout:flush()
  local _, failed = verify.counts(results)
  return failed == 0 and 0 or 1
end

return M

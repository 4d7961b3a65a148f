-- rollout.engine.preflight: the pre-flight checks before a deploy (the runbook's Step 1):
-- each check runs (playbook function under the hook budget, HTTP GET, argv command, or a
-- simulation's override) and is journaled; policy.preflight_skips decides what a skip is.
-- Part of the engine class (rollout.engine installs M.methods on it).
--
-- Error policy: raises nothing. A check that fails, raises, overruns its budget or timeout,
-- or returns something else than pass/fail/skip is status "fail" with the error as detail
-- (`preflight_check`). E:preflight returns the first failed check's name (or nil) after
-- `preflight_done`; the state machine aborts the rollout on it.
local http = require("rollout.http")
local hooks = require("rollout.engine.hooks")

local M = {}
local E = {}
M.methods = E

local function check_status(a, b)
  if a == true or a == "pass" then return "pass", b end
  if a == false or a == "fail" then return "fail", b end
  if a == "skip" or a == nil then return "skip", b end
  return "fail", "check returned " .. tostring(a)
end

function E:run_check(check)
  if self.env.simulate then
    local o = self.env.preflight and self.env.preflight[check.name]
    return o or "pass", o and "scenario" or "simulated"
  end
  if check.skip then return "skip", check.skip end
  if check.run then
    -- a pre-flight check is playbook code too: under the hook budget, bounded by its timeout
    local hb = self.pb.hook_budget or {}
    local ok, a, b = hooks.budgeted({ instructions = hb.instructions or hooks.HOOK_BUDGET.instructions,
      time = check.timeout or 60, memory = hb.memory or hooks.HOOK_BUDGET.memory }, check.run, self:hook_ctx({ check = check.name }))
    if not ok then return "fail", tostring(a) end
    return check_status(a, b)
  end
  if check.http then
    local r, err = http.request({ method = "GET", url = check.http, timeout = check.timeout or 5 })
    if not r then return "fail", err end
    local want = check.expect_status
    if (want and r.status ~= want) or (not want and (r.status < 200 or r.status > 299)) then
      return "fail", check.http .. " answered " .. r.status
    end
    return "pass", check.http .. " answered " .. r.status
  end
  if check.command then
    local ok, err = pcall(hooks.run_argv, check.command, check.timeout or 60)
    if ok then return "pass", table.concat(check.command, " ") end
    return "fail", tostring(err)
  end
  return "skip", "nothing to run"
end

function E:preflight()
  self.state = "preflight"
  local failed, counts, skipped = nil, { pass = 0, fail = 0, skip = 0 }, {}
  for _, check in ipairs(self.pb.preflight) do
    local status, detail = self:run_check(check)
    -- policy.preflight_skips = "fail": the runbook's `set -e`, a check that could not run fails
    if status == "skip" and self.pb.policy.preflight_skips == "fail" then
      status, detail = "fail", "skipped (" .. tostring(detail) .. ") and policy.preflight_skips = \"fail\""
    end
    counts[status] = counts[status] + 1
    self:emit("preflight_check", { check = check.name, status = status, detail = detail })
    if status == "skip" then skipped[#skipped + 1] = check.name end
    if status == "fail" and not failed then failed = check.name end
  end
  self:emit("preflight_done", { passed = counts.pass, failed = counts.fail, skipped = counts.skip,
    skipped_checks = #skipped > 0 and skipped or nil })
  self.preflight_skipped = #skipped > 0 and skipped or nil
  return failed
end

return M

-- rollout.exit: the exit codes, named, in one table, and the help text made from them.
-- A rollout's outcome (`run`, `simulate`, `replay`, `watch` when the rollout ends):
-- PROMOTED 0, ROLLED_BACK 1, USAGE 2, PAUSED/ABORTED/FAILED 3. An operator command's
-- result (`ctl`, `list`, `submit`, `watch`, `attach`, `agent`): OK 0, REFUSED 1, USAGE 2,
-- NOT_FOUND 2, UNREACHABLE 3 (the socket or etcd cannot be reached or read, or the owner
-- did not acknowledge in time). The checking commands (test, verify, repl) use UNMET 1 for
-- "the answer is no"; `run` alone uses INCOMPLETE 4. Operational failures carry a reason word ("not_found",
-- "unreachable", "refused", "exists", "invalid"); for_reason turns it into a code, so no
-- command picks its code by matching message text.
-- Error policy: pure data; an unknown code name or reason word raises (a programming error).
local M = {}

M.PROMOTED, M.ROLLED_BACK, M.USAGE, M.PAUSED, M.ABORTED, M.FAILED = 0, 1, 2, 3, 3, 3
M.OK, M.REFUSED, M.NOT_FOUND, M.UNREACHABLE = 0, 1, 2, 3
-- The answer is no (test, verify, repl on a pipe): a test failed, a scenario does not match.
M.UNMET = 1
-- `run` only: the rollout ended but its journal is incomplete (rollout.journal.EXIT_INCOMPLETE).
M.INCOMPLETE = 4

--- OUTCOME[outcome] -> the exit code of a rollout that ended with that outcome
M.OUTCOME = { promoted = M.PROMOTED, rolled_back = M.ROLLED_BACK, paused = M.PAUSED, aborted = M.ABORTED,
  failed = M.FAILED }

--- REASON[reason word] -> an operator command's exit code
M.REASON = { not_found = M.NOT_FOUND, unreachable = M.UNREACHABLE, refused = M.REFUSED,
  exists = M.USAGE, invalid = M.USAGE }

--- for_reason(reason) -> exit code   (raises on a reason word not in REASON)
function M.for_reason(reason)
  local code = M.REASON[reason]
  if not code then error("rollout.exit: unknown reason '" .. tostring(reason) .. "'", 2) end
  return code
end

local texts = {}

--- describe({{NAME, "what it means"}, ...}) -> "0 ..., 1 ..., 2 ... or ..."
-- The entries in ascending code order; two entries with one code are joined with " or ".
-- Every text made here is remembered (generated(text) says so), for the spec that checks
-- each command's M.exit comes from this table.
function M.describe(entries)
  local by_code, codes = {}, {}
  for _, e in ipairs(entries) do
    local code = M[e[1]]
    if type(code) ~= "number" then error("rollout.exit: unknown exit code name '" .. tostring(e[1]) .. "'", 2) end
    if not by_code[code] then by_code[code] = {}; codes[#codes + 1] = code end
    table.insert(by_code[code], e[2])
  end
  table.sort(codes)
  local parts = {}
  for _, code in ipairs(codes) do parts[#parts + 1] = code .. " " .. table.concat(by_code[code], " or ") end
  local text = table.concat(parts, ", ")
  texts[text] = true
  return text
end

--- generated(text) -> true when describe made this text
function M.generated(text) return texts[text] == true end

return M

-- rollout.fleet.wire: events as they leave an agent for etcd — redacted JSON lines, the
-- same bytes journal.encode writes, for less CPU.
-- Error policy: never raises for an event; what json.encode cannot take goes through
-- journal.encode's cleaner.
local json = require("rollout.json")
local journal = require("rollout.journal")
local redact = require("rollout.redact")

local M = {}

-- Events are redacted (rollout.redact) before they leave the process, as journal.encode
-- does. redact.text runs some thirty patterns over every key and string, and an agent
-- encodes the same few strings (event kinds, field and stage names) a thousand times a
-- second, so it remembers the answers. The memo is dropped whenever a rollout is built
-- (that is when a playbook registers its secrets with rollout.redact) and when it grows.
local memo, memo_n, secret_memo = {}, 0, {}

function M.forget_redactions() memo, memo_n, secret_memo = {}, 0, {} end

local function redacted_text(s)
  local r = memo[s]
  if r == nil then
    r = redact.text(s)
    if memo_n >= 50000 then memo, memo_n = {}, 0 end
    memo[s], memo_n = r, memo_n + 1
  end
  return r
end

local function secret_key(k)
  local v = secret_memo[k]
  if v == nil then v = redact.secret_key(k); secret_memo[k] = v end
  return v
end

local function scrub(v, under_secret, depth)
  local t = type(v)
  if t == "string" then return under_secret and redact.MASK or redacted_text(v) end
  if t ~= "table" then return v end
  if depth > 16 then return "<too deep>" end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" then out[redacted_text(k)] = scrub(x, secret_key(k), depth + 1)
    else out[k] = scrub(x, false, depth + 1) end
  end
  local mt = getmetatable(v)
  if mt then setmetatable(out, mt) end
  return out
end

local ENCODE = { sort = true, non_finite = "null", invalid_utf8 = "replace" }

--- encode(ev) -> one JSON line, redacted (what journal.encode writes, for less CPU).
function M.encode(ev)
  local ok, line = pcall(json.encode, scrub(ev, false, 0), ENCODE)
  if ok then return line end
  return journal.encode(ev) -- functions, userdata, cycles: journal's cleaner handles them
end

return M

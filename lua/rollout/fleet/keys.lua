-- rollout.fleet.keys: fleet mode's key layout in etcd (see rollout.fleet) and the reads
-- every part of it shares: prefix ranges, the ids under an index, a rollout's events.
-- Error policy: bad arguments raise; etcd failures return nil, err; a value that is not a
-- JSON object decodes to nil (a half-written or foreign key is not ours to trust).
local json = require("rollout.json")
local codec = require("rollout.codec")
local etcd = require("rollout.etcd")

local M = {}

M.PREFIX = "/rollout/"

--- keys(prefix) -> the key layout under prefix (see the header).
function M.keys(prefix)
  prefix = prefix or M.PREFIX
  if prefix:sub(-1) ~= "/" then prefix = prefix .. "/" end
  local K = { prefix = prefix, agents = prefix .. "agents/", active = prefix .. "active/",
    owners = prefix .. "owners/", index = prefix .. "index/", inbox = prefix .. "inbox/" }
  local function r(id) return prefix .. "rollouts/" .. id .. "/" end
  function K.rollout(id) return r(id) end
  function K.spec(id) return r(id) .. "spec" end
  function K.owner(id) return r(id) .. "owner" end
  function K.status(id) return r(id) .. "status" end
  function K.done(id) return r(id) .. "done" end
  function K.events(id) return r(id) .. "events/" end
  function K.event(id, seq) return string.format("%sevents/%012d", r(id), seq) end
  function K.commands(id) return r(id) .. "commands/" end
  function K.acks(id) return r(id) .. "acks/" end
  return K
end

function M.valid_id(id)
  return type(id) == "string" and #id <= 128 and id:match("^[%w][%w%._%-]*$") ~= nil
end

function M.hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("l")
  if f then f:close() end
  return h or "localhost"
end

function M.decode(s)
  local ok, v = pcall(json.decode, s)
  if ok and type(v) == "table" then return v end
  return nil
end

-- range over a prefix with options the client does not expose (keys_only, limit)
function M.range(c, prefix, extra)
  local body = { key = codec.base64(prefix), range_end = codec.base64(etcd.prefix_end(prefix)),
    sort_order = "ASCEND", sort_target = "KEY" }
  for k, v in pairs(extra or {}) do body[k] = v end
  local v, err = c:call("/v3/kv/range", body)
  if not v then return nil, err end
  local out = {}
  for i, raw in ipairs(v.kvs or {}) do
    out[i] = { key = codec.unbase64(raw.key), value = raw.value and codec.unbase64(raw.value) or "",
      mod_revision = raw.mod_revision, create_revision = raw.create_revision, lease = raw.lease }
  end
  return out
end

function M.ids_under(c, prefix, values)
  local kvs, err = M.range(c, prefix, not values and { keys_only = true } or nil)
  if not kvs then return nil, err end
  local out = {}
  for _, kv in ipairs(kvs) do out[kv.key:sub(#prefix + 1)] = kv end
  return out
end

--- events(client, K, id) -> list of decoded events (in seq order), last seq | nil, err
function M.read_events(c, K, id)
  local kvs, err = M.range(c, K.events(id))
  if not kvs then return nil, err end
  local out, last = {}, 0
  for _, kv in ipairs(kvs) do
    local ev = M.decode(kv.value)
    if ev then out[#out + 1] = ev end
    last = tonumber(kv.key:match("(%d+)$")) or last
  end
  return out, last
end

return M

-- rollout.etcd: a small etcd v3 client over the JSON gateway (etcd 3.4: /v3/...), on our
-- non-blocking http. Keys and values travel base64; 64-bit numbers (revisions, lease IDs)
-- travel as JSON strings and are kept as strings here, never rounded through a double.
-- Fields equal to their default are omitted by the gateway: a lost txn has no `succeeded`.
--
--   local c = etcd.new{url = "http://127.0.0.1:2379", timeout = 2}
--   c:put(k, v [, lease]) -> revision          c:get(k) -> value, kv | nil (absent)
--   c:range(prefix) -> {kv...}                 c:delete(k [, prefix]) -> deleted count
--   c:grant(ttl) -> id                          c:keepalive(id) -> ttl | nil, "lease expired"
--   c:revoke(id)                                c:txn{compare=, success=, failure=} -> ok, responses, revision
--   c:acquire(key, value, lease) -> token | nil, holder_kv   (create-revision-0 transaction)
--   c:holds(key, token) -> true | false                      (the fencing check)
-- Each kv: {key=, value=, create_revision=, mod_revision=, version=, lease=}.
-- Error policy: operational failures (etcd down, timeouts, error answers) return nil, err.
local http = require("rollout.http")
local json = require("rollout.json")
local codec = require("rollout.codec")

local M = {}
local C = {}
C.__index = C

function M.new(opts)
  local url = opts.url or opts[1]
  if type(url) ~= "string" then error("etcd.new: url required", 2) end
  return setmetatable({ url = url:gsub("/+$", ""), timeout = opts.timeout or 3 }, C)
end

local function b64(s) return codec.base64(s) end

-- The end of the key range that holds every key starting with prefix.
local function prefix_end(prefix)
  local last = prefix:byte(#prefix)
  if not last then return "\0" end
  return prefix:sub(1, -2) .. string.char(last + 1)
end
M.prefix_end = prefix_end

function C:call(path, body)
  local r, err = http.request({ method = "POST", url = self.url .. path, timeout = self.timeout,
    headers = { ["Content-Type"] = "application/json" }, body = json.encode(body) })
  if not r then return nil, "etcd " .. self.url .. ": " .. err end
  local v = json.decode(r.body)
  if r.status ~= 200 then
    local msg = type(v) == "table" and (v.message or v.error) or r.body
    return nil, string.format("etcd %s%s: HTTP %d: %s", self.url, path, r.status, tostring(msg))
  end
  if type(v) ~= "table" then return nil, "etcd " .. path .. ": malformed answer" end
  return v
end

local function kv_of(raw)
  return { key = codec.unbase64(raw.key or ""), value = raw.value and codec.unbase64(raw.value) or "",
    create_revision = raw.create_revision, mod_revision = raw.mod_revision, version = raw.version, lease = raw.lease }
end

function C:put(key, value, lease)
  local v, err = self:call("/v3/kv/put", { key = b64(key), value = b64(value), lease = lease })
  if not v then return nil, err end
  return v.header and v.header.revision
end

function C:get(key)
  local v, err = self:call("/v3/kv/range", { key = b64(key) })
  if not v then return nil, err end
  if not v.kvs or #v.kvs == 0 then return nil end
  local kv = kv_of(v.kvs[1])
  return kv.value, kv
end

function C:range(prefix, opts)
  opts = opts or {}
  local body = { key = b64(prefix), range_end = b64(prefix_end(prefix)), sort_order = "ASCEND", sort_target = "KEY" }
  if opts.min_mod_revision then body.min_mod_revision = opts.min_mod_revision end
  local v, err = self:call("/v3/kv/range", body)
  if not v then return nil, err end
  local out = {}
  for i, raw in ipairs(v.kvs or {}) do out[i] = kv_of(raw) end
  return out, v.header and v.header.revision
end

function C:delete(key, prefix)
  local body = { key = b64(key) }
  if prefix then body.range_end = b64(prefix_end(key)) end
  local v, err = self:call("/v3/kv/deleterange", body)
  if not v then return nil, err end
  return tonumber(v.deleted or "0")
end

function C:grant(ttl)
  local v, err = self:call("/v3/lease/grant", { TTL = ttl })
  if not v then return nil, err end
  if v.error and v.error ~= "" then return nil, "etcd lease grant: " .. v.error end
  return v.ID
end

--- keepalive(id) -> remaining ttl | nil, "lease expired" | nil, err
function C:keepalive(id)
  local v, err = self:call("/v3/lease/keepalive", { ID = id })
  if not v then return nil, err end
  local res = v.result or {}
  if not res.TTL or tonumber(res.TTL) <= 0 then return nil, "lease expired" end
  return tonumber(res.TTL)
end

function C:revoke(id)
  return self:call("/v3/lease/revoke", { ID = id })
end

--- txn{compare = {...}, success = {...}, failure = {...}}: compare/requests in the
--- gateway's JSON shape; keys given raw here are base64-encoded for you.
function C:txn(t)
  local function enc_cmp(c)
    local o = {}
    for k, v in pairs(c) do o[k] = v end
    o.key = b64(c.key)
    if c.value then o.value = b64(c.value) end
    return o
  end
  local function enc_req(r)
    if r.request_put then
      local p = r.request_put
      return { request_put = { key = b64(p.key), value = b64(p.value or ""), lease = p.lease } }
    elseif r.request_range then
      return { request_range = { key = b64(r.request_range.key) } }
    elseif r.request_delete_range then
      return { request_delete_range = { key = b64(r.request_delete_range.key) } }
    end
    return r
  end
  local body = { compare = json.array({}), success = json.array({}), failure = json.array({}) }
  for i, c in ipairs(t.compare or {}) do body.compare[i] = enc_cmp(c) end
  for i, r in ipairs(t.success or {}) do body.success[i] = enc_req(r) end
  for i, r in ipairs(t.failure or {}) do body.failure[i] = enc_req(r) end
  local v, err = self:call("/v3/kv/txn", body)
  if not v then return nil, err end
  local responses = {}
  for i, r in ipairs(v.responses or {}) do
    local rr = r.response_range
    if rr then
      local kvs = {}
      for j, raw in ipairs(rr.kvs or {}) do kvs[j] = kv_of(raw) end
      responses[i] = { kvs = kvs }
    else
      responses[i] = r
    end
  end
  return v.succeeded == true, responses, v.header and v.header.revision
end

--- acquire(key, value, lease) -> token (the creating revision) | nil, holder kv | nil, nil, err
function C:acquire(key, value, lease)
  local ok, responses, rev = self:txn({
    compare = { { key = key, result = "EQUAL", target = "CREATE", create_revision = "0" } },
    success = { { request_put = { key = key, value = value, lease = lease } } },
    failure = { { request_range = { key = key } } },
  })
  if ok == nil then return nil, nil, responses end
  if ok then return rev end
  local holder = responses[1] and responses[1].kvs and responses[1].kvs[1]
  return nil, holder
end

--- holds(key, token) -> true | false | nil, err: the key still exists with the create
--- revision we won it with (a lost lease deletes it; a new owner re-creates it).
function C:holds(key, token)
  local ok, responses = self:txn({
    compare = { { key = key, result = "EQUAL", target = "CREATE", create_revision = token } },
  })
  if ok == nil then return nil, responses end
  return ok
end

return M

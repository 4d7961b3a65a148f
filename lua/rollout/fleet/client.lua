-- rollout.fleet.client: what `rollout submit`, `list`, `ctl --etcd` and `watch --etcd` do
-- to the fleet's keys: store a rollout, list rollouts and agents, queue a command for a
-- rollout's owner, read a rollout's status.
-- Error policy: bad arguments raise; failures return nil, err, reason, the reason a word of
-- rollout.exit.REASON the command turns into its exit code: "unreachable" (etcd cannot be
-- reached or read), "not_found" (no such rollout), "exists" (submit: the id is taken),
-- "invalid" (submit: a bad id).
local rollout = require("rollout")
local json = require("rollout.json")
local layout = require("rollout.fleet.keys")

local M = {}

local function new_id(service)
  local s = tostring(service or "rollout"):gsub("[^%w%._%-]", "-")
  return string.format("%s-%s-%04x", s, os.date("!%Y%m%dT%H%M%S"), math.random(0, 0xffff))
end

--- submit(client, K, bundle, {id=, service=}) -> id | nil, err, reason
function M.submit(c, K, b, opts)
  opts = opts or {}
  local id = opts.id or new_id(opts.service)
  if not layout.valid_id(id) then
    return nil, "invalid rollout id '" .. tostring(id) .. "' (letters, digits, . _ -)", "invalid"
  end
  local now = rollout.time()
  local ok, resp = c:txn({
    compare = { { key = K.spec(id), target = "CREATE", result = "EQUAL", create_revision = "0" } },
    success = {
      { request_put = { key = K.spec(id), value = json.encode(b) } },
      { request_put = { key = K.status(id), value = json.encode({ id = id, service = opts.service, state = "pending", updated = now }) } },
      { request_put = { key = K.active .. id, value = json.encode({ submitted_at = now }) } },
      { request_put = { key = K.index .. id,
        value = json.encode({ service = opts.service, submitted_at = now, submitted_by = b.submitted_by }) } },
    },
  })
  if ok == nil then return nil, resp, "unreachable" end
  if not ok then return nil, "rollout '" .. id .. "' exists already", "exists" end
  return id
end

-- Read several single keys in one transaction (at most 64 per call).
local function get_many(c, keys)
  local out = {}
  for i = 1, #keys, 64 do
    local reqs = {}
    for j = i, math.min(#keys, i + 63) do reqs[#reqs + 1] = { request_range = { key = keys[j] } } end
    local ok, resp = c:txn({ success = reqs })
    if ok == nil then return nil, resp, "unreachable" end
    for j, r in ipairs(resp) do
      local kv = r.kvs and r.kvs[1]
      if kv then out[keys[i + j - 1]] = kv.value end
    end
  end
  return out
end

--- list(client, K) -> {{id=, service=, owner=, state=, stage=, weights=, outcome=, ...}}, agents
---   | nil, err, "unreachable"
function M.list(c, K)
  local index, err = layout.ids_under(c, K.index, true)
  if not index then return nil, err, "unreachable" end
  local owners = layout.ids_under(c, K.owners, true) or {}
  local agents = layout.ids_under(c, K.agents, true) or {}
  local ids = {}
  for id in pairs(index) do ids[#ids + 1] = id end
  table.sort(ids)
  local keys = {}
  for _, id in ipairs(ids) do keys[#keys + 1] = K.status(id); keys[#keys + 1] = K.done(id) end
  local vals, gerr, greason = get_many(c, keys)
  if not vals then return nil, gerr, greason end
  local rows = {}
  for _, id in ipairs(ids) do
    local st = layout.decode(vals[K.status(id)] or "") or {}
    local done = layout.decode(vals[K.done(id)] or "")
    local own = owners[id] and layout.decode(owners[id].value)
    local ix = layout.decode(index[id].value) or {}
    rows[#rows + 1] = { id = id, service = st.service or ix.service, owner = own and own.agent, last_owner = st.agent,
      state = done and done.outcome or st.state, stage = st.stage, stage_index = st.stage_index, stages = st.stages,
      weights = st.weights, reason = done and done.reason or st.reason, updated = st.updated, submitted_at = ix.submitted_at,
      etcd_paused = st.etcd_paused }
  end
  local alist = {}
  for name, kv in pairs(agents) do
    local a = layout.decode(kv.value) or {}
    local n = 0
    for _, o in pairs(owners) do local ov = layout.decode(o.value); if ov and ov.agent == name then n = n + 1 end end
    alist[#alist + 1] = { name = name, host = a.host, pid = a.pid, since = a.since, rollouts = n }
  end
  table.sort(alist, function(x, y) return x.name < y.name end)
  return rows, alist
end

--- command(client, K, id, name, arg, who) -> ack key | nil, err, reason   (queues it in etcd)
function M.command(c, K, id, name, arg, who)
  local key = string.format("%016d-%04x", math.floor(rollout.time() * 1000), math.random(0, 0xffff))
  local ok, resp = c:txn({
    compare = { { key = K.spec(id), target = "CREATE", result = "GREATER", create_revision = "0" } },
    success = {
      { request_put = { key = K.commands(id) .. key,
        value = json.encode({ command = name, arg = arg, who = who, time = rollout.time() }) } },
      { request_put = { key = K.inbox .. id, value = key } },
    },
  })
  if ok == nil then return nil, resp, "unreachable" end
  if not ok then return nil, "no rollout '" .. id .. "'", "not_found" end
  return K.acks(id) .. key
end

--- status(client, K, id) -> {status=, owner=, done=} | nil, err, reason
function M.status(c, K, id)
  local vals, err, reason = get_many(c, { K.spec(id), K.status(id), K.owner(id), K.done(id) })
  if not vals then return nil, err, reason end
  if not vals[K.spec(id)] then return nil, "no rollout '" .. id .. "'", "not_found" end
  return { status = layout.decode(vals[K.status(id)] or "") or {}, owner = layout.decode(vals[K.owner(id)] or ""),
    done = layout.decode(vals[K.done(id)] or "") }
end

return M

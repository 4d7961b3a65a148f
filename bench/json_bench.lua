-- json: decode throughput of json.decode on the response shapes the sources and etcd read,
-- beside json.encode of the same values (the anchor, timed in the same run).
-- Usage: rollout bench/json_bench.lua [MB] (text per shape, default 8).
-- Times are process CPU time (os.clock), the best of 5 runs.
local json = require("rollout.json")

local mb = tonumber(arg and arg[1]) or 8

-- A Prometheus range query: a matrix of series, each with [time, "value"] pairs.
local function prometheus(n)
  local series = {}
  for s = 1, n do
    local values = {}
    for i = 1, 240 do values[i] = { 1712345678 + i * 15 + 0.123, ("%.6f"):format(math.sin(s + i)) } end
    series[s] = { metric = { __name__ = "http_requests_total", version = "canary", code = "200",
      instance = ("10.0.%d.%d:9100"):format(s // 256, s % 256) }, values = values }
  end
  return { status = "success", data = { resultType = "matrix", result = series } }
end

-- An etcd range response: 64-bit revisions and lease ids, base64 keys and values.
local function etcd(n)
  local kvs = {}
  for i = 1, n do
    kvs[i] = { key = "L3JvbGxvdXQvcm9sbG91dHMv" .. i, create_revision = 7587869395420563220 + i,
      mod_revision = 7587869395420564220 + i, version = i % 7 + 1, lease = 7587869395420563220 - i,
      value = string.rep("eyJzdGF0ZSI6InJ1bm5pbmcifQ", 4) }
  end
  return { header = { cluster_id = 1484163906896517841, member_id = 10276657743932975437 // 2, revision = 991,
    raft_term = 4 }, kvs = kvs, count = n }
end

local function grow(make)
  local n, text = 1, ""
  while #text < mb * 1e6 do n = n * 2; text = json.encode(make(n)) end
  return text
end

local function best(fn)
  local t = math.huge
  for _ = 1, 5 do
    local t0 = os.clock()
    fn()
    t = math.min(t, os.clock() - t0)
  end
  return t
end

print(("json: decode and encode, %g MB per shape, best of 5, CPU time"):format(mb))
print("  shape         bytes     decode MB/s   encode MB/s (anchor)")
for _, shape in ipairs({ { "prometheus", prometheus }, { "etcd", etcd } }) do
  local text = grow(shape[2])
  local value = json.decode(text)
  local dt = best(function() json.decode(text) end)
  local et = best(function() json.encode(value) end)
  print(("  %-12s %9d %12.1f %13.1f"):format(shape[1], #text, #text / dt / 1e6, #text / et / 1e6))
end

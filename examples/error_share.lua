-- The share of 5xx answers per HAProxy server, from a /metrics URL or a saved exposition.
-- Run: ./rollout examples/error_share.lua spec/fixtures/promtext/haproxy-2.6.prom [BACKEND]
--      ./rollout examples/error_share.lua http://127.0.0.1:8405/metrics be
-- Exit 0, 2 for a usage error, 3 when the target cannot be read.
local target, backend = arg[1], arg[2] or "be"
if not target then
  io.stderr:write("usage: rollout examples/error_share.lua URL|FILE [BACKEND]\n")
  return 2
end

local text, err
if target:match("^https?://") then
  local r
  r, err = http.get(target, { timeout = 5 })
  text = r and r.status == 200 and r.body
  err = target .. ": " .. (err or (r and ("HTTP " .. r.status)))
else
  text, err = fs.read(target)   -- its error names the file
end
if not text then
  io.stderr:write(tostring(err), "\n")
  return 3
end

local family = "haproxy_server_http_responses_total"
local res, perr = promtext.select(text, {
  { name = family, labels = { proxy = backend }, group_by = "server" },
  { name = family, labels = { proxy = backend, code = "5xx" }, group_by = "server" },
})
if not res then
  io.stderr:write(target, ": ", perr, "\n")
  return 3
end
local all, bad = res[1].groups or {}, res[2].groups or {}
local servers = {}
for server in pairs(all) do servers[#servers + 1] = server end
table.sort(servers)
for _, server in ipairs(servers) do
  local n, e = all[server], bad[server] or 0
  print(string.format("%-12s %8d responses  %6.2f%% 5xx", server, n, n > 0 and 100 * e / n or 0))
end
return 0

-- spec/support/receiver.lua: an HTTP receiver for notification specs, written on
-- net.listen_tcp and run as tasks on the spec's loop.
--
--   local rx = receiver(plan)   rx.url, rx.port, rx.requests, rx.on(path), rx.close()
--
-- It records every request {method, path, headers, body, json, at}. `plan[path]` is a list
-- of statuses answered in turn (the last one repeats; 200 when the path has no plan), or
-- "hang" to never answer.
local rollout = require("rollout")
local json = require("rollout.json")
local net = require("rollout.net")

local function receiver(plan)
  local srv = assert(net.listen_tcp("127.0.0.1", 0))
  local r = { port = srv:port(), requests = {}, plan = plan or {}, counts = {}, conns = {} }
  r.url = "http://127.0.0.1:" .. r.port
  local function serve(c)
    while true do
      local line = c:receive("l", 30)
      if not line then break end
      local method, path = line:match("^(%u+) (%S+) HTTP")
      local headers = {}
      while true do
        local h = c:receive("l", 5)
        if not h or h == "" then break end
        local k, v = h:match("^([^:]+):%s*(.-)%s*$")
        if k then headers[k:lower()] = v end
      end
      local n = tonumber(headers["content-length"] or 0)
      local body = n > 0 and c:receive(n, 5) or ""
      local req = { method = method, path = path, headers = headers, body = body, json = json.decode(body), at = rollout.now() }
      r.requests[#r.requests + 1] = req
      r.counts[path] = (r.counts[path] or 0) + 1
      local p = r.plan[path] or { 200 }
      local status = p[math.min(r.counts[path], #p)]
      if status == "hang" then rollout.sleep(3600) end
      c:send(string.format("HTTP/1.1 %d X\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}", status))
    end
    c:close()
  end
  r.task = rollout.spawn(function()
    while true do
      local c = srv:accept()
      if not c then return end
      r.conns[#r.conns + 1] = rollout.spawn(serve, c)
    end
  end)
  function r.close()
    srv:close()
    r.task:cancel()
    for _, t in ipairs(r.conns) do t:cancel() end
  end
  function r.on(path)
    local out = {}
    for _, q in ipairs(r.requests) do if q.path == path then out[#out + 1] = q end end
    return out
  end
  return r
end

return receiver

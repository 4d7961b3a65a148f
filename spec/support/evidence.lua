-- Helpers of the evidence specs (spec/safety_evidence_spec.lua, the timed cases, and
-- spec/safety_evidence_gates_spec.lua, the rest): `rollout run playbooks/demo.lua` on a
-- demo/stack.lua stack with short stages set on the command line, HAProxy's admin socket,
-- signals, and a readable dump of a run's events for failure messages.
-- Error policy: helpers raise (they are test code); a failed run is a result, not an error.
local json = require("rollout.json")
local net = require("rollout.net")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

local M = {}

function M.say(fmt, ...) print("        " .. string.format(fmt, ...)) end

function M.dump(res)
  if not res then return "(no run)" end
  local lines = {}
  for _, ev in ipairs(res.events or {}) do
    if ev.event ~= "router" and ev.event ~= "source" and ev.event ~= "log" then
      lines[#lines + 1] = json.encode(ev)
    end
  end
  return string.format("exit %s %s, outcome %s (%s)\n%s\n%s", tostring(res.code), tostring(res.signal or ""),
    tostring(res.outcome), tostring(res.reason), table.concat(lines, "\n"):sub(-6000), (res.output or ""):sub(-1500))
end

local THRESHOLDS = '"thresholds":{"health":0.98,"error_rate":"2%","p99":"600ms"}'
function M.stage(name, weight, hold)
  return string.format('{"name":"%s","weight":%d,"hold":"%s",%s}', name, weight, hold, THRESHOLDS)
end

--- `rollout run playbooks/demo.lua` on the stack with these stages and extra --set values.
function M.run(s, stages, extra, opts)
  local sets = s:sets({ extra = extra })
  sets[#sets + 1] = "stages=[" .. table.concat(stages, ",") .. "]"
  local o = { sets = sets, timeout = 60 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(s:run(o))
end

function M.haproxy_cli(s, line)
  local conn = assert(net.connect_unix(s.haproxy_proc.socket, 2))
  conn:send(line .. "\n")
  local reply = conn:receive("a", 2)
  conn:close()
  return reply
end

function M.signal(pid, sig)
  local r = proc.run({ argv = { "kill", "-" .. sig, tostring(pid) }, timeout = 5 })
  assert(r and r.code == 0, "kill -" .. sig .. " " .. pid)
end

function M.events(res, name, pred) return demo_stack.find(res.events, name, pred) end

return M

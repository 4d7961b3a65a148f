-- Every exchange a router makes stays inside its call's deadline (a rollback passes what is
-- left of max_rollback_time): a command that hangs (exec), or an API server that accepts
-- and never answers (Istio), cannot stretch a rollback past its bound. HAProxy and NGINX
-- are covered end to end by spec/safety_evidence_spec.lua.
local rollout = require("rollout")
local fs = require("rollout.fs")
local net = require("rollout.net")
local routers = require("rollout.routers")
local servers = require("spec.support.servers")

describe("router exchanges within a deadline", function()
  it("exec: a command that hangs is stopped when the 1 s deadline is spent (router timeout 30 s)", function()
    local dir = assert(fs.mkdtemp("deadline"))
    local hang = dir .. "/hang.lua"
    assert(fs.write_atomic(hang, "require('rollout').sleep(30)\n"))
    local r = routers.new{ type = "exec", timeout = "30s",
      set = { rollout.exe, hang, "{baseline}", "{canary}" }, get = { rollout.exe, hang } }
    local t0 = rollout.now()
    local ok, err = r:set_weights({ baseline = 100, canary = 0 }, { attempts = 1, deadline = 1 })
    local took = rollout.now() - t0
    fs.rmtree(dir)
    assert.is_nil(ok)
    assert.truthy(took < 2.5, ("returned after %.2f s with a 1 s deadline: %s"):format(took, tostring(err)))
  end)

  it("istio: an API server that accepts and never answers is given up on at the deadline (timeout 10 s)", function()
    local srv = assert(net.listen_tcp("127.0.0.1", servers.free_port()))
    local held = {}
    local acceptor = rollout.spawn(function()
      while true do
        local c = srv:accept()
        if not c then return end
        held[#held + 1] = c -- never answered
      end
    end)
    local dir = assert(fs.mkdtemp("deadline"))
    assert(fs.write_atomic(dir .. "/token", "t0ken\n"))
    local r = routers.new{ type = "istio", api = "http://127.0.0.1:" .. srv:port(), token_file = dir .. "/token",
      namespace = "production", virtualservice = "dwcp-v3", baseline = "b", canary = "c", timeout = "10s" }
    local t0 = rollout.now()
    local ok, err = r:set_weights({ baseline = 100, canary = 0 }, { attempts = 1, deadline = 1 })
    local took = rollout.now() - t0
    acceptor:cancel()
    for _, c in ipairs(held) do c:close() end
    srv:close()
    fs.rmtree(dir)
    assert.is_nil(ok)
    assert.is_true(#held >= 1, "the router did reach the server")
    assert.truthy(took < 2.5, ("returned after %.2f s with a 1 s deadline: %s"):format(took, tostring(err)))
  end)
end)

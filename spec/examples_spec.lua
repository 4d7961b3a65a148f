-- The example scripts the docs show (docs/host-api.md) run and print what the docs say.
local proc = require("rollout.proc")
local fs = require("rollout.fs")
local servers = require("spec.support.servers")

local EXPOSITION = [[
# TYPE haproxy_server_http_responses_total counter
haproxy_server_http_responses_total{proxy="be",server="baseline",code="2xx"} 9392
haproxy_server_http_responses_total{proxy="be",server="baseline",code="5xx"} 20
haproxy_server_http_responses_total{proxy="be",server="canary",code="2xx"} 468
haproxy_server_http_responses_total{proxy="be",server="canary",code="5xx"} 30
haproxy_server_http_responses_total{proxy="other",server="x",code="5xx"} 7
]]

describe("examples/error_share.lua", function()
  it("prints each server's share of 5xx answers, as docs/host-api.md shows", function()
    local d = fs.mkdtemp("examples")
    assert(fs.write_atomic(d .. "/metrics.prom", EXPOSITION))
    local r = assert(proc.run({ argv = { rollout.exe, "examples/error_share.lua", d .. "/metrics.prom", "be" }, timeout = 10 }))
    fs.rmtree(d)
    assert.equals(0, r.code, r.stderr)
    local doc = assert(fs.read("docs/host-api.md"))
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equals(2, #lines, r.stdout)
    assert.matches("^baseline +9412 responses +0%.21%% 5xx$", lines[1])
    assert.matches("^canary +498 responses +6%.02%% 5xx$", lines[2])
    for _, l in ipairs(lines) do assert.truthy(doc:find("# " .. l, 1, true), "docs/host-api.md does not show: " .. l) end
  end)

  it("reads a live /metrics endpoint (served by a real NGINX)", function()
    local s = assert(servers.nginx({ files = { ["index.html"] = "ok\n", metrics = EXPOSITION } }))
    local r = assert(proc.run({ argv = { rollout.exe, "examples/error_share.lua", s.url .. "/metrics", "be" }, timeout = 10 }))
    local missing = assert(proc.run({ argv = { rollout.exe, "examples/error_share.lua", s.url .. "/nothing" }, timeout = 10 }))
    s:stop()
    assert.equals(0, r.code, r.stderr)
    assert.matches("canary +498 responses +6%.02%% 5xx", r.stdout)
    assert.equals(3, missing.code)
    assert.matches("HTTP 404", missing.stderr)
  end)

  it("exits 2 without arguments and 3 for a target it cannot read", function()
    assert.equals(2, assert(proc.run({ argv = { rollout.exe, "examples/error_share.lua" }, timeout = 10 })).code)
    local r = assert(proc.run({ argv = { rollout.exe, "examples/error_share.lua", "/nonexistent/metrics" }, timeout = 10 }))
    assert.equals(3, r.code)
    assert.matches("/nonexistent/metrics", r.stderr)
  end)
end)

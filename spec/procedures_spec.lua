-- The runbook's manual rollback and finalize procedures (playbooks/rollback.lua and
-- finalize.lua) as scripts, against a real HAProxy.
local support = require("spec.support.routers_support")
local fs = require("rollout.fs")
local proc = require("rollout.proc")

describe("playbooks/rollback.lua (manual rollback)", function()
  local backends, hap, dir
  setup(function()
    backends = support.backends()
    hap = support.haproxy(backends)
    dir = assert(fs.mkdtemp("procedures"))
  end)
  teardown(function()
    if hap then hap.stop() end
    if backends then backends.stop() end
    if dir then fs.rmtree(dir) end
  end)

  local function router_sets()
    return { "--set", "router.socket=" .. hap.socket, "--set", "router.backend=be",
      "--set", "router.baseline=baseline", "--set", "router.canary=canary" }
  end

  it("routes 100 % to the baseline, confirms it and runs the remaining steps", function()
    local haproxy = require("rollout.routers").new({ type = "haproxy", socket = hap.socket, backend = "be",
      baseline = "baseline", canary = "canary" }, {})
    assert(haproxy:set_weights({ baseline = 75, canary = 25 }))
    local marker = dir .. "/scaled-down"
    local argv = { rollout.exe, "playbooks/rollback.lua", "playbooks/canary.lua", "--reason", "test",
      "--set", 'params.scale_down_command=["touch", "' .. marker .. '"]' }
    for _, a in ipairs(router_sets()) do argv[#argv + 1] = a end
    local r = assert(proc.run({ argv = argv, timeout = 60 }))
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("traffic switch confirmed: baseline 100%%, canary 0%%", r.stdout)
    assert.matches("rollback completed", r.stdout)
    assert.same({ baseline = 100, canary = 0 }, (haproxy:get_weights()))
    assert.truthy(fs.stat(marker), "the scale-down command ran")
    assert.matches("scale_down_command: ok", r.stdout)
  end)

  it("fails with exit 3 when the router cannot be reached", function()
    local r = assert(proc.run({ argv = { rollout.exe, "playbooks/rollback.lua", "playbooks/canary.lua",
      "--set", "router.socket=" .. dir .. "/missing.sock", "--set", "max_rollback_time=1s" }, timeout = 60 }))
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("NOT confirmed", r.stdout)
    assert.matches("missing%.sock", r.stdout)
  end)
end)

describe("playbooks/finalize.lua", function()
  it("reports each step, skipping the ones not configured", function()
    local r = assert(proc.run({ argv = { rollout.exe, "playbooks/finalize.lua", "playbooks/canary.lua" }, timeout = 30 }))
    assert.equals(0, r.code, r.stderr)
    assert.matches("promote the canary and scale it up: params.promote_command not set, skipped", r.stdout)
    assert.matches("finalized", r.stdout)
  end)
end)

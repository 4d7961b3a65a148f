-- The runbook's manual rollback and finalize procedures (playbooks/rollback.lua and
-- finalize.lua) as scripts, against a real HAProxy.
local support = require("spec.support.routers_support")
local fs = require("rollout.fs")
local json = require("rollout.json")
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
  local dir, backends, hap
  setup(function()
    dir = assert(fs.mkdtemp("finalize"))
    backends = support.backends()
    hap = support.haproxy(backends)
    assert(require("rollout.routers").new({ type = "haproxy", socket = hap.socket, backend = "be",
      baseline = "baseline", canary = "canary" }, {}):set_weights({ baseline = 0, canary = 100 }))
  end)
  teardown(function()
    if hap then hap.stop() end
    if backends then backends.stop() end
    if dir then fs.rmtree(dir) end
  end)

  -- A journal of one rollout: events as `rollout run` writes them (the fields that matter).
  local function journal_of(name, evs)
    local d = dir .. "/" .. name
    assert(fs.mkdir(d, 448, true))
    local lines = {}
    for i, e in ipairs(evs) do e.seq, e.ts = i, 1e9 + i; lines[#lines + 1] = json.encode(e) end
    assert(fs.write_atomic(d .. "/20260101T000000.000-1.jsonl", table.concat(lines, "\n") .. "\n"))
    return d
  end
  local PROMOTED = { { event = "rollout_started", service = "dwcp-v3" },
    { event = "weight_confirmed", baseline = 25, canary = 75 }, { event = "weight_confirmed", baseline = 0, canary = 100 },
    { event = "promoting" }, { event = "outcome", outcome = "promoted" } }
  local ROLLED_BACK = { { event = "rollout_started", service = "dwcp-v3" },
    { event = "weight_confirmed", baseline = 0, canary = 100 }, { event = "rollback_started", reason = "operator" },
    { event = "weight_confirmed", baseline = 100, canary = 0 }, { event = "rolled_back", reason = "operator" } }

  local function finalize(jdir, extra)
    local argv = { rollout.exe, "playbooks/finalize.lua", "playbooks/canary.lua", "--journal", jdir,
      "--set", "router.socket=" .. hap.socket, "--set", "router.backend=be" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    return assert(proc.run({ argv = argv, timeout = 30 }))
  end

  it("refuses without a promotion confirmed at 100 % in the journal (exit 3)", function()
    local r = finalize(dir .. "/none")
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("finalize refused: no journal of dwcp%-v3", r.stderr)
    r = finalize(journal_of("rolled-back", ROLLED_BACK), { "--set", 'params.promote_command=["true"]' })
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("no promotion confirmed at 100 %%: the rollout was rolled back %(operator%)", r.stderr)
    assert.falsy(r.stdout:find("finalized", 1, true), "nothing says finalized")
  end)

  it("fails when every step was skipped: nothing was finalized (exit 3)", function()
    local r = finalize(journal_of("promoted", PROMOTED))
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("promote the canary and scale it up: params.promote_command not set, skipped", r.stdout)
    assert.matches("nothing was finalized: every step was skipped", r.stderr)
    assert.falsy(r.stdout:find("finalized\n", 1, true), "nothing says finalized")
  end)

  it("runs the configured steps after a confirmed promotion", function()
    local marker = dir .. "/promoted-marker"
    local r = finalize(journal_of("promoted2", PROMOTED), { "--set", 'params.promote_command=["touch", "' .. marker .. '"]' })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("promote the canary and scale it up: ok", r.stdout)
    assert.matches("finalized", r.stdout)
    assert.truthy(fs.stat(marker))
  end)
end)

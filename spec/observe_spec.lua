-- Observe-only runs on the real stack (demo/stack.lua: HAProxy, two sample-service
-- processes, loadgen): another tool has put the canary at 20 %; `rollout run --observe`
-- (or `observe = true` in the playbook) runs the demo playbook's stages, gates and triggers
-- against that split and must never change it. A task of ours reads both servers' weights
-- from HAProxy's runtime API every 20 ms for the whole run.
local rollout = require("rollout")
local fs = require("rollout.fs")
local net = require("rollout.net")
local json = require("rollout.json")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

local function runtime(s, cmd)
  local conn = assert(net.connect_unix(s.haproxy_proc.socket, 2))
  conn:send(cmd .. "\n")
  local reply = conn:receive("a", 2)
  conn:close()
  return reply or ""
end

local function split(s)
  local b = tonumber(runtime(s, "get weight " .. demo_stack.BACKEND .. "/baseline"):match("^(%d+)"))
  local c = tonumber(runtime(s, "get weight " .. demo_stack.BACKEND .. "/canary"):match("^(%d+)"))
  return b, c
end

-- every distinct "baseline/canary" HAProxy reported while fn ran, and how many reads
local function watching(s, fn)
  local seen, reads, stop = {}, 0, false
  local t = rollout.spawn(function()
    while not stop do
      local b, c = split(s)
      reads = reads + 1
      seen[tostring(b) .. "/" .. tostring(c)] = true
      rollout.sleep(0.02)
    end
  end)
  local res = fn()
  stop = true
  pcall(t.wait, t, 2)
  local list = {}
  for k in pairs(seen) do list[#list + 1] = k end
  table.sort(list)
  return res, list, reads
end

local function events_of(res, kind)
  local out = {}
  for _, e in ipairs(res.events) do if e.event == kind then out[#out + 1] = e end end
  return out
end

local function dump(res)
  return string.format("exit %s, outcome %s (%s)\n%s", tostring(res and res.code), tostring(res and res.outcome),
    tostring(res and res.reason), ((res and res.output) or ""):sub(-3000))
end

describe("observe-only on HAProxy", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  local function start_at_20()
    s = assert(demo_stack.start({ rps = 200 }))
    runtime(s, "set weight " .. demo_stack.BACKEND .. "/baseline 80; set weight " .. demo_stack.BACKEND .. "/canary 20")
    local b, c = split(s)
    assert.equals(80, b); assert.equals(20, c)
  end

  it("--observe: a failing canary is judged (would roll back), and the weights never change", function()
    start_at_20()
    assert(s.canary:fault({ error_rate = 0.2 }))
    local res, seen, reads = watching(s, function()
      return assert(s:run({ timeout = 90, args = { "--observe" }, progress = false }))
    end)
    assert.equals(1, res.code, dump(res))
    assert.same({ "80/20" }, seen, "HAProxy's weights changed during an observe-only run")
    assert.truthy(reads > 20, "we read HAProxy's weights throughout (" .. reads .. " reads)")
    assert.matches("would roll back: trigger:error_rate at %d", res.output)
    assert.falsy(res.output:find("ROLLBACK:", 1, true), "an observe-only run must not roll back")
    -- the journal: marked, the verdict recorded, no weight request, no router rollback
    assert.is_true(events_of(res, "rollout_started")[1].observe)
    local out = events_of(res, "outcome")[1]
    assert.is_true(out.observe)
    assert.equals("rolled_back", out.outcome)
    assert.equals("trigger:error_rate", out.reason)
    local would = events_of(res, "would_roll_back")
    assert.equals(1, #would)
    assert.equals("trigger:error_rate", would[1].reason)
    assert.equals(0, #events_of(res, "weight_requested"))
    assert.equals(0, #events_of(res, "weight_confirmed"))
    assert.equals(0, #events_of(res, "rollback_started"))
    assert.equals(0, #events_of(res, "hook_started"))
    local obs = events_of(res, "observed_weights")
    assert.truthy(#obs >= 1)
    assert.equals(20, obs[1].canary)
    assert.equals(80, obs[1].baseline)
    assert.truthy(#events_of(res, "would_set_weights") >= 1)
    -- the header override (another traffic-moving action) was not installed either
    assert.equals("", fs.read(s.haproxy_proc.acl))
    -- the report says so
    local r = assert(proc.run({ argv = { rollout.exe, "report", res.journal, "--json" }, timeout = 20 }))
    assert.equals(0, r.code, r.stderr)
    local rep = json.decode(r.stdout)
    assert.is_true(rep.observe)
    assert.matches("^Observe%-only", rep.why)
    r = assert(proc.run({ argv = { rollout.exe, "report", res.journal }, timeout = 20 }))
    assert.matches("%*%*Type:%*%* Canary %(observe%-only%)", r.stdout)
    -- and DORA leaves it out: it deployed nothing
    local jdir = res.journal:match("^(.*)/[^/]*$")
    r = assert(proc.run({ argv = { rollout.exe, "report", "--dora", jdir, "--json" }, timeout = 20 }))
    assert.equals(0, r.code, r.stderr)
    local dora = json.decode(r.stdout)
    assert.equals(0, dora.rolled_back + dora.promoted)
    assert.matches("observe%-only", table.concat(dora.skipped, "\n"))
  end, { timeout = 150 })

  it("an operator's abort is reported, not acted on; set weight is refused", function()
    start_at_20()
    local got = {}
    local res, seen = watching(s, function()
      local run
      local t = rollout.spawn(function() run = s:run({ timeout = 90, args = { "--observe" }, progress = false }) end)
      -- the control socket of this run
      local sock
      local deadline = rollout.now() + 30
      while not sock and rollout.now() < deadline do
        for _, n in ipairs(fs.list(s.dir .. "/run-1") or {}) do if n:match("%.sock$") then sock = s.dir .. "/run-1/" .. n end end
        rollout.sleep(0.05)
      end
      assert(sock, "no control socket")
      rollout.sleep(3) -- in stage 1
      got.set = assert(proc.run({ argv = { rollout.exe, "ctl", sock, "set", "weight", "50" }, timeout = 20 }))
      got.abort = assert(proc.run({ argv = { rollout.exe, "ctl", sock, "abort", "looks bad" }, timeout = 20 }))
      t:wait()
      return run
    end)
    assert.equals(1, got.set.code)
    assert.matches("observe%-only; it never changes weights", got.set.stderr)
    assert.equals(0, got.abort.code, got.abort.stderr)
    assert.equals(1, res.code, dump(res))
    assert.same({ "80/20" }, seen, "HAProxy's weights changed during an observe-only run")
    assert.matches("would roll back: manual at ", res.output)
    assert.equals(0, #events_of(res, "rollback_started"))
    assert.equals("manual", events_of(res, "would_roll_back")[1].reason)
  end, { timeout = 150 })

  it("observe = true in the playbook: a healthy canary would be promoted, weights untouched at every stage", function()
    start_at_20()
    local res, seen = watching(s, function()
      -- the demo's stages with shorter holds (5/5/5/3/3 s, not 5/10/15/15/10): each still
      -- long enough for its gate's evidence (health checks, min_samples) at the 80/20 split
      return assert(s:run({ timeout = 120, progress = false, args = { "--set", "observe=true",
        "--set", "stages[2].hold=5s", "--set", "stages[3].hold=5s", "--set", "stages[4].hold=3s",
        "--set", "stages[5].hold=3s" } }))
    end)
    assert.equals(0, res.code, dump(res))
    assert.same({ "80/20" }, seen, "HAProxy's weights changed during an observe-only run")
    assert.equals("promoted", res.outcome)
    local would = events_of(res, "would_set_weights")
    local ws = {}
    for _, e in ipairs(would) do ws[#ws + 1] = e.canary end
    assert.same({ 5, 25, 50, 75, 100 }, ws)
    local gates = events_of(res, "gate")
    assert.truthy(#gates >= 5, "every stage's gate ran")
    for _, e in ipairs(events_of(res, "observed_weights")) do assert.equals(20, e.canary) end
    assert.equals(0, #events_of(res, "weight_confirmed"))
    assert.matches("outcome: promoted at .*%[observe%-only: traffic untouched%]", res.output)
  end, { timeout = 180 })
end)

-- A full disk during a rollback loses none of the rollback's records. The journal lives on a
-- small tmpfs (mounted for the test; we are root); a real run of fast-haproxy.lua against a
-- real HAProxy rolls a failing canary back, and its on_rollback hook fills the disk (dd)
-- right after the 0 % confirmation, then logs. The events that cannot be written are kept:
--   - when space returns while the engine still runs, they reach the journal within about
--     a second, in order, with no gap in seq;
--   - when it never does, `rollout run` prints them to stderr as JSON lines under a loud
--     warning and exits 4 (journal incomplete), whatever the outcome.
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local journal = require("rollout.journal")
local live = require("spec.support.live_rollout")

local function sh(argv)
  local r = assert(proc.run({ argv = argv, timeout = 20 }))
  assert(r.code == 0, table.concat(argv, " ") .. ": " .. r.stderr)
  return r.stdout
end

local function mount_small(dir)
  assert(fs.mkdir(dir, 448, true))
  sh({ "mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dir })
end

-- on_rollback: fill the journal's disk, say so (that event cannot be written), then wait
-- `linger` seconds (while the spec may free the space).
local function variant(env, filler, linger)
  return live.variant(env, "fill", string.format([[
    pb.hooks = { on_rollback = function(ctx)
      proc.run({ argv = { "dd", "if=/dev/zero", "of=%s", "bs=4096" }, timeout = 20 })
      -- tmpfs allocates pages: the journal's last page has room for small events still;
      -- this one is larger than any slack, and the events after it queue behind it
      ctx.log("the journal's disk is full now " .. string.rep("x", 10000))
      if %s > 0 then proc.run({ argv = { "sleep", "%s" }, timeout = 20 }) end
      ctx.log("the hook ends")
      return true
    end }
  ]], filler, linger, linger))
end

local function seqs_ok(events)
  for i, ev in ipairs(events) do
    if ev.seq ~= i then return false, string.format("event %d (%s) has seq %s", i, ev.event, tostring(ev.seq)) end
  end
  return true
end

describe("a full disk during a rollback (tmpfs, real HAProxy)", function()
  local env
  after_each(function()
    if env then
      for _, r in ipairs(env.runs) do if r.child:running() then r.child:kill("KILL"); r.child:wait(5) end end
      proc.run({ argv = { "umount", "-l", env.journal_dir }, timeout = 10 })
      env.stop()
    end
    env = nil
  end)

  it("keeps the events and writes them when space returns", function()
    env = live.env({ canary_args = { "--error-rate", "0.6" } })
    mount_small(env.journal_dir)
    local filler = env.journal_dir .. "/filler"
    env.playbook = variant(env, filler, 4)
    local run = live.start(env)
    -- wait until the hook has filled the disk, then free it a second later
    live.wait_for(env, function(evs) return live.find(evs, "hook_started", function(e) return e.hook == "on_rollback" end) end,
      30, "on_rollback")
    local deadline = rollout.now() + 15
    while not run:stderr():find("JOURNAL UNWRITABLE", 1, true) do
      assert(rollout.now() < deadline, "the engine never found its journal unwritable: " .. run:stderr())
      rollout.sleep(0.05)
    end
    rollout.sleep(1)
    local before = live.events(env)
    assert.is_nil(live.find(before, "log"), "the log event cannot have been written on a full disk")
    assert(os.remove(filler))
    local freed = rollout.now()
    -- the retry writes the kept event while the hook still sleeps
    local ev = live.wait_for(env, function(evs) return live.find(evs, "log") end, 3, "the kept event")
    local after = live.events(env)
    assert.is_nil(live.find(after, "hook_finished"), "written by the retry, not by the next event")
    assert.truthy(ev.message == "the journal's disk is full now " .. string.rep("x", 10000), "the kept log event")
    print(string.format("        kept event written %.2f s after the space returned", rollout.now() - freed))
    assert.equals(1, run:wait(30), run:stderr())
    local evs = live.events(env)
    assert(seqs_ok(evs))
    local out = live.outcome(evs)
    assert.equals("rolled_back", out.outcome)
    assert.equals("trigger:errors", out.reason)
    assert.truthy(live.find(evs, "rolled_back"))
    assert.matches("JOURNAL UNWRITABLE", run:stderr())
    assert.matches("journal writable again", run:stderr())
    assert.is_nil(run:stderr():find("JOURNAL INCOMPLETE", 1, true))
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
  end, { timeout = 90 })

  it("prints what it could not write to stderr, loudly, and exits 4", function()
    env = live.env({ canary_args = { "--error-rate", "0.6" } })
    mount_small(env.journal_dir)
    env.playbook = variant(env, env.journal_dir .. "/filler", 0)
    local run = live.start(env)
    local code = run:wait(60)
    assert.equals(journal.EXIT_INCOMPLETE, code, run:stderr())
    assert.equals(4, journal.EXIT_INCOMPLETE)
    -- the rollback happened; the journal has it up to the 0 % confirmation
    assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
    local evs = live.events(env)
    assert(seqs_ok(evs))
    assert.truthy(live.find(evs, "weight_confirmed", function(e) return e.canary == 0 end))
    assert.is_nil(live.outcome(evs), "the outcome could not be written")
    local err = run:stderr()
    assert.matches("!!! JOURNAL INCOMPLETE: %d+ events could not be written to .*No space left on device", err)
    local lost = {}
    local inside = false
    for line in err:gmatch("[^\n]+") do
      if line:find("!!! end of the unwritten events", 1, true) then inside = false end
      if inside then lost[#lost + 1] = assert(json.decode(line)) end
      if line:find("They follow as JSON lines", 1, true) then inside = true end
    end
    local kinds = {}
    for i, ev in ipairs(lost) do
      kinds[#kinds + 1] = ev.event
      assert.equals(#evs + i, ev.seq, "the lost events continue the journal's seq")
    end
    assert.same({ "log", "log", "hook_finished", "rolled_back", "outcome" }, kinds)
    assert.equals("rolled_back", lost[#lost].outcome)
    -- the summary on stdout still says how it ended
    assert.truthy(run:stdout():find("outcome: rolled_back (trigger:errors)", 1, true), "the summary on stdout")
  end, { timeout = 90 })
end)

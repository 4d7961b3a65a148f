-- The journal: durable appends, torn tails, corruption, a full disk, the lock; and the
-- engine's rule that it never acts without a record (a simulated run and a real one whose
-- journal directory fills up).
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local journal = require("rollout.journal")
local core = require("rollout.journal.core")

local function tmpdir() return assert(fs.mkdtemp("rollout-journal")) end

local function write(path, data)
  local f = assert(io.open(path, "a"))
  f:write(data)
  f:close()
end

-- A tiny tmpfs, so that "disk full" is real. nil when we may not mount (not root).
local function small_fs(kb)
  local dir = tmpdir()
  local r = proc.run{ argv = { "mount", "-t", "tmpfs", "-o", "size=" .. kb .. "k,mode=0700", "tmpfs", dir } }
  if not r or r.code ~= 0 then fs.rmtree(dir); return nil end
  return dir, function()
    proc.run{ argv = { "umount", "-l", dir } }
    fs.rmtree(dir)
  end
end

local function fill(dir)
  -- dd stops at ENOSPC; whatever it wrote stays until the file is removed
  proc.run{ argv = { "dd", "if=/dev/zero", "of=" .. dir .. "/filler", "bs=4k" } }
end

describe("journal files", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() fs.rmtree(dir) end)

  it("appends whole lines, numbered, private, and reads them back", function()
    local path = journal.new_path(dir)
    local w = assert(journal.open(path))
    assert.is_true(w:append({ event = "rollout_started", t = 0, ts = 1, service = "s" }))
    assert.is_true(w:append({ event = "odd", t = 1, fn = print, nan = 0 / 0, nested = { deep = { 1, 2 } } }))
    w:close()
    assert.equals(384, fs.stat(path).mode, "0600")
    local events, info = assert(journal.read(path))
    assert.equals(2, #events)
    assert.equals(1, events[1].seq)
    assert.equals(2, events[2].seq)
    assert.matches("^function", events[2].fn, "what JSON cannot carry becomes text")
    assert.equals(json.null, events[2].nan)
    assert.same({ 1, 2 }, events[2].nested.deep)
    assert.is_nil(info.torn)
    -- a second writer continues the numbering
    local w2 = assert(journal.open(path))
    assert(w2:append({ event = "more" }))
    w2:close()
    assert.equals(3, (assert(journal.read(path)))[3].seq)
  end)

  it("ignores a torn last line (a crash mid-write), never misreads it, and repairs it before appending", function()
    local path = dir .. "/j.jsonl"
    local w = assert(journal.open(path))
    assert(w:append({ event = "weight_confirmed", canary = 10, baseline = 90 }))
    w:close()
    -- what a crash in the middle of writing {"event":"weight_confirmed","canary":50} leaves
    write(path, '{"baseline":50,"canary":50,"event":"weight_conf')
    local events, info = assert(journal.read(path))
    assert.equals(1, #events)
    assert.equals(10, events[1].canary)
    assert.equals('{"baseline":50,"canary":50,"event":"weight_conf', info.torn)
    assert.equals(10, journal.summary(events).weights.canary)
    -- a torn tail that happens to be valid JSON is still not an event: no newline, no record
    local p2 = dir .. "/j2.jsonl"
    write(p2, '{"event":"a"}\n{"event":"outcome","outcome":"promoted"}')
    local e2, i2 = assert(journal.read(p2))
    assert.equals(1, #e2)
    assert.truthy(i2.torn)
    assert.is_false(journal.summary(e2).finished)
    -- appending cuts the tail off first and says so
    local w3 = assert(journal.open(path))
    assert(w3:append({ event = "after" }))
    w3:close()
    local e3, i3 = assert(journal.read(path))
    assert.is_nil(i3.torn)
    assert.same({ "weight_confirmed", "journal_repaired", "after" }, { e3[1].event, e3[2].event, e3[3].event })
    assert.equals(#'{"baseline":50,"canary":50,"event":"weight_conf', e3[2].torn_bytes)
  end)

  it("refuses a journal with a corrupt complete line, naming the line", function()
    local path = dir .. "/bad.jsonl"
    write(path, '{"event":"a"}\n{"event":"b",,}\n{"event":"c"}\n')
    local events, err = journal.read(path)
    assert.is_nil(events)
    assert.matches("bad%.jsonl:2: corrupt journal line", err)
  end)

  it("reports a full disk with the errno text and leaves no partial line", function()
    local w = assert(journal.open("/dev/full"))
    local ok, err = w:append({ event = "x" })
    assert.is_false(ok)
    assert.equals("/dev/full: No space left on device", err)
    assert.equals(1, w:pending())
    w:close()
    local mnt, unmount = small_fs(16)
    if not mnt then return pending("cannot mount a tmpfs here (not root?)") end
    local path = mnt .. "/j.jsonl"
    local w2 = assert(journal.open(path))
    local big = string.rep("x", 6000)
    assert.is_true(w2:append({ event = "one", pad = big }))
    fill(mnt)
    local ok2, err2 = w2:append({ event = "two", pad = big })
    assert.is_false(ok2)
    assert.matches("No space left on device", err2)
    local events, info = assert(journal.read(path))
    assert.equals(1, #events, "the failed append left nothing behind")
    assert.is_nil(info.torn)
    -- space again: the backlog goes first, in order, numbered on
    os.remove(mnt .. "/filler")
    assert.is_true(w2:append({ event = "three" }))
    w2:close()
    events = assert(journal.read(path))
    assert.same({ "one", "two", "three" }, { events[1].event, events[2].event, events[3].event })
    assert.same({ 1, 2, 3 }, { events[1].seq, events[2].seq, events[3].seq })
    unmount()
  end)

  it("lists journals oldest first and finds the newest", function()
    for _, n in ipairs({ "20250101T000000.000-1.jsonl", "20250102T000000.000-1.jsonl", "lock", "x.txt" }) do
      write(dir .. "/" .. n, '{"event":"rollout_started","service":"' .. n .. '"}\n')
    end
    local list = journal.list(dir)
    assert.equals(2, #list)
    local path, events = journal.latest(dir)
    assert.equals(dir .. "/20250102T000000.000-1.jsonl", path)
    assert.equals("20250102T000000.000-1.jsonl", journal.summary(events).service)
  end)
end)

describe("journal lock", function()
  it("refuses a second holder with the holder's pid, and frees itself when the holder is killed", function()
    local dir = tmpdir()
    local lock = assert(journal.lock(dir))
    assert.equals(fs.getpid(), lock:pid())
    local again, err, pid = journal.lock(dir)
    assert.is_nil(again)
    assert.equals(fs.getpid(), pid)
    assert.matches("held by pid " .. fs.getpid(), err)
    lock:release()
    assert.is_nil(fs.stat(dir .. "/lock"), "release removes the file")
    -- another process holds it, then dies by SIGKILL
    local script = dir .. "/hold.lua"
    assert(fs.write_atomic(script, 'local l = assert(require("rollout.journal").lock(arg[1]))\n'
      .. 'print("held"); io.stdout:flush(); rollout.sleep(60); l:release()'))
    local child = assert(proc.spawn{ argv = { rollout.exe, script, dir }, stdout = dir .. "/out", stderr = dir .. "/err" })
    local deadline = rollout.now() + 10
    while not (fs.read(dir .. "/out") or ""):find("held") and rollout.now() < deadline do rollout.sleep(0.01) end
    local l2, err2, pid2 = journal.lock(dir)
    assert.is_nil(l2)
    assert.equals(child:pid(), pid2)
    assert.matches("held by pid " .. child:pid(), err2)
    child:kill("KILL")
    child:wait(5)
    local l3 = assert(journal.lock(dir), "a dead holder's lock is free (the file stays)")
    l3:release()
    fs.rmtree(dir)
  end)
end)

describe("the engine never acts without a record", function()
  it("a simulated run whose journal fails stops before the next router action", function()
    local dir = tmpdir()
    local script = dir .. "/sim.lua"
    assert(fs.write_atomic(script, [[
      local playbook = require("rollout.playbook")
      local scenario = require("rollout.sim.scenario")
      local simulation = require("rollout.simulation")
      local json = require("rollout.json")
      local pb = assert(playbook.load("playbooks/canary.lua"))
      local sc = assert(scenario.load("spec/fixtures/scenarios/steady.lua"))
      local broken, kinds, router = false, {}, nil
      local outcome, e = simulation.run(pb, sc, {
        on_engine = function(eng) router = eng.router end,
        emit = function(ev)
          kinds[#kinds + 1] = ev.event .. (type(ev.canary) == "number" and (":" .. ev.canary) or "")
          if ev.event == "weight_confirmed" and ev.canary == 25 then broken = true; return true end
          if broken then return false, "disk full" end
          return true
        end })
      print(json.encode({ outcome = outcome, kinds = kinds, weights = router:get_weights(), state = e:status() }))
    ]]))
    local r = assert(proc.run{ argv = { rollout.exe, "--clock=virtual", script }, timeout = 60 })
    fs.rmtree(dir)
    assert.equals(0, r.code, r.stderr)
    local out = json.decode(r.stdout)
    assert.equals("paused", out.outcome.outcome)
    assert.equals("journal unwritable", out.outcome.reason)
    assert.same({ baseline = 75, canary = 25 }, out.weights, "the 50 % shift was requested but never made")
    local requested50, confirmed50
    for _, k in ipairs(out.kinds) do
      if k == "weight_requested:50" then requested50 = true end
      if k == "weight_confirmed:50" then confirmed50 = true end
    end
    assert.is_true(requested50)
    assert.is_nil(confirmed50)
    assert.equals("disk full", out.state.journal_error)
  end)

  it("a real run pauses when its journal's disk fills, acts on nothing, and goes on once it can write again", function()
    local mnt, unmount = small_fs(512)
    if not mnt then return pending("cannot mount a tmpfs here (not root?)") end
    local live = require("spec.support.live_rollout")
    local env = live.env()
    env.journal_dir = mnt .. "/journal"
    local ok, err = pcall(function()
      local run = live.start(env)
      live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == 10 end) end, 30)
      fill(mnt)
      -- the gate of `ten` passes after 1.5 s; the 50 % shift must wait for the journal
      rollout.sleep(2.5)
      assert.same({ baseline = 90, canary = 10 }, (live.router(env):get_weights()))
      local st = live.ctl(env, "status")
      assert.equals("paused", st.value.state)
      assert.matches("journal unwritable: .*No space left on device", st.value.reason)
      assert.matches("JOURNAL UNWRITABLE", run:stderr())
      os.remove(mnt .. "/filler")
      assert.equals(0, run:wait(60), run:stderr())
      local events = live.events(env)
      assert.same({ 10, 50, 100 }, live.confirmed(events))
      assert.equals("promoted", live.outcome(events).outcome)
      assert.truthy(live.find(events, "paused", function(e) return e.reason:match("^journal unwritable") end),
        "the pause itself reached the journal once it could")
      local seqs = {}
      for _, e in ipairs(events) do seqs[#seqs + 1] = e.seq end
      for i = 1, #seqs do assert.equals(i, seqs[i], "no event lost or reordered") end
    end)
    env.stop()
    unmount()
    assert(ok, err)
  end)

  it("a run whose journal directory cannot be written refuses before doing anything", function()
    local mnt, unmount = small_fs(64)
    if not mnt then return pending("cannot mount a tmpfs here (not root?)") end
    assert(fs.mkdir(mnt .. "/journal"))
    proc.run{ argv = { "mount", "-o", "remount,ro", mnt } }
    local live = require("spec.support.live_rollout")
    local env = live.env()
    env.journal_dir = mnt .. "/journal"
    local run = live.start(env)
    local code = run:wait(30)
    local stderr = run:stderr()
    env.stop()
    unmount()
    assert.equals(2, code)
    assert.matches("Read%-only file system", stderr)
  end)
end)

describe("journal.core", function()
  it("reports the torn bytes and the valid length", function()
    local dir = tmpdir()
    write(dir .. "/x", "a\nbb\nccc")
    local lines, info = core.read(dir .. "/x")
    assert.same({ "a", "bb" }, lines)
    assert.equals(5, info.valid)
    assert.equals(8, info.size)
    assert.equals("ccc", info.torn)
    local nl, ninfo = core.read("/nonexistent/x")
    assert.is_nil(nl)
    assert.equals("/nonexistent/x: No such file or directory", ninfo)
    fs.rmtree(dir)
  end)
end)

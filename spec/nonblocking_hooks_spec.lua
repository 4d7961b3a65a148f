-- A hook cannot freeze the engine: against real HAProxy, sample services and traffic
-- (demo/stack.lua), playbooks/demo.lua's before_stage hook of stage 2 runs a 15 s
-- command while the canary fails half of its requests. The playbook environment has no
-- os.execute / io.popen (the hook reports what it sees), so the command goes through proc;
-- meanwhile evaluations keep their 1 s interval, the error-rate trigger fires about 2 s after
-- its condition holds (not after 15 s), the control socket answers `status` within a second,
-- and the rollback cancels the hook.
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

local function say(fmt, ...) print("        " .. string.format(fmt, ...)) end

describe("a hook running a 15 s command while the canary fails (real HAProxy)", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  it("does not delay evaluations, the trigger or the control socket", function()
    s = assert(demo_stack.start({ rps = 200 }))
    local pbfile = s.dir .. "/hook-15s.lua"
    assert(fs.write_atomic(pbfile, string.format([[
      local pb = include(%q)
      pb.hooks = { before_stage = function(ctx)
        if ctx.stage ~= "Ramp-Up" then return true end
        ctx.log("escape hatches: os.execute=" .. type(os.execute) .. " io=" .. type(io))
        local r, err = proc.run({ argv = { "sleep", "15" }, timeout = 60 })
        if not r then error(err, 0) end
        return true
      end }
      return pb
    ]], demo_stack.ROOT .. "/playbooks/demo.lua")))
    local sock = s.dir .. "/run-1/" .. demo_stack.SERVICE .. ".sock"
    local jdir = s.dir .. "/journal-1"
    local fault_at, status_times = nil, {}
    local watcher = rollout.spawn(function()
      -- wait for the hook, then break the canary and ask for status while the hook runs
      while not fault_at do
        local j = demo_stack.journal_file(jdir)
        for _, ev in ipairs(j and demo_stack.read_events(j) or {}) do
          if ev.event == "hook_started" and ev.hook == "before_stage" and ev.stage == "Ramp-Up" then
            assert(s.canary:fault({ error_rate = 0.5 }))
            fault_at = s.canary.fault_at
          end
        end
        rollout.sleep(0.05)
      end
      while true do
        local t0 = rollout.now()
        local r = proc.run({ argv = { rollout.exe, "ctl", sock, "status" }, timeout = 20 })
        if not r or r.code ~= 0 then return end -- the run has ended
        status_times[#status_times + 1] = rollout.now() - t0
        rollout.sleep(0.3)
      end
    end)
    local res = assert(s:run({ playbook = pbfile, timeout = 120 }))
    watcher:cancel()
    local out = res.output or ""
    assert.equals(1, res.code, out:sub(-2000))
    assert.equals("trigger:error_rate", res.reason, out:sub(-2000))
    assert.truthy(fault_at, "the hook never started")
    local started, log, cancelled, fired, rb
    local evals = {}
    for _, ev in ipairs(res.events) do
      if ev.event == "hook_started" and ev.stage == "Ramp-Up" then started = ev end
      if ev.event == "log" and ev.message:find("escape hatches", 1, true) then log = ev end
      if ev.event == "hook_cancelled" then cancelled = ev end
      if ev.event == "trigger_fired" then fired = fired or ev end
      if ev.event == "rollback_started" then rb = ev end
      if started and not rb and ev.event == "evaluation" then evals[#evals + 1] = ev.ts end
    end
    assert.equals("escape hatches: os.execute=nil io=nil", log and log.message)
    assert.truthy(cancelled, "the rollback cancels the running hook")
    assert.equals("before_stage", cancelled.hook)
    assert.truthy(fired and rb, "the trigger fired")
    -- evaluations went on every second while the command ran
    assert.gt(#evals, 2, "evaluations while the hook ran")
    local gap = 0
    for i = 2, #evals do gap = math.max(gap, evals[i] - evals[i - 1]) end
    local to_fire = fired.ts - fault_at
    local max_status = 0
    for _, t in ipairs(status_times) do max_status = math.max(max_status, t) end
    say("hook started %.2f s before the fault; trigger fired %.2f s after it; %d evaluations, largest gap %.2f s; "
      .. "%d status calls, slowest %.3f s", fault_at - started.ts, to_fire, #evals, gap, #status_times, max_status)
    assert.lt(gap, 2.5, "largest gap between evaluations while the hook ran")
    -- pending at the first evaluation seeing > 5 % in its 3 s window, then `for` 2 s
    assert.lt(to_fire, 8, "fault to trigger_fired")
    assert.lt(fired.ts - started.ts, 14, "the trigger did not wait for the 15 s command")
    assert.gt(#status_times, 0, "ctl status answered while the hook ran")
    assert.lt(max_status, 1.0, "ctl status while the hook ran")
  end, { timeout = 180 })
end)

-- Budgets for Lua: rollout.alloc's memory caps, and every playbook hook under an
-- instruction, wall-time and memory budget (engine.run_hook, playbook key hook_budget).
-- A runaway fails that hook only, with the hook's name; the engine keeps ticking and its
-- triggers keep firing while a hook spins.
local alloc = require("rollout.alloc")
local budget = require("rollout.budget")
local fs = require("rollout.fs")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local sim = require("spec.support.sim")

local function write(dir, name, text)
  local p = dir .. "/" .. name
  local f = assert(io.open(p, "w"))
  f:write(text)
  f:close()
  return p
end

local function first(events, kind, pred)
  for _, e in ipairs(events) do if e.event == kind and (not pred or pred(e)) then return e end end
end

describe("rollout.alloc", function()
  it("caps what a section may keep, and raises naming the cap", function()
    local ok, err = pcall(alloc.run, function()
      local t = {}
      for i = 1, 1e7 do t[i] = { i } end
      return #t
    end, "8Mi")
    assert.is_false(ok)
    assert.equals("budget exceeded: more than 8 MiB of memory", err)
    assert.equals(0, alloc.stats().sections)
  end)

  it("passes results and ordinary errors through", function()
    local a, b = alloc.run(function(x, y) return x + y, #string.rep("x", 1000) end, "1Mi", 1, 2)
    assert.equals(3, a)
    assert.equals(1000, b)
    local ok, err = pcall(alloc.run, function() error("boom", 0) end, 1000)
    assert.is_false(ok)
    assert.equals("boom", err)
  end)

  it("is sticky: a pcall inside the section cannot keep allocating", function()
    local ok, err = pcall(alloc.run, function()
      pcall(string.rep, "x", 1 << 24)
      return { "kept going" }
    end, "1Mi")
    assert.is_false(ok)
    assert.matches("budget exceeded: more than 1 MiB", err)
  end)

  it("garbage does not count, only what the section keeps", function()
    local n = alloc.run(function()
      local total = 0
      for _ = 1, 200 do total = total + #string.rep("y", 64 * 1024) end -- 12.5 MiB of garbage
      return total
    end, "4Mi")
    assert.equals(200 * 64 * 1024, n)
  end)

  it("charges a parked task nothing for what other tasks allocate meanwhile", function()
    local t = rollout.spawn(function()
      return alloc.run(function() rollout.sleep(0.05); return #string.rep("y", 1000) end, "64k")
    end)
    local other = rollout.spawn(function() local s = string.rep("z", 1 << 22); return #s end)
    assert.equals(1 << 22, other:wait())
    assert.equals(1000, t:wait())
  end)

  it("a cancelled section is closed and never charged again", function()
    local t = rollout.spawn(function() return alloc.run(function() rollout.sleep(30) end, "1k") end)
    rollout.sleep(0.01)
    local before = alloc.stats().sections
    assert.ge(before, 1)
    t:cancel("spec")
    local keep = {}
    for i = 1, 1e5 do keep[i] = { i } end -- would fail if the cancelled 1k section still paid
    collectgarbage()
    collectgarbage()
    assert.equals(before - 1, alloc.stats().sections)
    assert.equals(1e5, #keep)
  end)

  it("composes with rollout.budget: instructions and memory, whichever runs out first", function()
    local ok, err = pcall(budget.run, alloc.run, { instructions = 1e6 }, function() while true do end end, "1Mi")
    assert.is_false(ok)
    assert.matches("budget exceeded: more than 1000000 instructions", err)
    ok, err = pcall(budget.run, alloc.run, { instructions = 1e9 }, function()
      local t = {}
      while #t >= 0 do t[#t + 1] = "x" .. #t end
    end, "4Mi")
    assert.is_false(ok)
    assert.equals("budget exceeded: more than 4 MiB of memory", err)
  end)

  it("has a global limit, and raises on bad arguments", function()
    assert.gt(alloc.stats().limit, 0)
    assert.gt(alloc.stats().total, 0)
    assert.has_error(function() alloc.run(print, "1Q") end, "unknown size unit")
    assert.has_error(function() alloc.run(print, -1) end, "between 0 and 2^63")
    assert.has_error(function() alloc.run("print", 1) end)
  end)
end)

describe("REPL budgets", function()
  it("an evaluation that hoards memory fails by its cap, and the session goes on", function()
    local s = require("rollout.repl").new({ budget = { instructions = 1e6, seconds = 60, memory = "4Mi" } })
    local r = s:eval("local t = {} while true do t[#t + 1] = {} end")
    assert.is_false(r.ok)
    assert.equals("budget exceeded: more than 4 MiB of memory", r.error)
    assert.equals("budget exceeded: more than 4 MiB of memory", s:eval("string.rep('x', 1e8)").error)
    assert.equals("1000000", s:eval("#string.rep('x', 1e6)").text)
    assert.matches("budget exceeded: more than 1000000 instructions", s:eval("while true do end").error)
  end)
end)

describe("hook budgets", function()
  local dir
  setup(function() dir = fs.mkdtemp("hookbudget") end)
  teardown(function() fs.rmtree(dir) end)

  it("hook_budget is validated like the rest of the playbook", function()
    local raw = { name = "x", versions = { baseline = {}, canary = {} }, stages = { { weight = 100, hold = "1m" } },
      hook_budget = { instructions = 0, memory = "2Qi", time = "soon", cpu = 1 } }
    local pb, errs = playbook.validate(raw, { file = "x.lua" })
    assert.is_nil(pb)
    local text = {}
    for _, e in ipairs(errs) do text[#text + 1] = playbook.format_error(e) end
    text = table.concat(text, "\n")
    assert.matches("hook_budget.instructions: must be at least 1", text)
    assert.matches("hook_budget.memory: unknown size unit", text)
    assert.matches("hook_budget.time: ", text)
    assert.matches("hook_budget.cpu: ", text)
    raw.hook_budget = { instructions = 1e7, memory = "64Mi", time = "2m" }
    pb = assert(playbook.validate(raw, { file = "x.lua" }))
    assert.equals(10000000, pb.hook_budget.instructions)
    assert.equals(64 * 1024 * 1024, pb.hook_budget.memory)
    assert.equals(120, pb.hook_budget.time)
  end)

  it("a hook that spins fails by its instruction budget, named, and the rollout rolls back", function()
    local p = write(dir, "spin.lua", [[
      local pb = include("]] .. fs.realpath("spec/fixtures/playbooks/minimal.lua") .. [[")
      pb.hook_budget = { instructions = 1e7 }
      pb.hooks = { before_stage = function(ctx) if ctx.stage_index == 2 then while true do end end end }
      return pb]])
    local summary, events = sim.simulate(p, "spec/fixtures/scenarios/steady.lua", { "--run-hooks" })
    assert.equals("rolled_back", summary.outcome)
    assert.equals("error:hook:before_stage", summary.reason)
    local failed = first(events, "hook_failed")
    assert.equals("before_stage", failed.hook)
    assert.matches("^hook before_stage: .*budget exceeded: more than 10000000 instructions", failed.error)
    assert.truthy(first(events, "weight_confirmed", function(e) return e.canary == 0 end), "the rollback went on")
  end)

  it("a hook that hoards memory fails by its memory cap, and the engine is not hit", function()
    local p = write(dir, "hoard.lua", [[
      local pb = include("]] .. fs.realpath("spec/fixtures/playbooks/minimal.lua") .. [[")
      pb.hook_budget = { memory = "4Mi" }
      pb.hooks = { after_stage = function() local t = {} while true do t[#t + 1] = { #t } end end }
      return pb]])
    local summary, events = sim.simulate(p, "spec/fixtures/scenarios/steady.lua", { "--run-hooks" })
    assert.equals("rolled_back", summary.outcome)
    assert.equals("error:hook:after_stage", summary.reason)
    local failed = first(events, "hook_failed")
    assert.equals("hook after_stage: budget exceeded: more than 4 MiB of memory", failed.error)
    assert.truthy(first(events, "rolled_back"))
  end)

  it("the engine keeps ticking and a trigger fires while a hook spins (real clock)", function()
    local pb = assert(playbook.validate({
      name = "spin", versions = { baseline = { version = "v1" }, canary = { version = "v2" } },
      interval = "100ms", trigger_window = "1s", gate_window = "1s",
      stages = { { weight = 20, hold = "500ms", min_samples = 0 }, { weight = 100, hold = "1m" } },
      triggers = { errors = { condition = "error_rate > 5%", duration = "300ms" } },
      hook_budget = { instructions = 1e12, time = "30s" },
      hooks = { after_stage = function() local x = 0 while true do x = x + 1 end end },
    }, { file = "spin" }))
    local sc = assert(require("rollout.sim.scenario").check({
      seed = 3, traffic = { rps = 2000 },
      baseline = { error_rate = 0.001, latency = { p50 = "10ms", p99 = "50ms" } },
      canary = { error_rate = 0.001, latency = { p50 = "10ms", p99 = "50ms" }, changes = { { at = "900ms", error_rate = 0.5 } } },
    }))
    local t0 = rollout.now()
    local router = require("rollout.sim.router").new({ now = function() return rollout.now() - t0 end })
    local src = require("rollout.sim.source").new(sc, { router = router, interval = pb.interval, history = 1, reservoir = 0 })
    local source = {
      provides = src.provides,
      tick = function(_, now) return src:tick(now - t0) end,
      signals = function(_, now, win) return src:signals(now - t0, win) end,
    }
    local events = {}
    local e = engine.new(pb, { router = router, sources = { source }, emit = function(ev) events[#events + 1] = ev end, who = "spec" })
    local outcome = e:run()
    assert.equals("rolled_back", outcome.outcome)
    assert.equals("trigger:errors", outcome.reason)
    local started, cancelled
    local ticks = 0
    for _, ev in ipairs(events) do
      if ev.event == "hook_started" then started = ev
      elseif ev.event == "hook_cancelled" then cancelled = ev
      elseif started and not cancelled and ev.event == "evaluation" then ticks = ticks + 1 end
    end
    assert.truthy(started, "the hook ran")
    assert.truthy(cancelled, "the spinning hook was cancelled by the trigger")
    assert.equals("after_stage", cancelled.hook)
    assert.equals("trigger:errors", cancelled.why)
    assert.ge(ticks, 3, "evaluations went on while the hook spun")
    assert.lt(cancelled.elapsed, 10)
  end, { timeout = 60 })
end)

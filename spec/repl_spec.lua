-- The REPL: evaluation as lua.c does it (expressions print, `<eof>` continues, errors do not
-- end the session), the budget that stops runaway code while the loop goes on, and
-- `rollout repl PLAYBOOK` scripted through a pipe against a real HAProxy.
local proc = require("rollout.proc")
local repl = require("rollout.repl")
local budget = require("rollout.budget")

describe("repl sessions", function()
  it("prints expressions, runs statements, keeps globals per session", function()
    local s = repl.new()
    local r = s:eval("1 + 2")
    assert.is_true(r.ok)
    assert.equals(3, r.value)
    assert.equals("3", r.text)
    r = s:eval("x = 40")
    assert.is_true(r.ok)
    assert.equals("", r.text)
    assert.equals("42", s:eval("x + 2").text)
    assert.equals("a\t1\tnil", s:eval("'a', 1, nil").text)
    assert.is_nil(rawget(_G, "x"), "globals stay in the session")
    local other = repl.new()
    assert.equals("nil", other:eval("x").text)
  end)

  it("pretty-prints tables and captures print()", function()
    local s = repl.new()
    local r = s:eval("{ b = { 1, 2 }, a = 'x' }")
    assert.equals('{\n  a = "x",\n  b = {\n    1,\n    2,\n  },\n}', r.text)
    r = s:eval("print('hello', 1); return 2")
    assert.equals("hello\t1\n2", r.text)
  end)

  it("continues incomplete statements the way lua.c detects them", function()
    local s = repl.new()
    local r = s:eval("function sq(n)")
    assert.is_true(r.incomplete)
    r = s:eval("  return n * n")
    assert.is_true(r.incomplete)
    r = s:eval("end")
    assert.is_true(r.ok)
    assert.is_nil(r.incomplete)
    assert.equals("49", s:eval("sq(7)").text)
    r = s:eval("local t = {")
    assert.is_true(r.incomplete)
    r = s:eval("1, 2 }")
    assert.is_true(r.ok)
    -- a real syntax error is not "incomplete"
    r = s:eval("x = = 1")
    assert.is_false(r.ok)
    assert.matches("unexpected symbol", r.error)
    assert.is_nil(s.pending)
    assert.equals("3", s:eval("1 + 2").text)
  end)

  it("reports errors and goes on", function()
    local s = repl.new()
    local r = s:eval("error('boom')")
    assert.is_false(r.ok)
    assert.equals("repl:1: boom", r.error)
    r = s:eval("error({ code = 7 })")
    assert.is_false(r.ok)
    assert.matches("error object is a table value", r.error)
    assert.equals("2", s:eval("1 + 1").text)
  end)

  it("commands take the line unless it reads as Lua", function()
    local seen
    local s = repl.new({ commands = { status = function(args) seen = args; return { state = "stage" }, "state: stage" end,
      abort = function(args) return nil, "refused: " .. args end } })
    local r = s:eval("status")
    assert.equals("state: stage", r.text)
    assert.same({ state = "stage" }, r.value)
    assert.equals("", seen)
    r = s:eval("abort bad release")
    assert.is_false(r.ok)
    assert.equals("refused: bad release", r.error)
    s:eval("status2 = 5")
    assert.equals("5", s:eval("status2").text)
    -- `status(...)`, `status.x`, `status = ...` are Lua
    assert.is_false(s:eval("status()").ok)
    assert.is_true(s:eval("status = 1").ok)
  end)

  it("stops a runaway with its budget and cancels an evaluation that waits too long", function()
    local s = repl.new({ budget = { instructions = 1e6, seconds = 0.5 } })
    local r = s:eval("while true do end")
    assert.is_false(r.ok)
    assert.matches("budget exceeded: more than 1000000 instructions", r.error)
    r = s:eval("rollout.sleep(5)")
    assert.is_false(r.ok)
    assert.matches("budget exceeded: still running after 0.5 s", r.error)
    assert.equals("ok", s:eval("'ok'").text)
  end)
end)

describe("budget.run", function()
  it("returns the function's results and raises its errors", function()
    assert.same({ 3, "x" }, { budget.run(function(a, b) return a + b, "x" end, { instructions = 1e5 }, 1, 2) })
    assert.has_error(function() budget.run(function() error("inner", 0) end) end, "inner")
    assert.has_error(function() budget.run(print, { bogus = 1 }) end, "unknown option 'bogus'")
  end)

  it("cannot be defeated by a pcall inside", function()
    local ok, err = pcall(budget.run, function()
      while true do pcall(function() while true do end end) end
    end, { instructions = 1e6 })
    assert.is_false(ok)
    assert.matches("budget exceeded", err)
  end)

  it("a time budget stops a loop, and the loop keeps serving other tasks meanwhile", function()
    local ticks = 0
    local ticker = rollout.every(0.01, function() ticks = ticks + 1 end)
    local t0 = rollout.now()
    local ok, err = pcall(budget.run, function() while true do end end, { seconds = 0.3 })
    local took = rollout.now() - t0
    ticker:cancel()
    assert.is_false(ok)
    assert.matches("budget exceeded: ran for more than 0.3 s", err)
    assert.near(0.3, took, 0.1)
    -- 30 ticks were due; a loop that never yielded would let none through (the ticker is
    -- cancelled as soon as the budget stops it). How many run depends on this process's
    -- share of a core (spec files run side by side; 3 under -j 10 on a busy machine), so
    -- the check is that the loop let the ticker run more than once, not how often.
    assert.truthy(ticks >= 2, "other tasks ran " .. ticks .. " times during the 0.3 s")
  end)

  it("charges coroutines created inside and leaves no hook behind", function()
    local ok, err = pcall(budget.run, function()
      local co = coroutine.wrap(function() while true do end end)
      co()
    end, { instructions = 1e6 })
    assert.is_false(ok)
    assert.matches("budget exceeded", err)
    local n = 0
    for _ = 1, 3e6 do n = n + 1 end -- would raise if a hook were left on this thread
    assert.equals(3e6, n)
    assert.is_nil(debug.gethook())
  end)
end)

describe("rollout repl", function()
  local run_repl = function(script, args)
    local argv = { rollout.exe, "repl" }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    return assert(proc.run{ argv = argv, stdin = script, timeout = 60 })
  end

  it("reads a script from a pipe: results on stdout, errors on stderr, exit 1 if a line failed", function()
    local r = run_repl("x = 6\nx * 7\nfor i = 1, 2 do\n  print('i', i)\nend\n")
    assert.equals(0, r.code, r.stderr)
    assert.equals("42\ni\t1\ni\t2\n", r.stdout)
    r = run_repl("y = 1 +\n1\ny\nerror('no')\n'after'\n")
    assert.equals(1, r.code)
    assert.equals("2\nafter\n", r.stdout)
    assert.matches("repl:1: no", r.stderr)
    r = run_repl("json.encode({ a = 1 })\n")
    assert.equals('{"a":1}\n', r.stdout, "the host API is there")
  end)

  it("loads a playbook's router and sources: read and set HAProxy's weights, sample signals", function()
    local live = require("spec.support.live_rollout")
    local env = live.env()
    local args = { live.PLAYBOOK }
    for _, a in ipairs(env.sets) do args[#args + 1] = a end
    local ok, err = pcall(function()
      local r = run_repl(table.concat({
        "weights().canary",
        "set_weights(30)",
        "weights()",
        "router.type, #sources",
        "signals('1s') ~= nil",
        "set_weights(0)",
      }, "\n") .. "\n", args)
      assert.equals(0, r.code, r.stderr)
      local lines = {}
      for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equals("0", lines[1])
      assert.equals("true", lines[2])
      assert.matches("baseline = 70", r.stdout)
      assert.matches("canary = 30", r.stdout)
      assert.matches("haproxy\t1", r.stdout)
      assert.same({ baseline = 100, canary = 0 }, (live.router(env):get_weights()))
      -- a bad playbook is a usage error
      local bad = run_repl("", { "spec/fixtures/playbooks/broken.lua" })
      assert.equals(2, bad.code)
    end)
    env.stop()
    assert(ok, err)
  end)
end)

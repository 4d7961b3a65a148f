-- rollout backtest: real `rollout run`s against HAProxy and sample services write journals;
-- backtesting them under a stricter and a looser playbook shows exactly the decisions that
-- change, from the journals alone.
local proc = require("rollout.proc")
local fs = require("rollout.fs")
local json = require("rollout.json")
local live = require("spec.support.live_rollout")

local function backtest(pb, dir, extra)
  local argv = { rollout.exe, "backtest", pb, "--journals", dir }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  return assert(proc.run({ argv = argv, timeout = 60 }))
end

local function rows_of(r)
  assert.equals(0, r.code, r.stderr)
  local doc = assert(json.decode(r.stdout), r.stdout)
  local by = {}
  for _, row in ipairs(doc.rows) do by[row.rollout] = row end
  return doc, by
end

-- the newest journal in e's directory other than `except`, by its name
local function journal_name(e, except)
  local list = require("rollout.journal").list(e.journal_dir)
  for i = #list, 1, -1 do
    local n = list[i]:match("([^/]+)%.jsonl$")
    if n ~= except then return n end
  end
end

describe("rollout backtest on journals of real runs", function()
  local env, env2, all, slow, failing
  setup(function()
    -- the canary answers 40 ms slower than the baseline, without errors: promoted
    env = live.env{ canary_args = { "--latency-p50", "40ms", "--latency-p99", "80ms" } }
    local run = live.start(env, { "--json" })
    assert.equals(0, run:wait(60), run:stderr())
    slow = journal_name(env)
    -- a canary failing 60 % of its requests: the `errors` trigger rolls it back
    env2 = live.env{ canary_args = { "--error-rate", "0.6" } }
    local run2 = live.start(env2, { "--json" })
    assert.equals(1, run2:wait(60), run2:stderr())
    failing = journal_name(env2)
    -- both journals in one directory tree, as .rollout/journal/<service>/ holds them
    all = env.dir .. "/all"
    for i, e in ipairs({ env, env2 }) do
      assert(fs.mkdir(all .. "/" .. i, 448, true))
      for _, p in ipairs(require("rollout.journal").list(e.journal_dir)) do
        assert(fs.write_atomic(all .. "/" .. i .. "/" .. p:match("([^/]+)$"), assert(fs.read(p))))
      end
    end
  end)
  teardown(function()
    if env then env.stop() end
    if env2 then env2.stop() end
  end)

  it("records every evaluation's signal values with counts and window", function()
    local evs = live.events(env)
    local ev = live.find(evs, "evaluation", function(e)
      return e.canary and (e.canary.requests or 0) > 0 and (e.canary.health_total or 0) > 0
    end)
    assert.truthy(ev, "an evaluation with canary requests")
    assert.equals(1, ev.window)
    assert.is_number(ev.canary.errors)
    assert.is_number(ev.canary.health_total)
    local g = live.find(evs, "gate")
    assert.is_number(g.canary.errors)
    for _, c in ipairs(g.checks) do
      if c.signal == "error_rate" then assert.is_number(c.evidence.n) end
    end
  end)

  it("the same playbook changes nothing", function()
    local doc = rows_of(backtest(live.PLAYBOOK, all, { "--json", "--all" }))
    assert.equals(2, doc.rollouts)
    assert.equals(0, doc.changed, json.encode(doc))
  end)

  it("a stricter playbook (p99 <= 5 ms) would have rolled the slow canary back at its first gate", function()
    local strict = live.variant(env, "strict", [[pb.thresholds.p99 = "5ms"]])
    local doc, by = rows_of(backtest(strict, all, { "--json" }))
    assert.equals(1, doc.changed, json.encode(doc))
    local row = assert(by[slow], json.encode(doc))
    assert.equals("promoted", row.old.outcome)
    assert.equals("rolled_back", row.new.outcome)
    assert.equals("gate:p99", row.new.reason)
    assert.equals("ten", row.new.stage)
    assert.truthy(row.new.at >= 1.5 and row.new.at < 3, "at the first gate: " .. row.new.at)
    -- the rollout that was rolled back stays rolled back (its trigger still fires first)
    assert.is_nil(by[failing])
    -- and the table says so
    local r = backtest(strict, all)
    assert.equals(0, r.code, r.stderr)
    assert.matches(slow:gsub("%p", "%%%0") .. "%s+fast%s+promoted at full %d.%ds%s+rolled_back %(gate:p99%)%s+ten 1%.%ds", r.stdout)
    assert.matches("1 of 2 rollouts would be decided differently", r.stdout)
  end)

  it("a looser playbook would not have rolled the failing canary back: undecided past the recorded data", function()
    local loose = live.variant(env, "loose", [[
pb.thresholds.error_rate = "50%"
pb.triggers.errors.condition = "error_rate > 90%"
]])
    local doc, by = rows_of(backtest(loose, all, { "--json" }))
    assert.equals(1, doc.changed, json.encode(doc))
    local row = assert(by[failing], json.encode(doc))
    assert.equals("rolled_back", row.old.outcome)
    assert.matches("^trigger:errors", row.old.reason)
    assert.equals("undecided", row.new.outcome)
    assert.matches("^no data past", row.new.reason)
  end)

  it("bad input exits 2 and names the problem", function()
    local r = backtest(live.PLAYBOOK, env.dir .. "/nowhere")
    assert.equals(2, r.code)
    assert.matches("no journal", r.stderr)
    r = assert(proc.run({ argv = { rollout.exe, "backtest", live.PLAYBOOK }, timeout = 10 }))
    assert.equals(2, r.code)
    assert.matches("%-%-journals", r.stderr)
    local bad = env.dir .. "/bad"
    assert(fs.mkdir(bad))
    assert(fs.write_atomic(bad .. "/x.jsonl", '{"event":"rollout_started","t":0}\nnot json\n{"event":"outcome","t":1}\n'))
    r = backtest(live.PLAYBOOK, bad)
    assert.equals(2, r.code)
    assert.matches("x%.jsonl:2: corrupt journal line", r.stderr)
  end)
end)

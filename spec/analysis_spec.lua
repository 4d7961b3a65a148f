-- analysis_spec.lua: the judge as a stage gate (rollout.analysis), where its samples come
-- from (rollout.reservoir, the simulator's raw latencies, rollout.window), its settings in
-- playbooks, and whole simulated rollouts with it.
local analysis = require("rollout.analysis")
local reservoir = require("rollout.reservoir")
local window = require("rollout.window")
local histogram = require("rollout.histogram")
local playbook = require("rollout.playbook")
local rng = require("rollout.rng")
local fs = require("rollout.fs")
local simsupport = require("spec.support.sim")

local function first(events, kind, pred)
  for _, e in ipairs(events) do if e.event == kind and (not pred or pred(e)) then return e end end
end

describe("sim: lognormal_sample", function()
  it("draws the same stream as lognormal and returns an even sample of it", function()
    local a, b = rng.new(9), rng.new(9)
    local ha, hb = histogram.new(), histogram.new()
    a:lognormal(ha, 5000, math.log(0.04), 0.6)
    local kept = b:lognormal_sample(hb, 5000, math.log(0.04), 0.6, 400)
    assert.equals(400, #kept)
    assert.equals(ha:count(), hb:count())
    assert.equals(ha:sum(), hb:sum())
    assert.equals(a:uniform(), b:uniform(), "the generators are in the same state afterwards")
    local sorted = table.move(kept, 1, #kept, 1, {})
    table.sort(sorted)
    assert.near(0.04, sorted[200], 0.004, "the sample's median is the distribution's")
    assert.equals(7, #b:lognormal_sample(hb, 7, 0, 0.5, 400), "fewer draws than k: all of them")
    assert.equals(0, #b:lognormal_sample(hb, 0, 0, 0.5, 400))
  end)
end)

describe("reservoir", function()
  it("keeps at most size values and counts what it saw", function()
    local r = reservoir.new(10, 3)
    for i = 1, 1000 do r:add(i) end
    assert.equals(10, #r:values())
    assert.equals(1000, r:seen())
    local r2 = reservoir.new(10, 3)
    for i = 1, 4 do r2:add(i) end
    assert.same({ 1, 2, 3, 4 }, r2:values())
    assert.has_error(function() reservoir.new(0) end)
  end)

  it("gives every value the same chance (Algorithm R)", function()
    local hits = {}
    local trials = 3000
    for seed = 1, trials do
      local r = reservoir.new(5, seed)
      for i = 1, 50 do r:add(i) end
      for _, v in ipairs(r:values()) do hits[v] = (hits[v] or 0) + 1 end
    end
    -- each of the 50 values is kept with probability 5/50: 300 of 3000, sd ~16
    for i = 1, 50 do
      assert.truthy(hits[i] and math.abs(hits[i] - 300) < 80, "value " .. i .. " kept " .. tostring(hits[i]) .. " times")
    end
  end)

  it("merges intervals in proportion to their requests, up to a cap", function()
    local a, b = {}, {}
    for i = 1, 100 do a[i] = i end
    for i = 1, 50 do b[i] = 1000 + i end
    -- a kept 100 of 1000 requests, b all of its 50: b gets 50 of every 1050 picks
    local m = reservoir.merge({ { values = a, n = 1000 }, { values = b, n = 50 } })
    local from_b = 0
    for _, v in ipairs(m) do if v > 1000 then from_b = from_b + 1 end end
    assert.equals(105, #m)
    assert.equals(5, from_b)
    local capped = reservoir.merge({ { values = a, n = 1000 }, { values = b, n = 50 } }, 21)
    assert.equals(21, #capped)
    assert.same({}, reservoir.merge({}, 10))
  end)
end)

-- A rollout.window with three 10 s intervals for each version; the second canary one empty.
local function store()
  local w = window.new({ keep = 3600 })
  local function rec(req, err, lat, samples)
    local h = histogram.new()
    for _, v in ipairs(lat) do h:record(v) end
    return { requests = req, errors = err, latency = h, health_ok = 1, health_total = 1, samples = samples }
  end
  w:add("baseline", 10, rec(1000, 2, { 0.04, 0.05 }, { 0.04, 0.05 }))
  w:add("baseline", 20, rec(1000, 4, { 0.04, 0.06 }, { 0.04, 0.06 }))
  w:add("baseline", 30, rec(1000, 0, { 0.05 }, { 0.05 }))
  w:add("canary", 10, rec(100, 1, { 0.1 }, { 0.1 }))
  w:add("canary", 20, rec(0, 0, {}, {}))
  w:add("canary", 30, rec(100, 3, { 0.2 }, { 0.2 }))
  return w
end

describe("analysis: samples", function()
  it("reads per-interval series and the merged reservoir from a rollout.window", function()
    local w = store()
    local c = analysis.window_samples(w, "canary", 30, 30)
    assert.equals(200, c.requests)
    assert.equals(3, #c.error_rate)
    assert.near(0.01, c.error_rate[1], 1e-12)
    assert.truthy(c.error_rate[2] ~= c.error_rate[2], "an interval without requests is NaN, never 0")
    assert.near(0.03, c.error_rate[3], 1e-12)
    assert.truthy(c.p99[2] ~= c.p99[2])
    assert.near(0.2, c.p99[3], 0.2 * 0.01)
    assert.same({ 0.1, 0.2 }, c.latency)
    local b = analysis.window_samples(w, "baseline", 30, 20)
    assert.equals(2000, b.requests, "only the intervals inside (now - window, now]")
    assert.equals(2, #b.error_rate)
  end)

  it("gathers from samples() first, then from a source's rollout.window", function()
    local w = store()
    local with_samples = { samples = function()
      return { baseline = { requests = 7, latency = { 1 } }, canary = { requests = 8, latency = { 2 } } }
    end }
    local with_window = { window = w }
    local d = assert(analysis.gather({ sources = { with_samples, with_window } }, 30, 30))
    assert.equals(7, d.baseline.requests, "the first source wins")
    assert.same({ 2 }, d.canary.latency)
    assert.equals(3, #d.canary.error_rate, "keys the first lacks come from the next")
    local failing = { samples = function() return nil, "scrape failed" end }
    local none, err = analysis.gather({ sources = { failing } }, 30, 30)
    assert.is_nil(none)
    assert.equals("scrape failed", err)
    local _, err2 = analysis.gather({ sources = { { signals = function() end } } }, 30, 30)
    assert.matches("no source provides samples", err2)
  end)
end)

-- An engine stand-in: what analysis.gate reads (pb, sources, stage_start) and emit().
local function fake_engine(pb, sources, held)
  local e = { pb = pb, sources = sources, stage_start = rollout.now() - (held or 300), events = {} }
  function e.emit(self, kind, ev) ev.event = kind; self.events[#self.events + 1] = ev; return ev end
  return e
end

local function lognormal(seed, n, median, sigma)
  local r = rng.new(seed)
  local t = {}
  for i = 1, n do t[i] = median * math.exp(sigma * r:normal()) end
  return t
end

local function source(b_lat, c_lat, b_err, c_err, b_req, c_req)
  local function series(v, n, phase) local t = {} for i = 1, n do t[i] = v * (1 + 0.1 * math.sin(i + phase)) end return t end
  return { samples = function()
    return { baseline = { requests = b_req or 50000, latency = b_lat, error_rate = series(b_err, 30, 0), p99 = series(0.2, 30, 0) },
             canary = { requests = c_req or 5000, latency = c_lat, error_rate = series(c_err, 30, 1), p99 = series(0.2, 30, 1) } }
  end }
end

describe("analysis: the gate", function()
  local stage = { name = "Initial", index = 1, weight = 5, hold = 300, max_hold = 600 }
  local now = 300

  it("does nothing where the judge is not enabled", function()
    local e = fake_engine({ gate_window = 300, interval = 10, stages = { stage } }, {}, now)
    assert.equals("pass", analysis.gate(e, stage))
    assert.equals(0, #e.events)
    assert.is_false(analysis.wanted(e.pb))
  end)

  it("passes a canary like its baseline, and says why in a judge event", function()
    local pb = { gate_window = 300, interval = 10, judge = { stages = true }, stages = { stage } }
    local e = fake_engine(pb, { source(lognormal(1, 5000, 0.04, 0.6), lognormal(2, 3000, 0.04, 0.6), 0.002, 0.002) }, now)
    assert.is_true(analysis.wanted(pb))
    assert.equals("pass", analysis.gate(e, stage))
    local ev = e.events[1]
    assert.equals("judge", ev.event)
    assert.equals("judge", ev.name)
    assert.equals(100, ev.score)
    assert.equals("pass", ev.verdict)
    assert.equals(300, ev.window)
    assert.equals(3, #ev.metrics)
    for _, m in ipairs(ev.metrics) do
      assert.equals("Pass", m.classification, m.name)
      assert.is_number(m.p, m.name)
      assert.is_number(m.ratio, m.name)
      assert.equals(5000, m.n.canary)
    end
  end)

  it("fails a canary with twice the errors: why 'judge', error_rate critical", function()
    local pb = { gate_window = 300, interval = 10, judge = { stages = { "Initial" } }, stages = { stage } }
    local lat = lognormal(3, 3000, 0.04, 0.6)
    local e = fake_engine(pb, { source(lat, lat, 0.002, 0.004) }, now)
    local v, why = analysis.gate(e, stage)
    assert.equals("fail", v)
    assert.equals("judge", why)
    assert.same({ "error_rate" }, e.events[1].critical)
    assert.equals(0, e.events[1].score)
  end)

  it("is inconclusive with too few requests, with no data, or without samples", function()
    local pb = { gate_window = 300, interval = 10, judge = { stages = true, min_samples = 10000 }, stages = { stage } }
    local lat = lognormal(4, 3000, 0.04, 0.6)
    local e = fake_engine(pb, { source(lat, lat, 0.002, 0.002) }, now)
    assert.same({ "inconclusive", "judge_min_samples" }, { analysis.gate(e, stage) })
    local pb2 = { gate_window = 300, interval = 10, judge = { stages = true }, stages = { stage } }
    local e2 = fake_engine(pb2, { { samples = function() return { baseline = {}, canary = {} } end } }, now)
    assert.same({ "inconclusive", "judge_no_data" }, { analysis.gate(e2, stage) })
    local e3 = fake_engine(pb2, { { signals = function() end } }, now)
    assert.same({ "inconclusive", "judge_source_error" }, { analysis.gate(e3, stage) })
    assert.matches("no source provides samples", e3.events[1].error)
  end)

  it("a marginal score extends by default, or passes or fails as on_marginal says", function()
    local lat = lognormal(5, 3000, 0.04, 0.6)
    local slow = lognormal(6, 3000, 0.06, 0.6)
    local cfg = function(on)
      return { stages = true, on_marginal = on, pass = 95, marginal = 60, groups = { errors = 70, latency = 30 },
        metrics = { { name = "error_rate", group = "errors" }, { name = "latency", group = "latency", allowed_increase = 1.1 } } }
    end
    local results = {}
    for _, on in ipairs({ "inconclusive", "pass", "fail" }) do
      local pb = { gate_window = 300, interval = 10, judge = cfg(on), stages = { stage } }
      local e = fake_engine(pb, { source(lat, slow, 0.002, 0.002) }, now)
      results[on] = { analysis.gate(e, stage) }
      assert.equals(70, e.events[1].score)
    end
    assert.same({ "inconclusive", "judge_marginal" }, results.inconclusive)
    assert.same({ "pass" }, results.pass)
    assert.same({ "fail", "judge" }, results.fail)
  end)

  it("leaves out a default metric no source measures; keeps one the playbook names", function()
    -- a rollout.window without raw latencies (what scrape and probe sources hold)
    local w = window.new({ keep = 3600 })
    local t0 = rollout.now() - 300 -- the last 5 minutes, on the clock the gate reads
    for i = 1, 30 do
      local hb, hc = histogram.new(), histogram.new()
      hb:record(0.04 + 0.001 * (i % 7), 900); hb:record(0.2, 10)
      hc:record(0.04 + 0.001 * ((i + 3) % 7), 90); hc:record(0.2, 1)
      w:add("baseline", t0 + 10 * i, { requests = 1000, errors = 2 + i % 3, latency = hb })
      w:add("canary", t0 + 10 * i, { requests = 100, errors = i % 2, latency = hc })
    end
    local src = { window = w }
    local pb = { gate_window = 300, interval = 10, judge = { stages = true }, stages = { stage } }
    local e = fake_engine(pb, { src }, 300)
    local ok, v, why = pcall(analysis.gate, e, stage)
    local named = { gate_window = 300, interval = 10, judge = { stages = true, metrics = { { name = "latency" }, { name = "p99" } } },
      stages = { stage } }
    local e2 = fake_engine(named, { src }, 300)
    local ok2, v2, why2 = pcall(analysis.gate, e2, stage)
    assert.truthy(ok, v)
    assert.equals("pass", v, why)
    assert.same({ "latency" }, e.events[1].not_measured)
    assert.equals(2, #e.events[1].metrics)
    assert.truthy(ok2, v2)
    assert.same({ "inconclusive", "judge_no_data" }, { v2, why2 }, "half the named metrics have no data")
    assert.equals("Nodata", e2.events[1].metrics[1].classification)
  end)

  it("skips a stage at weight 100: the baseline has no traffic", function()
    local full = { name = "Full", index = 2, weight = 100, hold = 600, max_hold = 1200 }
    local pb = { gate_window = 300, interval = 10, judge = { stages = true }, stages = { full } }
    local e = fake_engine(pb, {}, now)
    assert.equals("pass", analysis.gate(e, full))
    assert.equals("skipped", e.events[1].verdict)
  end)

  it("the runbook's abTest: p99 over the whole hold, once both versions have min_samples", function()
    local half = { name = "Half", index = 3, weight = 50, hold = 900, max_hold = 1800 }
    local pb = { gate_window = 300, interval = 10, stages = { half },
      ab_test = { enabled = true, metric = "latency_p99", significance = 0.05, min_samples = 10000, gate = { "Half" } } }
    local function p99s(level, n, seed)
      local r, t = rng.new(seed), {}
      for i = 1, n do t[i] = level * (1 + 0.05 * r:normal()) end
      return t
    end
    local function src(c_level, c_req)
      return { samples = function()
        return { baseline = { requests = 90000, p99 = p99s(0.2, 90, 1) }, canary = { requests = c_req, p99 = p99s(c_level, 90, 2) } }
      end }
    end
    local e = fake_engine(pb, { src(0.3, 9000) }, 900)
    assert.same({ "inconclusive", "ab_test_min_samples" }, { analysis.gate(e, half) })
    assert.near(900, e.events[1].window, 0.5, "the whole hold")
    local e2 = fake_engine(pb, { src(0.3, 90000) }, 900)
    assert.same({ "fail", "ab_test" }, { analysis.gate(e2, half) })
    local e3 = fake_engine(pb, { src(0.206, 90000) }, 900)
    assert.equals("pass", analysis.gate(e3, half), "3 % higher is significant but under allowed_increase 1.1")
    assert.equals("Pass", e3.events[1].metrics[1].classification)
    local other = { name = "Majority", index = 4, weight = 75, hold = 900, max_hold = 1800 }
    assert.is_false(analysis.enabled(pb, other), "gate lists the stages")
    local off = { gate_window = 300, interval = 10, stages = { half }, ab_test = { enabled = false, gate = true } }
    assert.is_false(analysis.enabled(off, half))
  end)
end)

describe("analysis: playbook settings", function()
  local dir
  setup(function() dir = fs.mkdtemp("judge") end)
  teardown(function() fs.rmtree(dir) end)

  local function write_playbook(body)
    local p = dir .. "/pb.lua"
    fs.write_atomic(p, body)
    return p
  end

  it("validates judge, a stage's judge and ab_test, with file, line and key path", function()
    local p = write_playbook([[
return {
  name = "j",
  versions = { baseline = { version = "v1" }, canary = { version = "v2" } },
  stages = {
    { weight = 50, hold = "1m", judge = { stages = true } },
    { weight = 100, hold = "1m", judge = "yes" },
  },
  judge = {
    metrics = { { name = "latency", direction = "up" } },
    pass = 120,
  },
  ab_test = { enabled = true, metric = "colour", significance = 2 },
}
]])
    local pb, errs = playbook.load(p)
    assert.is_nil(pb)
    local msgs = {}
    for _, e in ipairs(errs) do msgs[#msgs + 1] = playbook.format_error(e) end
    local all = table.concat(msgs, "\n")
    for _, want in ipairs({
      p .. ":5: stages[1].judge.stages: only at the playbook's top-level judge",
      p .. ":6: stages[2].judge: expected true, false or a table, got string",
      p .. ':9: judge.metrics[1].direction: must be one of "increase", "decrease", "either", got up',
      p .. ":10: judge.pass: must be between 0 and 100, got 120",
      p .. ":12: ab_test.metric: unknown metric 'colour'",
      p .. ":12: ab_test.significance: expected a number between 0 and 1",
    }) do
      assert.truthy(all:find(want, 1, true), "missing: " .. want .. "\n" .. all)
    end
    assert.equals(6, #errs, all)
  end)

  it("accepts canary.lua with the judge and the abTest switched on by --set", function()
    local sets = { "judge.stages=true", "ab_test.gate=true", "stages[2].judge=false" }
    local pb = assert(playbook.load("playbooks/canary.lua", { sets = sets }))
    assert.is_true(analysis.enabled(pb, pb.stages[1]))
    assert.is_nil(analysis.judge_config(pb, pb.stages[2]), "a stage's judge = false wins")
    assert.is_true(analysis.enabled(pb, pb.stages[2]), "the abTest still gates it")
    local plain = assert(playbook.load("playbooks/canary.lua"))
    -- as shipped: the runbook's abTest at Half (its minSampleSize is the test's), no judge
    for i, st in ipairs(plain.stages) do
      assert.equals(st.name == "Half", analysis.enabled(plain, st), "stage " .. i)
      assert.is_nil(analysis.judge_config(plain, st))
    end
    local off = assert(playbook.load("playbooks/canary.lua", { sets = { "ab_test.gate=false" } }))
    assert.is_false(analysis.wanted(off), "ab_test.gate = false: static thresholds only")
  end)
end)

describe("analysis: simulated rollouts", function()
  local WORSE = "spec/fixtures/scenarios/slightly-worse.lua"

  it("the judge rolls back a canary that static thresholds promote", function()
    local static = simsupport.simulate("playbooks/canary.lua", WORSE)
    assert.equals("promoted", static.outcome)
    local s, events = simsupport.simulate("playbooks/canary.lua", WORSE, { "--set", "judge.stages=true" })
    assert.equals("rolled_back", s.outcome)
    assert.equals("gate:judge", s.reason)
    assert.near(300, s.at, 1, "at the end of Initial")
    local j = first(events, "judge")
    assert.equals("Initial", j.stage)
    assert.equals("fail", j.verdict)
    local er
    for _, m in ipairs(j.metrics) do if m.name == "error_rate" then er = m end end
    assert.equals("High", er.classification)
    assert.is_true(er.critical)
    assert.gt(er.ratio, 3)
    local gate = first(events, "gate")
    assert.equals("fail", gate.result)
    assert.equals("judge", gate.why)
  end)

  it("a healthy canary passes every judged stage, and the rest of the run is unchanged", function()
    local healthy = simsupport.SCENARIOS .. "/healthy.lua"
    local plain_s, plain = simsupport.simulate("playbooks/canary.lua", healthy)
    local s, events = simsupport.simulate("playbooks/canary.lua", healthy, { "--set", "judge.stages=true" })
    assert.same(plain_s, s)
    local judged = {}
    for _, e in ipairs(simsupport.events_of(events, "judge")) do if e.name == "judge" then judged[#judged + 1] = e end end
    assert.equals(5, #judged)
    for i = 1, 4 do assert.equals("pass", judged[i].verdict, judged[i].stage) end
    assert.equals("skipped", judged[5].verdict)
    -- the reservoir draws nothing extra: every gate sees the same numbers
    local g1, g2 = simsupport.events_of(plain, "gate"), simsupport.events_of(events, "gate")
    assert.equals(#g1, #g2)
    for i = 1, #g1 do assert.same(g1[i].canary, g2[i].canary) end
  end)

  it("the abTest waits for its 10,000 samples, extending the hold", function()
    local healthy = simsupport.SCENARIOS .. "/healthy.lua"
    local s, events = simsupport.simulate("playbooks/canary.lua", healthy, { "--set", "ab_test.gate=true" })
    assert.equals("promoted", s.outcome)
    local ext = first(events, "hold_extended", function(e) return e.stage == "Initial" end)
    assert.equals("ab_test_min_samples", ext.why)
    local ramp = first(events, "stage_entered", function(e) return e.stage == "Ramp-Up" end)
    assert.truthy(ramp.t > 300 and ramp.t < 600, "Initial held until 10,000 canary requests (~500 s), at " .. ramp.t)
  end)
end)

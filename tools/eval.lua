-- make eval: decision quality of playbooks/canary.lua with and without the statistical
-- judge, over every labelled scenario in scenarios/ (labelled by their `expect`) and
-- the generated labelled set (tools/eval_scenarios: generate.lua, labels.lua).
--
--   rollout tools/eval.lua [--jobs N] [--only NAME,...] [--configs KEY,...] [--out FILE.jsonl]
--                          [--from FILE.jsonl] [--wrong] [--seeds N] [--calibration-only]
--                          [--no-calibration]
-- First the calibration table (tools/eval_scenarios/calibration.lua): the static gates of
-- playbooks/canary.lua against canaries a margin from a threshold, --seeds (default 100)
-- seeds per family, wrong decisions per family; then the decision-quality table below.
-- --out keeps every run's outcome, --from tabulates such a file again without simulating,
-- --wrong lists every wrong decision.
--
-- Configurations (columns):
--   static      playbooks/canary.lua's static thresholds (ab_test.gate = false: as shipped it
--               also runs the runbook's abTest at Half)
--   judge       the same plus the judge at every stage (--set judge.stages=true)
--   judge_only  the judge in place of the error/latency thresholds (eval_scenarios/judge_only.lua)
--   ab_test     static plus the runbook's abTest as a gate at Half and Majority (where the
--               runbook's own minSampleSize is 10,000 too), with the default allowed_increase 1.1
--   ab_bare     the same with allowed_increase = 1: the significance test alone
-- Every simulation runs in-process under the virtual clock; --jobs N (default 2) splits the
-- scenarios over N child processes. Prints the table docs/judge.md quotes.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local scenario = require("rollout.sim.scenario")
local generate = require("tools.eval_scenarios.generate")
local labels = require("tools.eval_scenarios.labels")
local calibration = require("tools.eval_scenarios.calibration")
local simulation = require("rollout.simulation")
local proc = require("rollout.proc")

local CONFIGS = {
  { key = "static", title = "(a) static", playbook = "playbooks/canary.lua", sets = { "ab_test.gate=false" } },
  { key = "judge", title = "(b) static + judge", playbook = "playbooks/canary.lua", sets = { "judge.stages=true", "ab_test.gate=false" } },
  { key = "judge_only", title = "(c) judge only", playbook = "tools/eval_scenarios/judge_only.lua", sets = {} },
  { key = "ab_test", title = "(d) static + abTest", playbook = "playbooks/canary.lua",
    sets = { "ab_test.gate[1]=Half", "ab_test.gate[2]=Majority" } },
  { key = "ab_bare", title = "(e) static + bare abTest", playbook = "playbooks/canary.lua",
    sets = { "ab_test.gate[1]=Half", "ab_test.gate[2]=Majority", "ab_test.allowed_increase=1" } },
}

local function labelled_dir()
  local st = fs.stat("scenarios")
  if st and st.type == "dir" then return "scenarios" end
end

-- A labelled scenario's label is its `expect`; the fault is its first change, alert or restart.
local function labelled_case(dir, name)
  local path = dir .. "/" .. name
  local sc = assert(scenario.load(path))
  local want = sc.expect and sc.expect.outcome
  local label = ({ promoted = "good", rolled_back = "bad", paused = "inconclusive" })[want] or "unlabelled"
  local fault
  local function at(t) if t and (not fault or t < fault) then fault = t end end
  for _, c in ipairs(sc.canary.changes or {}) do at(c.at) end
  for _, a in ipairs(sc.alerts) do at(a.at) end
  for _, r in ipairs(sc.restarts) do at(r) end
  for _, e in ipairs(sc.source_errors) do at(e.from) end
  return { name = "scenarios/" .. name:gsub("%.lua$", ""), family = "labelled", label = label,
    fault_at = label == "bad" and (fault or 0) or nil, path = path }
end

local function all_cases()
  local out = {}
  local dir = labelled_dir()
  if dir then
    local names = {}
    for _, n in ipairs(fs.list(dir) or {}) do if n:match("%.lua$") then names[#names + 1] = n end end
    table.sort(names)
    for _, n in ipairs(names) do out[#out + 1] = labelled_case(dir, n) end
  else
    io.stderr:write("eval: scenarios/ not found (run from the repository); generated scenarios only\n")
  end
  for _, c in ipairs(generate.generate()) do out[#out + 1] = c end
  return out
end

local function load_scenario(c)
  if c.path then return assert(scenario.load(c.path)) end
  local sc, errs = scenario.check(c.scenario)
  if not sc then error(c.name .. ": " .. errs[1].path .. ": " .. errs[1].msg) end
  return sc
end

local function run_cases(cases, configs, emit)
  local pbs = {}
  for _, cfg in ipairs(configs) do
    local pb, errs = playbook.load(cfg.playbook, { sets = cfg.sets })
    if not pb then error(cfg.playbook .. ": " .. playbook.format_error(errs[1])) end
    pbs[cfg.key] = pb
  end
  for _, c in ipairs(cases) do
    local sc = load_scenario(c)
    for _, cfg in ipairs(configs) do
      local judged = {}
      local o = simulation.run(pbs[cfg.key], sc, { emit = function(ev)
        if ev.event == "judge" and ev.verdict ~= "pass" and ev.verdict ~= "skipped" then judged[#judged + 1] = ev.why end
      end })
      emit({ case = c.name, config = cfg.key, outcome = o.outcome, reason = o.reason or json.null, at = o.at,
        judge_last = judged[#judged] or json.null })
    end
  end
end

local function select_configs(keys)
  if not keys then return CONFIGS end
  local want, out = {}, {}
  for k in keys:gmatch("[^,]+") do want[k] = true end
  for _, c in ipairs(CONFIGS) do if want[c.key] then out[#out + 1] = c end end
  return out
end

local function select_cases(only, seeds)
  local cases = seeds and calibration.generate(seeds) or all_cases()
  if not only then return cases end
  local out = {}
  for _, c in ipairs(cases) do
    for pat in only:gmatch("[^,]+") do if c.name:find(pat, 1, true) then out[#out + 1] = c; break end end
  end
  return out
end

-- ---- workers ----------------------------------------------------------------------------------

local function worker(spec, opts)
  local w, n = spec:match("^(%d+)/(%d+)$")
  w, n = tonumber(w), tonumber(n)
  rollout.clock("virtual")
  local mine = {}
  local seeds = opts.calibrate and tonumber(opts.calibrate) or nil
  for i, c in ipairs(select_cases(opts.only, seeds)) do if (i - 1) % n == w - 1 then mine[#mine + 1] = c end end
  run_cases(mine, seeds and { CONFIGS[1] } or select_configs(opts.configs), function(r)
    io.stdout:write(json.encode(r, { sort = true }), "\n")
    io.stdout:flush()
  end)
  return 0
end

local function run_parallel(jobs, opts)
  local tasks = {}
  for w = 1, jobs do
    local argv = { rollout.exe, "--clock=virtual", "tools/eval.lua", "--worker", w .. "/" .. jobs }
    if opts.only then argv[#argv + 1] = "--only"; argv[#argv + 1] = opts.only end
    if opts.configs then argv[#argv + 1] = "--configs"; argv[#argv + 1] = opts.configs end
    if opts.calibrate then argv[#argv + 1] = "--calibrate"; argv[#argv + 1] = opts.calibrate end
    tasks[w] = rollout.spawn(function() return proc.run({ argv = argv, timeout = 3600, max_output = 64 * 1024 * 1024 }) end)
  end
  local results = {}
  for w, t in ipairs(tasks) do
    local r, err = t:wait()
    if not r then error("eval worker " .. w .. ": " .. tostring(err)) end
    if r.code ~= 0 then error("eval worker " .. w .. " exited " .. tostring(r.code) .. ": " .. r.stderr) end
    for line in r.stdout:gmatch("[^\n]+") do results[#results + 1] = assert(json.decode(line)) end
  end
  return results
end

-- ---- the table --------------------------------------------------------------------------------

local function median(t)
  if #t == 0 then return nil end
  table.sort(t)
  local m = (#t + 1) / 2
  return (t[math.floor(m)] + t[math.ceil(m)]) / 2
end

local function mmss(s)
  if not s then return "-" end
  return string.format("%dm%02ds", math.floor(s / 60), math.floor(s % 60 + 0.5))
end

local function tally(cases, results, configs)
  local by = {}
  for _, r in ipairs(results) do by[r.case .. "|" .. r.config] = r end
  local t = {}
  for _, cfg in ipairs(configs) do
    local s = { good = 0, bad = 0, inc = 0, promote_ok = 0, false_rb = 0, good_paused = 0, rb_ok = 0, missed = 0,
      bad_paused = 0, inc_ok = 0, inc_other = 0, ttd = {}, ttd_late = {}, fam = {}, wrong = {} }
    for _, c in ipairs(cases) do
      local r = by[c.name .. "|" .. cfg.key]
      if r then
        local f = s.fam[c.family] or { n = 0, ok = 0 }
        s.fam[c.family] = f
        f.n = f.n + 1
        local ok
        if c.label == "good" then
          s.good = s.good + 1
          if r.outcome == "promoted" then s.promote_ok = s.promote_ok + 1; ok = true
          elseif r.outcome == "rolled_back" then s.false_rb = s.false_rb + 1
          else s.good_paused = s.good_paused + 1 end
        elseif c.label == "bad" then
          s.bad = s.bad + 1
          if r.outcome == "rolled_back" then
            s.rb_ok = s.rb_ok + 1; ok = true
            s.ttd[#s.ttd + 1] = math.max(0, r.at - (c.fault_at or 0))
            if (c.fault_at or 0) > 0 then s.ttd_late[#s.ttd_late + 1] = s.ttd[#s.ttd] end
          elseif r.outcome == "promoted" then s.missed = s.missed + 1
          else s.bad_paused = s.bad_paused + 1 end
        elseif c.label == "inconclusive" then
          s.inc = s.inc + 1
          if r.outcome == "paused" then s.inc_ok = s.inc_ok + 1; ok = true else s.inc_other = s.inc_other + 1 end
        end
        if ok then f.ok = f.ok + 1
        else s.wrong[#s.wrong + 1] = string.format("%s (%s): %s %s at %s", c.name, c.label, r.outcome,
          r.reason ~= json.null and r.reason or "", mmss(r.at)) end
      end
    end
    s.median_ttd, s.median_ttd_late = median(s.ttd), median(s.ttd_late)
    t[cfg.key] = s
  end
  return t
end

local function print_table(cases, results, configs)
  local t = tally(cases, results, configs)
  local first = t[configs[1].key]
  local nlabelled = 0
  for _, c in ipairs(cases) do if c.family == "labelled" then nlabelled = nlabelled + 1 end end
  print(string.format("decision quality: %d scenarios (%d labelled, %d generated): %d good, %d bad, %d where pausing is right",
    #cases, nlabelled, #cases - nlabelled, first.good, first.bad, first.inc))
  print()
  local head = { "|" }
  local rule = { "|---|" }
  for _, cfg in ipairs(configs) do head[#head + 1] = cfg.title; rule[#rule + 1] = "---:|" end
  head = table.concat(head, " | ") .. " |"
  rule = table.concat(rule)
  print(head); print(rule)
  local function row(label, f)
    local parts = { "| " .. label }
    for _, cfg in ipairs(configs) do parts[#parts + 1] = f(t[cfg.key]) end
    print(table.concat(parts, " | ") .. " |")
  end
  row("correct promotions (good)", function(s) return s.promote_ok .. " / " .. s.good end)
  row("false rollbacks (good rolled back)", function(s) return tostring(s.false_rb) end)
  row("good paused", function(s) return tostring(s.good_paused) end)
  row("correct rollbacks (bad)", function(s) return s.rb_ok .. " / " .. s.bad end)
  row("missed bad canaries (bad promoted)", function(s) return tostring(s.missed) end)
  row("bad paused", function(s) return tostring(s.bad_paused) end)
  row("median time to detect", function(s) return mmss(s.median_ttd) end)
  row("median time to detect, faults after t = 0", function(s) return mmss(s.median_ttd_late) .. " (" .. #s.ttd_late .. ")" end)
  row("correct pauses (low traffic, outage)", function(s) return s.inc_ok .. " / " .. s.inc end)
  print()
  local fams, seen = {}, {}
  for _, c in ipairs(cases) do if not seen[c.family] then seen[c.family] = true; fams[#fams + 1] = c.family end end
  print("correct decisions per family:")
  print()
  print(head); print(rule)
  for _, fam in ipairs(fams) do
    row(fam, function(s) local f = s.fam[fam]; return f and (f.ok .. " / " .. f.n) or "-" end)
  end
  print()
  return t
end

-- ---- calibration ------------------------------------------------------------------------------

--- calibrate(seeds, jobs) -> rows {family=, n=, promoted=, rolled_back=, paused=, wrong=, examples=}
local function calibrate(seeds, jobs)
  local cases = calibration.generate(seeds)
  local results
  if jobs <= 1 then
    results = {}
    rollout.clock("virtual")
    run_cases(cases, { CONFIGS[1] }, function(r) results[#results + 1] = r end)
  else
    results = run_parallel(jobs, { calibrate = tostring(seeds) })
  end
  local by = {}
  for _, r in ipairs(results) do by[r.case] = r end
  local rows, index = {}, {}
  for _, c in ipairs(cases) do
    local row = index[c.family]
    if not row then
      row = { family = c.family, want = c.want, low = c.low, n = 0, promoted = 0, rolled_back = 0, right_signal = 0,
        paused = 0, wrong = 0, examples = {} }
      index[c.family] = row
      rows[#rows + 1] = row
    end
    local r = by[c.name]
    row.n = row.n + 1
    local reason = r.reason ~= json.null and r.reason or nil
    if r.outcome == "promoted" then row.promoted = row.promoted + 1
    elseif r.outcome == "rolled_back" then row.rolled_back = row.rolled_back + 1
    else row.paused = row.paused + 1 end
    local verdict, why = calibration.judge(c, r.outcome, reason)
    for _, want in ipairs(c.reasons or {}) do
      if r.outcome == "rolled_back" and reason == want then row.right_signal = row.right_signal + 1 end
    end
    if verdict == "wrong" then
      row.wrong = row.wrong + 1
      if #row.examples < 3 then row.examples[#row.examples + 1] = c.name .. ": " .. why end
    end
  end
  return rows
end

local function print_calibration(rows, seeds)
  print(string.format("calibration: playbooks/canary.lua's static gates, %d seeds per family " ..
    "(policy.confidence 0.95, power 0.8, detect 3)", seeds))
  print()
  print("| family | want | promoted | rolled back (by its signal) | paused | wrong | wrong % |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for _, r in ipairs(rows) do
    local want = r.want == "promoted" and (r.low and "promoted or paused" or "promoted")
      or (r.low and "rolled back or paused" or "rolled back")
    print(string.format("| %s | %s | %d | %d (%d) | %d | %d | %.1f %% |", r.family, want, r.promoted, r.rolled_back,
      r.right_signal, r.paused, r.wrong, 100 * r.wrong / r.n))
  end
  print()
  for _, r in ipairs(rows) do for _, e in ipairs(r.examples) do print("  wrong: " .. e) end end
end

-- ---- main -------------------------------------------------------------------------------------

local function main(argv)
  local opts, pos = args.parse(argv, { jobs = "value", only = "value", configs = "value", out = "value", worker = "value",
    wrong = "flag", from = "value", seeds = "value", calibrate = "value", calibration_only = "flag",
    no_calibration = "flag" })
  if not opts then io.stderr:write("eval: ", tostring(pos), "\n"); return 2 end
  if opts.worker then return worker(opts.worker, opts) end
  local jobs = tonumber(opts.jobs or 2)
  if not opts.no_calibration and not opts.from then
    local seeds = tonumber(opts.seeds or 100)
    local c0 = os.time()
    print_calibration(calibrate(seeds, jobs), seeds)
    print(string.format("%d simulations in %.0f s", seeds * 2 * #calibration.FAMILIES, os.time() - c0))
    print()
    if opts.calibration_only then return 0 end
  end
  local cases = select_cases(opts.only)
  local configs = select_configs(opts.configs)
  local c0 = os.time()
  local results
  if opts.from then
    results = {}
    for line in assert(io.open(opts.from)):lines() do results[#results + 1] = assert(json.decode(line)) end
  elseif jobs <= 1 then
    results = {}
    rollout.clock("virtual")
    run_cases(cases, configs, function(r) results[#results + 1] = r end)
  else
    results = run_parallel(jobs, opts)
  end
  if opts.out then
    local lines = {}
    for _, r in ipairs(results) do lines[#lines + 1] = json.encode(r, { sort = true }) end
    fs.write_atomic(opts.out, table.concat(lines, "\n") .. "\n")
  end
  local t = print_table(cases, results, configs)
  print(string.format("labels: tools/eval_scenarios/labels.lua (bad: errors +%.2f pp and x%.1f, p50 x%.2f and +%d ms, " ..
    "or p99 x%.2f and +%d ms; good: within x%.2f latency, x%.1f or +%.2f pp errors)",
    labels.BAD.err_pp * 100, labels.BAD.err_ratio, labels.BAD.p50_ratio, labels.BAD.p50_abs * 1000, labels.BAD.p99_ratio,
    labels.BAD.p99_abs * 1000, labels.GOOD.lat_ratio, labels.GOOD.err_ratio, labels.GOOD.err_pp * 100))
  if opts.wrong then
    for _, cfg in ipairs(configs) do
      print(cfg.title .. " wrong:")
      for _, w in ipairs(t[cfg.key].wrong) do print("  " .. w) end
    end
  end
  print(string.format("%d simulations in %.0f s (%d jobs)", #results, os.time() - c0, jobs))
  return 0
end

return main(arg or {})

-- DORA figures over a directory of journals (`rollout report --dora DIR`): deployment
-- frequency, change failure rate, time to restore (rollback duration) and lead time where
-- the rollout recorded a commit time. The journals are simulations of the runbook's
-- playbook given wall-clock times, as `rollout run` writes them.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local proc = require("rollout.proc")
local report = require("rollout.report")
local obs = require("spec.support.observability")

local PB = "playbooks/canary.lua"
local DAY = 86400
local TS0 = 1762855200 -- 2025-11-11T10:00:00Z

-- Copy a capture as a journal started at ts0; fn(ev) may change events.
local function journal_from(src, dst, ts0, fn)
  local out = {}
  for line in assert(io.open(src)):lines() do
    local v = json.decode(line)
    if v and v.event then
      v.ts = ts0 + v.t
      if fn then fn(v) end
      out[#out + 1] = json.encode(v, { sort = true })
    end
  end
  assert(fs.mkdir(dst:match("^(.*)/[^/]*$"), 448, true))
  assert(fs.write_atomic(dst, table.concat(out, "\n") .. "\n"))
end

local function cli(...)
  return assert(proc.run({ argv = { rollout.exe, "report", ... }, timeout = 60 }))
end

describe("DORA", function()
  local dir, caps
  setup(function()
    dir = assert(fs.mkdtemp("dora-spec"))
    caps = {}
    for _, name in ipairs({ "healthy", "error-spike", "stage-gate-error" }) do
      caps[name] = obs.capture(PB, obs.SCENARIOS .. "/" .. name .. ".lua", dir .. "/" .. name .. ".capture")
    end
    local j = dir .. "/journals"
    -- a week: 6 promoted (4 with a commit time), 2 rolled back (restore 12 s and 30 s), 1 aborted at pre-flight
    for i, day in ipairs({ 0, 1, 2, 3, 5, 6 }) do
      local ts0 = TS0 + day * DAY
      journal_from(caps.healthy, string.format("%s/dwcp-v3/%02d-promoted.jsonl", j, i), ts0, function(ev)
        if ev.event == "rollout_started" and i <= 4 then
          ev.commit_time = os.date("!%Y-%m-%dT%H:%M:%SZ", ts0 - i * 3600) -- i hours before the start
        end
      end)
    end
    journal_from(caps["error-spike"], j .. "/dwcp-v3/07-spike.jsonl", TS0 + 2 * DAY + 7200, function(ev)
      if ev.event == "rolled_back" or ev.event == "outcome" then ev.at = ev.at + 12 end
    end)
    journal_from(caps["stage-gate-error"], j .. "/other/08-gate.jsonl", TS0 + 4 * DAY, function(ev)
      if ev.event == "rolled_back" or ev.event == "outcome" then ev.at = ev.at + 30 end
    end)
    journal_from(caps.healthy, j .. "/other/09-aborted.jsonl", TS0 + 4 * DAY + 3600, nil)
    do -- make the last one a pre-flight abort: keep events up to preflight, then abort
      local path = j .. "/other/09-aborted.jsonl"
      local keep = {}
      for line in assert(io.open(path)):lines() do
        local v = json.decode(line)
        if v.event == "preflight_check" and #keep == 3 then v.status = "fail"; v.detail = "psql: connection refused" end
        keep[#keep + 1] = json.encode(v, { sort = true })
        if v.event == "preflight_check" and v.status == "fail" then break end
      end
      keep[#keep + 1] = json.encode({ event = "outcome", outcome = "aborted", reason = "preflight:database", at = 0, t = 0,
        ts = TS0 + 4 * DAY + 3600 })
      assert(fs.write_atomic(path, table.concat(keep, "\n") .. "\n"))
    end
    -- not journals, and a simulation without wall-clock times
    assert(fs.write_atomic(j .. "/README.json", "{\"hello\": 1}\n"))
    assert(fs.write_atomic(j .. "/notes.txt", "not looked at\n"))
    assert(fs.write_atomic(j .. "/sim.jsonl", fs.read(caps.healthy)))
  end)
  teardown(function() fs.rmtree(dir) end)

  it("computes frequency, change failure rate, time to restore and lead time", function()
    local dora, warnings = require("rollout.cmd.report").dora_of(dir .. "/journals")
    assert.equals(1, #warnings)
    assert.matches("README%.json: no events", warnings[1])
    assert.equals(10, dora.rollouts)
    assert.equals(6, dora.promoted)
    assert.equals(2, dora.rolled_back)
    assert.equals(1, dora.aborted)
    assert.same({ dir .. "/journals/sim.jsonl: no wall-clock times (a simulation)" }, dora.skipped)
    -- period: first start (day 0) to the last end (day 6 + 55 min)
    assert.equals(6 * DAY + 3300, dora.period.seconds)
    local f = dora.deployment_frequency
    assert.equals(6, f.deployments)
    assert.near(6 / ((6 * DAY + 3300) / DAY), f.per_day, 1e-9)
    assert.equals("Daily", f.label)
    -- the aborted one never reached users: 2 failures of 8 changes
    assert.equals(2, dora.change_failure_rate.failed)
    assert.equals(8, dora.change_failure_rate.changes)
    assert.equals(0.25, dora.change_failure_rate.rate)
    assert.equals(2, dora.time_to_restore.count)
    assert.equals(21, dora.time_to_restore.median)
    assert.equals(12, dora.time_to_restore.min)
    assert.equals(30, dora.time_to_restore.max)
    -- error-spike: pending at 12m40s, confirmed 0 % at 14m40s + 12 s
    assert.equals(132, dora.time_from_first_sign_to_restore.max)
    -- lead times: commit i hours before a 55-minute rollout, i = 1..4
    assert.equals(4, dora.lead_time.count)
    assert.equals(3300 + 3600, dora.lead_time.min)
    assert.equals(3300 + 4 * 3600, dora.lead_time.max)
    assert.equals(3300 + 2.5 * 3600, dora.lead_time.median)
  end)

  it("labels deployment frequency the DORA way", function()
    assert.equals("Multiple per day", report.frequency_label(3))
    assert.equals("Daily", report.frequency_label(1))
    assert.equals("Weekly", report.frequency_label(2 / 7))
    assert.equals("Monthly", report.frequency_label(1 / 20))
    assert.equals("Less than monthly", report.frequency_label(1 / 90))
  end)

  it("prints the figures, JSON with --json, and feeds the Markdown's frequency", function()
    local r = cli("--dora", dir .. "/journals")
    assert.equals(0, r.code, r.stderr)
    assert.matches("^DORA over 10 rollouts from 2025%-11%-11T10:00:00Z to 2025%-11%-17T10:55:00Z\n", r.stdout)
    assert.matches("\n  deployment frequency   Daily: 6 promoted in 6 days %(0%.99 per day, 7%.0 per week%)\n", r.stdout)
    assert.matches("\n  change failure rate    25%.0%% %(2 of 8 changes that reached users were rolled back or failed%)\n", r.stdout)
    assert.matches("\n  time to restore        median 21%.0s, max 30%.0s over 2 rollbacks", r.stdout)
    assert.matches("\n  lead time for changes  median 3%.4 hours %(min 115 minutes, max 4%.9 hours%) "
      .. "over 4 promoted with commit_time\n", r.stdout)
    assert.matches("skipped: .*sim%.jsonl: no wall%-clock times", r.stdout)
    assert.matches("README%.json: no events", r.stderr)
    r = cli("--dora", dir .. "/journals", "--json")
    assert.equals(0, r.code, r.stderr)
    local doc = assert(json.decode(r.stdout))
    assert.equals(0.25, doc.change_failure_rate.rate)
    assert.equals(10, #doc.rollouts_list)
    r = cli(dir .. "/journals/dwcp-v3/01-promoted.jsonl", "--dora", dir .. "/journals")
    assert.equals(0, r.code, r.stderr)
    assert.matches("\n%- %*%*Deployment Frequency:%*%* Daily %(6 promoted in 6 days%)\n", r.stdout)
    assert.matches("\n%- %*%*Lead Time:%*%* 115 minutes %(commit to promoted%)\n", r.stdout)
    assert.equals(2, cli("--dora", dir .. "/nope").code)
  end)

  it("says n/a rather than inventing figures when there is nothing to measure", function()
    local empty = assert(fs.mkdtemp("dora-empty"))
    finally(function() fs.rmtree(empty) end)
    local r = cli("--dora", empty)
    assert.equals(0, r.code)
    assert.matches("deployment frequency   n/a", r.stdout)
    assert.matches("change failure rate    n/a", r.stdout)
    assert.matches("time to restore        n/a", r.stdout)
    assert.matches("lead time for changes  n/a", r.stdout)
  end)
end)

-- rollout.report.json: the report model as JSON for pipelines ("rollout-report/1").
-- Error policy: raises only on programming errors.
local json = require("rollout.json")
local datetime = require("rollout.datetime")
local output = require("rollout.output")

local M = {}

local iso = datetime.iso8601

local function null(v) if v == nil then return json.null end return v end

--- json(model) -> a table for json.encode (pipelines)
function M.json(m)
  local stages = {}
  for _, st in ipairs(m.stages) do
    local last = st.gates[#st.gates]
    stages[#stages + 1] = { name = st.name, index = st.index, weight = st.weight, hold = st.hold, started = null(st.t_start),
      ended = null(st.t_end), result = null(st.result), gate_evaluations = #st.gates,
      checks = last and last.checks or json.array({}), samples = null(last and last.samples),
      min_samples = null(last and last.min_samples) }
  end
  local gates = {}
  for _, g in ipairs(m.gates) do
    gates[#gates + 1] = { t = g.t, stage = g.stage, result = g.result, why = null(g.why), window = null(g.window),
      samples = null(g.samples), min_samples = null(g.min_samples), total_rps = null(g.total_rps), min_rps = null(g.min_rps),
      checks = g.checks or json.array({}), canary = null(g.canary), baseline = null(g.baseline) }
  end
  local triggers = {}
  for _, e in ipairs(m.triggers) do
    triggers[#triggers + 1] = { t = e.t, event = e.event, trigger = e.trigger, value = null(e.value), condition = null(e.condition),
      ["for"] = null(e["for"]), held = null(e.held), why = null(e.why) }
  end
  local rollbacks = {}
  for _, r in ipairs(m.rollbacks) do
    rollbacks[#rollbacks + 1] = { t = r.t, reason = r.reason, detail = null(r.detail), value = null(r.value), stage = null(r.stage),
      confirmed_at = null(r.at), restore_seconds = null(r.restore) }
  end
  local decisions = {}
  for _, d in ipairs(m.decisions) do
    decisions[#decisions + 1] = { t = d.t, event = d.event, stage = null(d.stage), text = output.line(d) or d.event }
  end
  local h = m.headline
  return {
    format = "rollout-report/1", source = null(m.path), service = null(m.service), deployment_id = m.deployment_id,
    playbook = null(m.playbook), baseline = null(m.baseline), canary = null(m.canary), started_by = null(m.who),
    started_at = null(iso(m.started_ts)), ended_at = null(iso(m.ended_ts)), duration_seconds = m.duration,
    simulated = m.simulated, observe = m.observe or false, strategy = m.strategy or "canary", finished = m.finished, commit_time = null(m.commit_time),
    lead_time_seconds = null((m.commit_ts and m.outcome and m.outcome.outcome == "promoted" and m.ended_ts)
      and (m.ended_ts - m.commit_ts) or nil),
    outcome = m.outcome and m.outcome.outcome or "unfinished", reason = null(m.outcome and m.outcome.reason),
    at = null(m.outcome and m.outcome.at), why = m.why,
    headline = h and { from = h.from, t = h.t, canary = h.canary, baseline = h.baseline } or json.null,
    stages = json.array(stages), gates = json.array(gates), triggers = json.array(triggers),
    rollbacks = json.array(rollbacks), decisions = json.array(decisions), counts = m.counts,
    notifications = { sent = m.notifications.sent, failed = #m.notifications.failed },
    preflight = json.array((function()
      local out = {}
      for _, p in ipairs(m.preflight) do out[#out + 1] = { check = p.check, status = p.status, detail = null(p.detail) } end
      return out
    end)()),
  }
end

return M

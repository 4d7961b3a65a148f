-- rollout.report: read a rollout's record back and say what happened and why.
--
-- Input is a journal (rollout.journal: JSON lines, one engine event each) or a
-- `rollout simulate --json` capture (the same events, then a summary line). load() reads
-- either; analyze() turns the events into a model: stages with their weights and gates,
-- the evaluations (signals per version over time), triggers, decisions, and one sentence
-- of why it ended as it did, with the numbers behind it. Renderers:
--   html(model)      one self-contained page: inline SVG charts (canary vs baseline error
--                    rate and P99 over time, stage bands, weight steps, a marker for every
--                    gate, trigger and decision), the gate table (each value against its
--                    threshold), the decision timeline. No script, no external resource.
--   markdown(model)  an entry in the runbook's deployment-log format (Step 9)
--   json(model)      the model for pipelines
-- and dora(models) over many journals (rollout.report's DORA figures; see docs/observability.md).
--
-- The parts: report.model (analysis), report.json, report.markdown, report.html,
-- report.dora; this file loads journals and gathers them under one name.
--
-- Error policy: load() returns nil, err for a file that cannot be read or is not a
-- journal; renderers raise only on programming errors.
local json = require("rollout.json")
local model = require("rollout.report.model")
local json_report = require("rollout.report.json")
local markdown = require("rollout.report.markdown")
local html = require("rollout.report.html")
local dora = require("rollout.report.dora")

local M = {}

--- parse(text, name) -> {events=, summary=, torn=} | nil, err
function M.parse(text, name)
  local events, summary, torn = {}, nil, nil
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  if text:sub(-1) ~= "\n" and #lines > 0 and lines[#lines] ~= "" then
    -- an unterminated last line is a write cut short (journal.lua): ignore it unless it parses
    local v = json.decode(lines[#lines])
    if type(v) ~= "table" then torn = lines[#lines]; lines[#lines] = nil end
  end
  for i, line in ipairs(lines) do
    if line:find("%S") then
      local v, err = json.decode(line)
      if type(v) ~= "table" then
        return nil, string.format("%s:%d: not a journal line (%s): %s", name or "journal", i, err or "not an object", line:sub(1, 80))
      end
      if type(v.event) == "string" then events[#events + 1] = v
      elseif v.outcome ~= nil then summary = v
      end
    end
  end
  if #events == 0 then return nil, (name or "journal") .. ": no events (not a journal or a `rollout simulate --json` capture)" end
  return { events = events, summary = summary, torn = torn }
end

--- load(path) -> run | nil, err
function M.load(path)
  local h, err = io.open(path, "rb")
  if not h then return nil, err end
  local text = h:read("a")
  h:close()
  local run, perr = M.parse(text, path)
  if not run then return nil, perr end
  run.path = path
  return run
end

M.TERMINAL = model.TERMINAL
M.count, M.iso8601, M.parse_time, M.deployment_id = model.count, model.iso8601, model.parse_time, model.deployment_id
M.check_text, M.analyze = model.check_text, model.analyze
M.json = json_report.json
M.markdown, M.human_duration, M.issues = markdown.markdown, markdown.human_duration, markdown.issues
M.html, M.chart, M.escape = html.html, html.chart, html.escape
M.dora, M.dora_text, M.frequency_label, M.median = dora.dora, dora.dora_text, dora.frequency_label, dora.median

return M

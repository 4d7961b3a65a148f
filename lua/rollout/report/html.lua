-- rollout.report.html: one self-contained page — inline SVG charts (canary vs baseline
-- error rate and P99 over time, stage bands, weight steps, a marker for every gate, trigger
-- and decision), the gate table (each value against its threshold), the decision timeline.
-- No script, no external resource.
-- Error policy: raises only on programming errors.
local rollout = require("rollout")
local output = require("rollout.output")
local datetime = require("rollout.datetime")
local model = require("rollout.report.model")

local M = {}

local fmt_value, clock = output.value, output.clock
local count, check_text = model.count, model.check_text
local iso = datetime.iso8601

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end
M.escape = esc

local function n2(v) return string.format("%.1f", v) end

local function nice_step(range, ticks)
  local raw = range / ticks
  local mag = 10 ^ math.floor(math.log(raw, 10))
  for _, k in ipairs({ 1, 2, 2.5, 5, 10 }) do if raw <= k * mag then return k * mag end end
  return 10 * mag
end

local TIME_STEPS = { 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400 }

local COLORS = { baseline = "#1f77b4", canary = "#e4572e", weight = "#7b61c4", threshold = "#b71c1c",
  pass = "#2e7d32", fail = "#c62828", extend = "#9e9e9e", inconclusive = "#f9a825",
  pending = "#f9a825", fired = "#c62828", resolved = "#2e7d32", reset = "#757575" }

local DECISION_STYLE = {
  rollback_started = { COLORS.fail, "", "rollback" }, paused = { "#f9a825", "5,3", "paused" },
  resumed = { "#1565c0", "5,3", "resumed" }, promoting = { COLORS.pass, "5,3", "promote" },
  command = { "#6d4c41", "2,3", "command" }, weight_failed = { COLORS.fail, "2,2", "router error" },
  hook_failed = { COLORS.fail, "2,2", "hook failed" }, outcome = { "#212121", "", "outcome" },
}

-- One chart: canary vs baseline `signal` over time, stage bands, weight steps, thresholds,
-- gate markers, trigger markers, decision lines. Returns an <svg> string.
local function chart(m, signal, title, id)
  local W, H, L, R, T, B = 1100, 300, 72, 60, 34, 40
  local pw, ph = W - L - R, H - T - B
  local tmax = math.max(m.duration, 1)
  local function x(t) return L + (math.max(0, math.min(t, tmax)) / tmax) * pw end
  local vmax = 0
  for _, s in ipairs(m.series) do
    for _, v in ipairs({ s.baseline[signal], s.canary[signal] }) do if type(v) == "number" and v > vmax then vmax = v end end
  end
  for _, g in ipairs(m.gates) do
    for _, c in ipairs(g.checks or {}) do
      if c.signal == signal then
        for _, v in ipairs({ c.threshold, c.value }) do if type(v) == "number" and v > vmax then vmax = v end end
      end
    end
  end
  if vmax <= 0 then vmax = signal == "error_rate" and 0.01 or 0.1 end
  local ystep = nice_step(vmax * 1.1, 5)
  local ymax = math.ceil(vmax * 1.1 / ystep) * ystep
  local function y(v) return T + ph - (v / ymax) * ph end
  local function yw(w) return T + ph - (w / 100) * ph end
  local o = {}
  local function add(s, ...) o[#o + 1] = select("#", ...) > 0 and string.format(s, ...) or s end
  add('<svg xmlns="http://www.w3.org/2000/svg" id="%s" class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img"'
    .. ' aria-labelledby="%s-title">',
    id, W, H, W, H, id)
  add('<title id="%s-title">%s</title>', id, esc(title))
  add('<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>', W, H)
  -- stage bands
  for i, st in ipairs(m.stages) do
    local x0, x1 = x(st.t_start or 0), x(st.t_end or tmax)
    add('<rect class="stage-band" x="%s" y="%d" width="%s" height="%d" fill="%s"><title>%s</title></rect>', n2(x0), T,
      n2(math.max(0.5, x1 - x0)), ph, i % 2 == 1 and "#eef2f8" or "#f8f9fb",
      esc(string.format("stage %s: %s%% from %s to %s", st.name, tostring(st.weight), clock(st.t_start), clock(st.t_end))))
    add('<line class="stage-boundary" x1="%s" y1="%d" x2="%s" y2="%d" stroke="#90a4ae" stroke-dasharray="3,3"/>', n2(x0), T, n2(x0), T + ph)
    add('<text x="%s" y="%d" font-size="11" fill="#455a64">%s %s%%</text>', n2(x0 + 3), T - 6, esc(st.name), tostring(st.weight))
  end
  -- grid and axes
  local v = 0
  while v <= ymax + ystep / 2 do
    add('<line x1="%d" y1="%s" x2="%d" y2="%s" stroke="#e0e0e0"/>', L, n2(y(v)), L + pw, n2(y(v)))
    add('<text x="%d" y="%s" font-size="11" text-anchor="end" fill="#555">%s</text>', L - 6, n2(y(v) + 4), esc(fmt_value(signal, v)))
    v = v + ystep
  end
  local tstep = TIME_STEPS[#TIME_STEPS]
  for _, s in ipairs(TIME_STEPS) do if tmax / s <= 10 then tstep = s; break end end
  local t = 0
  while t <= tmax + 1e-9 do
    add('<line x1="%s" y1="%d" x2="%s" y2="%d" stroke="#bbb"/>', n2(x(t)), T + ph, n2(x(t)), T + ph + 4)
    add('<text x="%s" y="%d" font-size="11" text-anchor="middle" fill="#555">%s</text>', n2(x(t)), T + ph + 16, esc(clock(t)))
    t = t + tstep
  end
  add('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#9e9e9e"/>', L, T, pw, ph)
  for _, w in ipairs({ 0, 50, 100 }) do
    add('<text x="%d" y="%s" font-size="11" fill="%s">%d%%</text>', L + pw + 6, n2(yw(w) + 4), COLORS.weight, w)
  end
  add('<text x="%d" y="%d" font-size="11" fill="#555" text-anchor="middle">time since start</text>', L + pw // 2, H - 4)
  -- weight steps (right axis)
  if #m.weights > 0 then
    local d = { string.format("M%s %s", n2(x(0)), n2(yw(0))) }
    local last = 0
    for _, w in ipairs(m.weights) do
      d[#d + 1] = string.format("H%s V%s", n2(x(w.t)), n2(yw(w.canary or last)))
      last = w.canary or last
    end
    d[#d + 1] = string.format("H%s", n2(x(tmax)))
    add('<path class="weight" d="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-opacity="0.75">'
      .. '<title>canary weight (right axis)</title></path>',
      table.concat(d, " "), COLORS.weight)
  end
  -- gate thresholds over each stage
  for _, g in ipairs(m.gates) do
    local st = m.stage_by_name[g.stage]
    for _, c in ipairs(g.checks or {}) do
      if c.signal == signal and type(c.threshold) == "number" then
        local x0 = st and x(st.t_start or 0) or x(g.t - (g.window or 0))
        add('<line class="threshold" x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.2" stroke-dasharray="6,4">'
          .. '<title>%s</title></line>',
          n2(x0), n2(y(c.threshold)), n2(x(g.t)), n2(y(c.threshold)), COLORS.threshold,
          esc(string.format("%s gate threshold: %s %s", tostring(g.stage), c.dir == "max" and "≤" or "≥",
            fmt_value(signal, c.threshold))))
      end
    end
  end
  -- the two series (a gap where a version had no data)
  for _, ver in ipairs({ "baseline", "canary" }) do
    local segs, cur = {}, nil
    for _, s in ipairs(m.series) do
      local val = s[ver][signal]
      if type(val) == "number" then
        cur = cur or {}
        cur[#cur + 1] = n2(x(s.t)) .. "," .. n2(y(val))
      elseif cur then segs[#segs + 1] = cur; cur = nil end
    end
    if cur then segs[#segs + 1] = cur end
    for _, sg in ipairs(segs) do
      if #sg == 1 then
        local cx, cy = sg[1]:match("([^,]+),(.+)")
        add('<circle class="series-%s" cx="%s" cy="%s" r="1.8" fill="%s"/>', ver, cx, cy, COLORS[ver])
      else
        add('<polyline class="series-%s" points="%s" fill="none" stroke="%s" stroke-width="1.6" stroke-linejoin="round">'
          .. '<title>%s %s</title></polyline>',
          ver, table.concat(sg, " "), COLORS[ver], ver, esc(signal))
      end
    end
  end
  -- decision lines (a label only where it does not sit on the previous one)
  local last_label = -math.huge
  for _, d in ipairs(m.decisions) do
    local style = DECISION_STYLE[d.event]
    if style then
      add('<line class="decision decision-%s" x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s" stroke-width="1.4"%s><title>%s</title></line>',
        d.event, n2(x(d.t)), T, n2(x(d.t)), T + ph, style[1], style[2] ~= "" and (' stroke-dasharray="' .. style[2] .. '"') or "",
        esc(clock(d.t) .. "  " .. (output.line(d) or d.event)))
      if x(d.t) - last_label >= 12 then
        last_label = x(d.t)
        add('<text x="%s" y="%d" font-size="10" fill="%s" transform="rotate(-90 %s %d)" text-anchor="end">%s</text>',
          n2(x(d.t) - 3), T + 4, style[1], n2(x(d.t) - 3), T + 4, esc(style[3]))
      end
    end
  end
  -- gate markers at the canary's value (or on the axis when it had none)
  for _, g in ipairs(m.gates) do
    local val
    for _, c in ipairs(g.checks or {}) do if c.signal == signal then val = c.value end end
    if val == nil and g.canary then val = g.canary[signal] end
    local parts = {}
    for _, c in ipairs(g.checks or {}) do parts[#parts + 1] = check_text(c) .. " (" .. tostring(c.status) .. ")" end
    add('<circle class="marker gate gate-%s" cx="%s" cy="%s" r="5" fill="%s" stroke="#fff" stroke-width="1.5"><title>%s</title></circle>',
      esc(g.result), n2(x(g.t)), n2(type(val) == "number" and y(val) or (T + ph)), COLORS[g.result] or "#555",
      esc(string.format("%s gate %s: %s%s\n%s", clock(g.t), tostring(g.stage), tostring(g.result), g.why and (" (" .. g.why .. ")") or "",
        table.concat(parts, "\n"))))
  end
  -- trigger markers along the top edge
  for _, e in ipairs(m.triggers) do
    local kind = e.event:gsub("^trigger_", "")
    local color = COLORS[kind] or "#757575"
    local cx = x(e.t)
    local size = kind == "fired" and 7 or 5
    add('<path class="marker trigger trigger-%s" d="M%s %s L%s %s L%s %s Z" fill="%s"><title>%s</title></path>', esc(kind),
      n2(cx - size), n2(T + 2), n2(cx + size), n2(T + 2), n2(cx), n2(T + 2 + size * 1.4), color,
      esc(clock(e.t) .. "  " .. (output.line(e) or (e.event .. " " .. tostring(e.trigger)))))
  end
  add("</svg>")
  return table.concat(o, "\n")
end
M.chart = chart

local CSS = [[
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#212121;margin:24px auto;
max-width:1140px;padding:0 16px;line-height:1.45}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e0e0e0;padding-bottom:4px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;font-size:14px;vertical-align:middle}
.promoted{background:#2e7d32}.rolled_back,.failed,.aborted{background:#c62828}.paused,.unfinished{background:#f9a825;color:#212121}
.why{font-size:16px;background:#f5f7fa;border-left:4px solid #607d8b;padding:10px 14px;margin:12px 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0} dl.facts dt{color:#616161} dl.facts dd{margin:0}
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td.status,td.status.fail{color:#c62828;font-weight:600} td.status.pass{color:#2e7d32}
td.status.nodata,td.status.extend,td.status.inconclusive{color:#a07000}
.legend{font-size:12px;color:#424242;margin:4px 0 0} .legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
.chart{max-width:100%;height:auto;border:1px solid #eceff1;background:#fff}
footer{margin-top:32px;color:#757575;font-size:12px}
]]

local function legend()
  local items = {
    { COLORS.baseline, "baseline" }, { COLORS.canary, "canary" }, { COLORS.weight, "canary weight (right axis)" },
    { COLORS.threshold, "gate threshold" }, { COLORS.pass, "gate pass ●" }, { COLORS.fail, "gate fail ● / rollback" },
    { COLORS.inconclusive, "trigger pending ▼ / pause" }, { COLORS.fired, "trigger fired ▼" },
  }
  local o = { '<p class="legend">' }
  for _, it in ipairs(items) do o[#o + 1] = string.format('<span><i class="sw" style="background:%s"></i>%s</span>', it[1], esc(it[2])) end
  o[#o + 1] = "</p>"
  return table.concat(o)
end

local function gate_table(m)
  local o = { '<table class="gates"><thead><tr><th>time</th><th>stage</th><th>result</th><th>signal</th><th>canary</th>'
    .. '<th>threshold</th><th>baseline</th><th>status</th><th>samples</th></tr></thead><tbody>' }
  for _, g in ipairs(m.gates) do
    local checks = g.checks or {}
    local n = math.max(1, #checks)
    for i = 1, n do
      local c = checks[i]
      local row = { string.format('<tr class="%s">', esc(c and c.status or g.result)) }
      if i == 1 then
        local samples = g.samples and string.format("%s / %s", count(g.samples), count(g.min_samples or 0)) or "–"
        if g.total_rps then samples = samples .. string.format("<br>%.1f / %.0f req/s", g.total_rps, g.min_rps or 0) end
        row[#row + 1] = string.format('<td rowspan="%d">%s</td><td rowspan="%d">%s</td><td rowspan="%d" class="status %s">%s%s</td>',
          n, esc(clock(g.t)), n, esc(g.stage), n, esc(g.result), esc(g.result), g.why and ("<br><small>" .. esc(g.why) .. "</small>") or "")
        row.samples = string.format('<td rowspan="%d" class="num">%s</td>', n, samples)
      end
      if c and c.status == "not_measured" then
        row[#row + 1] = string.format('<td>%s</td><td colspan="3">not measured by any source</td>'
          .. '<td class="status not_measured">not measured</td>',
          esc(c.signal))
      elseif c then
        local op = c.dir == "max" and "≤ " or "≥ "
        row[#row + 1] = string.format('<td>%s</td><td class="num">%s</td><td class="num">%s%s</td><td class="num">%s</td>'
          .. '<td class="status %s">%s</td>',
          esc(c.signal), esc(fmt_value(c.signal, c.value)), op, esc(fmt_value(c.signal, c.threshold)),
          esc(fmt_value(c.signal, g.baseline and g.baseline[c.signal])), esc(c.status), esc(c.status))
      else
        row[#row + 1] = '<td colspan="5">' .. esc(g.error or "no checks") .. "</td>"
      end
      if row.samples then row[#row + 1] = row.samples end
      row[#row + 1] = "</tr>"
      o[#o + 1] = table.concat(row)
    end
  end
  if #m.gates == 0 then o[#o + 1] = '<tr><td colspan="9">no gate was evaluated</td></tr>' end
  o[#o + 1] = "</tbody></table>"
  return table.concat(o, "\n")
end

local function timeline(m)
  local o = { '<table class="timeline"><thead><tr><th>time</th><th>event</th><th>stage</th><th>what happened</th></tr></thead><tbody>' }
  local shown = {}
  for _, d in ipairs(m.decisions) do shown[d] = true end
  for _, e in ipairs(m.triggers) do shown[e] = true end
  for _, e in ipairs(m.notifications.failed) do shown[e] = true end
  for _, ev in ipairs(m.events) do
    if shown[ev] then
      o[#o + 1] = string.format('<tr class="ev-%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>', esc(ev.event), esc(clock(ev.t)),
        esc(ev.event), esc(ev.stage or ""), esc(output.line(ev) or (ev.event == "notification_failed"
          and string.format("notification %s for %s failed after %s attempts: %s", tostring(ev.notifier), tostring(ev["for"]),
            tostring(ev.attempts), tostring(ev.error)) or ev.event)))
    end
  end
  o[#o + 1] = "</tbody></table>"
  return table.concat(o, "\n")
end

--- html(model) -> a self-contained HTML page
function M.html(m)
  local o = m.outcome and m.outcome.outcome or "unfinished"
  local facts = {
    { "deployment", m.deployment_id }, { "service", m.service },
    { "versions", string.format("%s → %s", tostring(m.baseline), tostring(m.canary)) },
    { "started", m.started_ts and (iso(m.started_ts) .. (m.who and (" by " .. m.who) or "")) or "simulation (virtual time)" },
    { "duration", clock(m.duration) }, { "outcome", o .. (m.outcome and m.outcome.reason and (" (" .. m.outcome.reason .. ")") or "") },
    { "playbook", m.playbook or "?" }, { "record", m.path or "?" },
  }
  if m.commit_time then facts[#facts + 1] = { "commit time", m.commit_time } end
  local P = {
    "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>" .. esc(string.format("rollout %s: %s", tostring(m.service), o)) .. "</title>",
    "<style>" .. CSS .. "</style></head><body>",
    string.format('<h1>%s <span class="badge %s">%s</span></h1>',
      esc(tostring(m.service) .. " " .. tostring(m.baseline) .. " → " .. tostring(m.canary)), esc(o), esc((o:gsub("_", " ")))),
    '<p class="why" id="why">' .. esc(m.why) .. "</p>",
    '<dl class="facts">',
  }
  for _, f in ipairs(facts) do P[#P + 1] = string.format("<dt>%s</dt><dd>%s</dd>", esc(f[1]), esc(f[2])) end
  P[#P + 1] = "</dl>"
  P[#P + 1] = "<h2>Error rate: canary vs baseline</h2>"
  local what = "over time, canary vs baseline, with stage boundaries, weight steps, gates, triggers and decisions"
  P[#P + 1] = chart(m, "error_rate", "error rate " .. what, "chart-error-rate")
  P[#P + 1] = legend()
  P[#P + 1] = "<h2>Latency P99: canary vs baseline</h2>"
  P[#P + 1] = chart(m, "p99", "P99 latency " .. what, "chart-p99")
  P[#P + 1] = legend()
  P[#P + 1] = "<h2>Gates: each value against its threshold</h2>"
  P[#P + 1] = gate_table(m)
  P[#P + 1] = "<h2>Decisions, triggers and notifications</h2>"
  P[#P + 1] = timeline(m)
  if #m.preflight > 0 then
    P[#P + 1] = "<h2>Pre-flight checks</h2>"
    P[#P + 1] = '<table class="preflight"><thead><tr><th>check</th><th>status</th><th>detail</th></tr></thead><tbody>'
    for _, p in ipairs(m.preflight) do
      P[#P + 1] = string.format('<tr><td>%s</td><td class="status %s">%s</td><td>%s</td></tr>', esc(p.check), esc(p.status),
        esc(p.status), esc(p.detail or ""))
    end
    P[#P + 1] = "</tbody></table>"
  end
  local c = m.counts
  P[#P + 1] = string.format("<footer>%d evaluations, %d failed evaluations, %d router errors, %d notifications sent, %d not delivered%s. "
    .. "Generated by rollout %s from %s.</footer>", c.evaluations, c.source_errors, c.router_errors, m.notifications.sent,
    #m.notifications.failed, m.torn and "; the record ends in a torn line (ignored)" or "", esc(rollout.version),
    esc(m.path or "?"))
  P[#P + 1] = "</body></html>\n"
  return table.concat(P, "\n")
end

return M

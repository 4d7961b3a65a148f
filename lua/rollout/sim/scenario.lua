-- rollout.sim.scenario: load and check a simulation scenario (format in docs/semantics.md).
-- Times are durations since t = 0 ("12m", "20m30s" or seconds). Errors name the file,
-- the line (when it can be found) and the key path, all at once, like playbooks.
local units = require("rollout.units")
local srcmap = require("rollout.srcmap")
local pbmod = require("rollout.playbook")

local M = {}

local function latency_params(lat)
  local p50 = lat.p50
  local p99 = lat.p99 or p50
  local mu = math.log(p50)
  local sigma = p99 > p50 and (math.log(p99) - mu) / 2.3263478740408408 or 0
  return mu, sigma
end
M.latency_params = latency_params

local VERSION_KEYS = { error_rate = "ratio", latency = "latency", health = "ratio", cpu = "ratio", memory = "ratio", disk = "ratio", changes = "changes" }

local function err(errs, path, msg) errs[#errs + 1] = { path = path, msg = msg } end

local function dur(errs, path, v)
  local d, e = units.parse("duration", v)
  if not d then err(errs, path, e) end
  return d
end

local function ratio(errs, path, v)
  local r, e = units.parse("ratio", v)
  if not r then err(errs, path, e); return nil end
  if r < 0 or r > 1 then err(errs, path, "must be between 0 and 1"); return nil end
  return r
end

local function latency(errs, path, v)
  if type(v) ~= "table" then err(errs, path, "expected {p50 = ..., p99 = ...}"); return nil end
  local out = {}
  for k, x in pairs(v) do
    if k ~= "p50" and k ~= "p99" then err(errs, path .. "." .. tostring(k), "unknown key (p50, p99)")
    else out[k] = dur(errs, path .. "." .. k, x) end
  end
  if not v.p50 then err(errs, path .. ".p50", "required") end
  if out.p50 and out.p50 <= 0 then err(errs, path .. ".p50", "must be > 0") end
  if out.p50 and out.p99 and out.p99 < out.p50 then err(errs, path .. ".p99", "must not be below p50") end
  return out
end

local function version_state(errs, path, v, allow_changes)
  local out = {}
  if type(v) ~= "table" then err(errs, path, "expected a table"); return out end
  for k, x in pairs(v) do
    local kind = VERSION_KEYS[k]
    local p = path .. "." .. tostring(k)
    if not kind or (kind == "changes" and not allow_changes) then err(errs, p, "unknown key")
    elseif kind == "ratio" then out[k] = ratio(errs, p, x)
    elseif kind == "latency" then out[k] = latency(errs, p, x)
    end
  end
  if allow_changes and v.changes ~= nil then
    out.changes = {}
    if type(v.changes) ~= "table" then err(errs, path .. ".changes", "expected a list")
    else
      for i, c in ipairs(v.changes) do
        local cp = path .. ".changes[" .. i .. "]"
        if type(c) ~= "table" or c.at == nil then err(errs, cp .. ".at", "required")
        else
          local at = dur(errs, cp .. ".at", c.at)
          local rest = {}
          for k, x in pairs(c) do if k ~= "at" then rest[k] = x end end
          local st = version_state(errs, cp, rest, false)
          st.at = at
          out.changes[#out.changes + 1] = st
        end
      end
      table.sort(out.changes, function(a, b) return (a.at or 0) < (b.at or 0) end)
    end
  end
  return out
end

local TOP = { seed = true, traffic = true, baseline = true, canary = true, traffic_changes = true, alerts = true,
  restarts = true, source_errors = true, expect = true, preflight = true, router_faults = true, description = true, name = true,
  preview = true, health_every = true }

--- check(raw) -> scenario | nil, errors ({path=, msg=})
function M.check(raw)
  local errs = {}
  if type(raw) ~= "table" then return nil, { { path = "", msg = "a scenario must return a table" } } end
  for k in pairs(raw) do if not TOP[k] then err(errs, tostring(k), "unknown key") end end
  local s = { seed = raw.seed or 1, traffic_changes = {}, alerts = {}, restarts = {}, source_errors = {}, preflight = raw.preflight or {} }
  if math.type(s.seed) ~= "integer" then err(errs, "seed", "expected an integer") end
  local traffic = raw.traffic or {}
  s.rps = tonumber(traffic.rps)
  if not s.rps or s.rps < 0 then err(errs, "traffic.rps", "required: requests per second (>= 0)") end
  s.baseline = version_state(errs, "baseline", raw.baseline or {}, true)
  s.canary = version_state(errs, "canary", raw.canary or {}, true)
  for _, v in ipairs({ "baseline", "canary" }) do
    local st = s[v]
    st.error_rate = st.error_rate or 0
    st.health = st.health or 1
    if not st.latency then err(errs, v .. ".latency", "required: {p50 = ..., p99 = ...}") end
  end
  for i, c in ipairs(raw.traffic_changes or {}) do
    s.traffic_changes[i] = { at = dur(errs, "traffic_changes[" .. i .. "].at", c.at), rps = tonumber(c.rps) }
    if not s.traffic_changes[i].rps then err(errs, "traffic_changes[" .. i .. "].rps", "required number") end
  end
  table.sort(s.traffic_changes, function(a, b) return (a.at or 0) < (b.at or 0) end)
  for i, a in ipairs(raw.alerts or {}) do
    local p = "alerts[" .. i .. "]"
    s.alerts[i] = { at = dur(errs, p .. ".at", a.at), to = a.to and dur(errs, p .. ".to", a.to),
      severity = a.severity or "warning", name = a.name or ("alert" .. i), labels = a.labels or {} }
  end
  for i, r in ipairs(raw.restarts or {}) do s.restarts[i] = dur(errs, "restarts[" .. i .. "].at", r.at) end
  for i, e in ipairs(raw.source_errors or {}) do
    local p = "source_errors[" .. i .. "]"
    s.source_errors[i] = { from = dur(errs, p .. ".from", e.from), to = dur(errs, p .. ".to", e.to) }
  end
  s.router_faults = raw.router_faults or {}
  s.name, s.description = raw.name, raw.description
  if raw.preview ~= nil then -- requests/s the header override sends the canary (blue-green's preview)
    s.preview_rps = type(raw.preview) == "table" and tonumber(raw.preview.rps) or nil
    if not s.preview_rps or s.preview_rps < 0 then err(errs, "preview.rps", "required: preview requests per second (>= 0)") end
  end
  s.health_every = 0.5
  if raw.health_every ~= nil then
    s.health_every = dur(errs, "health_every", raw.health_every)
    if s.health_every and s.health_every <= 0 then err(errs, "health_every", "must be > 0") end
  end
  if raw.expect then
    local e = raw.expect
    s.expect = { outcome = e.outcome, reason = e.reason }
    if e.at then
      s.expect.at = { dur(errs, "expect.at[1]", e.at[1]), dur(errs, "expect.at[2]", e.at[2]) }
    end
  end
  if #errs > 0 then return nil, errs end
  return s
end

--- load(path) -> scenario | nil, errors (each {file=, line=, path=, msg=})
function M.load(path)
  local chunk, lerr = loadfile(path, "t", setmetatable({}, { __index = _G }))
  if not chunk then return nil, { { file = path, path = "", msg = lerr } } end
  local ok, raw = pcall(chunk)
  if not ok then return nil, { { file = path, path = "", msg = tostring(raw) } } end
  local s, errs = M.check(raw)
  if not s then
    local map = srcmap.load(path)
    for _, e in ipairs(errs) do
      local p = {}
      for part in e.path:gmatch("[^%.%[%]]+") do p[#p + 1] = tonumber(part) or part end
      e.file, e.line = path, map:line(p)
    end
    return nil, errs
  end
  s.file = path
  return s
end

M.format_error = pbmod.format_error
return M

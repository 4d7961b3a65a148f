-- rollout.sim.scenario: load and check a simulation scenario (format in docs/semantics.md).
-- Times are durations since t = 0 ("12m", "20m30s" or seconds). Errors name the file,
-- the line (when it can be found) and the key path, all at once, like playbooks: the format
-- is a rollout.schema spec (FIELDS), checked before anything is normalised.
--
-- Error policy: check() and load() return nil, errors for a bad scenario; they never raise.
local units = require("rollout.units")
local srcmap = require("rollout.srcmap")
local pbmod = require("rollout.playbook")
local schema = require("rollout.schema")

local M = {}

-- ---- the format, declared (rollout.schema) ------------------------------------------------

-- Times since t = 0 may be 0; a latency or a health-check period must be > 0.
local KINDS = schema.kinds()
KINDS.time = schema.unit_kind("duration", "a time since the start (seconds or \"12m\", \"20m30s\")", false)
function KINDS.rate(v) -- requests per second: a number >= 0 (or a string holding one)
  local n = tonumber(v)
  if not n then return "expected a number of requests per second, got " .. schema.type_name(v) end
  if n < 0 or n ~= n then return "must be >= 0, got " .. tostring(v) end
end

local LATENCY = { kind = "table", known = true,
  fields = { p50 = { kind = "duration", required = true }, p99 = { kind = "duration" } },
  check = function(v)
    local p50, p99 = units.parse("duration", v.p50), v.p99 and units.parse("duration", v.p99)
    if p50 and p99 and p99 < p50 then return schema.at("p99", "must not be below p50") end
  end }

-- What a version does: its state, and (at the top) the times it changes.
local function state_fields(extra)
  local f = { error_rate = { kind = "ratio" }, health = { kind = "ratio" }, cpu = { kind = "ratio" },
    memory = { kind = "ratio" }, disk = { kind = "ratio" }, latency = LATENCY }
  for k, r in pairs(extra) do f[k] = r end
  return f
end
local CHANGE = { kind = "table", fields = state_fields({ at = { kind = "time", required = true } }) }
local VERSION = { kind = "table", required = true, what = "table {error_rate = ..., latency = {p50 = ..., p99 = ...}}",
  fields = state_fields({
  latency = { kind = LATENCY.kind, known = true, fields = LATENCY.fields, check = LATENCY.check, required = true,
    what = "{p50 = ..., p99 = ...}" },
  changes = { kind = "list", item = CHANGE } }) }

local function list_of(fields) return { kind = "list", item = { kind = "table", fields = fields } } end

local FIELDS = {
  seed = { kind = "integer" },
  name = { kind = "string" }, description = { kind = "string" },
  traffic = { kind = "table", required = true, what = "{rps = requests per second}",
    fields = { rps = { kind = "rate", required = true, what = "number: requests per second (>= 0)" } } },
  baseline = VERSION, canary = VERSION,
  traffic_changes = list_of({ at = { kind = "time", required = true }, rps = { kind = "rate", required = true, what = "number" } }),
  alerts = list_of({ at = { kind = "time", required = true }, to = { kind = "time" }, severity = { kind = "string" },
    name = { kind = "string" }, labels = { kind = "table" } }),
  restarts = list_of({ at = { kind = "time", required = true } }),
  source_errors = list_of({ from = { kind = "time", required = true }, to = { kind = "time", required = true } }),
  router_faults = { kind = "table" }, -- rollout.sim.router reads them
  preflight = { kind = "table" },     -- check name -> "pass" | "fail"
  preview = { kind = "table", fields = { rps = { kind = "rate", required = true,
    what = "number: preview requests per second (>= 0)" } } },
  health_every = { kind = "duration" },
}

--- expect_rule([outcomes]) -> the rule of a scenario's `expect` (what `rollout verify`
--- compares the run with). With outcomes (verify passes rollout.engine's, a layer above
--- this one) `expect` and its outcome are required and the outcome is one of them.
local function expect_rule(outcomes)
  local WHAT = "(what the playbook should decide, e.g. expect = { outcome = \"rolled_back\", "
    .. "reason = \"trigger:error_rate\", at = { \"14m\", \"16m\" } })"
  return { kind = "table", required = outcomes ~= nil, what = WHAT, fields = {
    outcome = { kind = "string", enum = outcomes, required = outcomes ~= nil,
      what = outcomes and ("(one of " .. table.concat(outcomes, ", ") .. ")") },
    reason = { kind = "string" }, -- a prefix of the reason
    at = { kind = "list", item = { kind = "time" }, check = function(v)
      if #v ~= 2 then return "expected the bounds {lower, upper}, got " .. #v .. " value" .. (#v == 1 and "" or "s") end
      local lo, hi = units.parse("duration", v[1]), units.parse("duration", v[2])
      if lo > hi then return "the lower bound is above the upper bound" end
    end },
  } }
end
FIELDS.expect = expect_rule()

-- ---- normalising a checked scenario ----------------------------------------------------------

local function dur(v) return v ~= nil and (units.parse("duration", v)) or nil end

local function version_state(v)
  local out = {}
  for _, k in ipairs({ "error_rate", "health", "cpu", "memory", "disk" }) do
    if v[k] ~= nil then out[k] = units.parse("ratio", v[k]) end
  end
  if v.latency then out.latency = { p50 = dur(v.latency.p50), p99 = dur(v.latency.p99) } end
  if v.changes then
    out.changes = {}
    for _, c in ipairs(v.changes) do
      local rest = {}
      for k, x in pairs(c) do if k ~= "at" then rest[k] = x end end
      local st = version_state(rest)
      st.at = dur(c.at)
      out.changes[#out.changes + 1] = st
    end
    table.sort(out.changes, function(a, b) return a.at < b.at end)
  end
  return out
end

--- check(raw [, {outcomes = list}]) -> scenario | nil, errors ({path = "key.path", msg =,
--- keys = {...}}: the path as text and as the list of keys rollout.schema reported).
--- With outcomes, `expect` is required and its outcome must be one of them (expect_rule).
function M.check(raw, opts)
  if type(raw) ~= "table" then return nil, { { path = "", keys = {}, msg = "a scenario must return a table" } } end
  local fields = FIELDS
  if opts and opts.outcomes then
    fields = { expect = expect_rule(opts.outcomes) }
    for k, r in pairs(FIELDS) do if k ~= "expect" then fields[k] = r end end
  end
  local found = schema.check(raw, fields, { kinds = KINDS })
  if #found > 0 then
    local errs = {}
    for _, e in ipairs(found) do errs[#errs + 1] = { path = schema.path_string(e.path), keys = e.path, msg = e.message } end
    return nil, errs
  end
  local s = { seed = raw.seed or 1, traffic_changes = {}, alerts = {}, restarts = {}, source_errors = {},
    preflight = raw.preflight or {} }
  s.rps = tonumber(raw.traffic.rps)
  s.baseline = version_state(raw.baseline)
  s.canary = version_state(raw.canary)
  for _, v in ipairs({ "baseline", "canary" }) do
    local st = s[v]
    st.error_rate = st.error_rate or 0
    st.health = st.health or 1
  end
  for i, c in ipairs(raw.traffic_changes or {}) do s.traffic_changes[i] = { at = dur(c.at), rps = tonumber(c.rps) } end
  table.sort(s.traffic_changes, function(a, b) return a.at < b.at end)
  for i, a in ipairs(raw.alerts or {}) do
    s.alerts[i] = { at = dur(a.at), to = dur(a.to), severity = a.severity or "warning", name = a.name or ("alert" .. i),
      labels = a.labels or {} }
  end
  for i, r in ipairs(raw.restarts or {}) do s.restarts[i] = dur(r.at) end
  for i, e in ipairs(raw.source_errors or {}) do s.source_errors[i] = { from = dur(e.from), to = dur(e.to) } end
  s.router_faults = raw.router_faults or {}
  s.name, s.description = raw.name, raw.description
  -- requests/s the header override sends the canary (blue-green's preview)
  if raw.preview ~= nil then s.preview_rps = tonumber(raw.preview.rps) end
  s.health_every = raw.health_every ~= nil and dur(raw.health_every) or 0.5
  if raw.expect then
    local e = raw.expect
    s.expect = { outcome = e.outcome, reason = e.reason }
    if e.at then s.expect.at = { dur(e.at[1]), dur(e.at[2]) } end
  end
  return s
end

--- load(path [, opts]) -> scenario | nil, errors (each {file=, line=, path=, msg=});
--- opts as check's.
function M.load(path, opts)
  local chunk, lerr = loadfile(path, "t", setmetatable({}, { __index = _G }))
  if not chunk then return nil, { { file = path, path = "", msg = lerr } } end
  local ok, raw = pcall(chunk)
  if not ok then return nil, { { file = path, path = "", msg = tostring(raw) } } end
  local s, errs = M.check(raw, opts)
  if not s then
    local map = srcmap.load(path)
    for _, e in ipairs(errs) do e.file, e.line = path, map:line(e.keys) end
    return nil, errs
  end
  s.file = path
  return s
end

M.format_error = pbmod.format_error
return M

-- rollout.playbook: load, override and validate a playbook; normalise it for the engine.
--
-- A playbook is a Lua file returning a table (optionally through rollout.playbook{...}).
-- Everything is validated before anything acts: unknown keys, wrong types, weights that do
-- not increase or exceed 100, malformed durations, thresholds and percentages. Every error
-- names the file, the line and the key path (`stages[3].hold`), and all errors are
-- reported at once. Error policy: load() returns nil, errors (a list of
-- {file=, line=, path=, msg=}) for anything wrong with the playbook; it raises only on
-- programming errors in this module.
local alloc = require("rollout.alloc")
local budget = require("rollout.budget")
local units = require("rollout.units")
local sandbox = require("rollout.sandbox")
local srcmap = require("rollout.srcmap")
local fs = require("rollout.fs")
local routers = require("rollout.routers")
local sources = require("rollout.sources")
local judge = require("rollout.judge")
local schema = require("rollout.schema")

local blue_green = require("rollout.strategies.blue_green")

local M = {}

-- ---- error collection ---------------------------------------------------------------

local path_string = schema.path_string -- "sources[2].url": one spelling of key paths
M.path_string = path_string

local Ctx = {}
Ctx.__index = Ctx

local function new_ctx(file, map)
  return setmetatable({ file = file, map = map, errors = {} }, Ctx)
end

local function extend(path, key)
  local p = {}
  for i = 1, #path do p[i] = path[i] end
  p[#p + 1] = key
  return p
end

function Ctx:err(path, msg)
  local line = self.map and self.map:line(path)
  local file, shown = self.file, path_string(path)
  if self.lines_for then -- a value --config set: the YAML's file, line and key path
    local l, f, kp = self.lines_for(path)
    if l then line, file, shown = l, f or file, kp or shown end
  end
  self.errors[#self.errors + 1] = { file = file, line = line, path = shown, msg = msg }
end

function M.format_error(e) -- redacted: a bad value may be a secret (--set-file, ${env:...})
  local where = e.file or "playbook"
  if e.line then where = where .. ":" .. e.line end
  if e.path and e.path ~= "" then return require("rollout.redact").text(string.format("%s: %s: %s", where, e.path, e.msg)) end
  return require("rollout.redact").text(string.format("%s: %s", where, e.msg))
end

-- ---- field checkers: each returns the normalised value (or nil after an error) --------

local function typename(v)
  if type(v) == "number" then return math.type(v) == "integer" and "integer" or "number" end
  return type(v)
end

local function want(ctx, path, v, t)
  if type(v) ~= t then
    ctx:err(path, string.format("expected a %s, got %s", t, typename(v)))
    return false
  end
  return true
end

local function check_string(ctx, path, v)
  if want(ctx, path, v, "string") then return v end
end

local function check_bool(ctx, path, v)
  if want(ctx, path, v, "boolean") then return v end
end

local function check_duration(ctx, path, v, positive)
  if type(v) ~= "number" and type(v) ~= "string" then
    ctx:err(path, "expected a duration (seconds or \"250ms\", \"5m\", \"1h30m\"), got " .. typename(v))
    return nil
  end
  local d, err = units.parse("duration", v)
  if not d then ctx:err(path, err); return nil end
  if positive and d <= 0 then ctx:err(path, "must be greater than 0"); return nil end
  return d
end

local function check_ratio(ctx, path, v)
  if type(v) ~= "number" and type(v) ~= "string" then
    ctx:err(path, "expected a ratio (0.02 or \"2%\"), got " .. typename(v))
    return nil
  end
  local r, err = units.parse("ratio", v)
  if not r then ctx:err(path, err); return nil end
  if r < 0 or r > 1 then ctx:err(path, string.format("must be between 0 and 100%%, got %s", tostring(v))); return nil end
  return r
end

local function check_number(ctx, path, v, min, max)
  if type(v) == "string" and tonumber(v) then v = tonumber(v) end
  if not want(ctx, path, v, "number") then return nil end
  if v ~= v or (min and v < min) or (max and v > max) then
    ctx:err(path, string.format("must be between %s and %s, got %s", tostring(min or "-inf"), tostring(max or "inf"), tostring(v)))
    return nil
  end
  return v
end

local function check_integer(ctx, path, v, min)
  if type(v) == "string" and math.tointeger(tonumber(v)) then v = math.tointeger(tonumber(v)) end
  if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" then
    ctx:err(path, "expected an integer, got " .. typename(v))
    return nil
  end
  if min and v < min then ctx:err(path, "must be at least " .. min); return nil end
  return v
end

local function check_function(ctx, path, v)
  if want(ctx, path, v, "function") then return v end
end

-- A table with known keys: unknown keys are errors. fields: key -> checker(ctx, path, v)
local function check_record(ctx, path, v, fields, required)
  if not want(ctx, path, v, "table") then return nil end
  local out = {}
  for k, val in pairs(v) do
    local f = fields[k]
    if not f then
      local known = {}
      for name in pairs(fields) do known[#known + 1] = name end
      table.sort(known)
      ctx:err(extend(path, k), "unknown key (known: " .. table.concat(known, ", ") .. ")")
    else
      out[k] = f(ctx, extend(path, k), val)
    end
  end
  for _, k in ipairs(required or {}) do
    if v[k] == nil then ctx:err(extend(path, k), "required") end
  end
  return out
end

local function check_list(ctx, path, v, item)
  if not want(ctx, path, v, "table") then return nil end
  local out, n = {}, #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      ctx:err(extend(path, k), "expected a list (1..n); this key does not belong")
    end
  end
  for i = 1, n do out[i] = item(ctx, extend(path, i), v[i]) end
  return out
end

-- ---- thresholds ---------------------------------------------------------------------

-- Which way each signal is judged: "max" means value <= threshold passes.
M.SIGNALS = {
  error_rate = { dir = "max", unit = "ratio" }, p50 = { dir = "max", unit = "duration" },
  p95 = { dir = "max", unit = "duration" }, p99 = { dir = "max", unit = "duration" },
  health = { dir = "min", unit = "ratio" }, cpu = { dir = "max", unit = "ratio" },
  memory = { dir = "max", unit = "ratio" }, disk = { dir = "max", unit = "ratio" },
  min_rps = { dir = "min", unit = "number", signal = "rps" },
}
-- Names people write in conditions, mapped to signal names.
M.ALIASES = {
  latency_p50 = "p50", latency_p95 = "p95", latency_p99 = "p99", health_score = "health",
  error = "error_rate", errors = "error_rate", request_rate = "rps",
}
local CONDITION_SIGNALS = {
  error_rate = true, p50 = true, p95 = true, p99 = true, health = true, cpu = true, memory = true,
  disk = true, rps = true, requests = true, restarts = true,
}

local function parse_unit_value(ctx, path, s, unit)
  if unit == "duration" then return check_duration(ctx, path, s) end
  if unit == "ratio" then return check_ratio(ctx, path, s) end
  return check_number(ctx, path, s, 0)
end

-- "500ms", "1%", 0.99, "1.2x" (times the baseline), "+0.5pp" / "+50ms" (baseline plus).
local function check_threshold(signal)
  local spec = M.SIGNALS[signal]
  return function(ctx, path, v)
    local t = { signal = spec.signal or signal, dir = spec.dir, name = signal }
    if type(v) == "string" then
      local factor = v:match("^%s*([%d%.]+)%s*[xX]%s*$")
      local plus = v:match("^%s*%+%s*(.-)%s*$")
      if factor then
        t.relative, t.factor = "factor", tonumber(factor)
        if not t.factor then ctx:err(path, "malformed factor: \"" .. v .. "\""); return nil end
        return t
      elseif plus then
        local pp = plus:match("^([%d%.]+)%s*pp$")
        local amount
        if pp then amount = tonumber(pp) and tonumber(pp) / 100
        else amount = parse_unit_value(ctx, path, plus, spec.unit) end
        if not amount then
          if pp then ctx:err(path, "malformed value: \"" .. v .. "\"") end
          return nil
        end
        t.relative, t.plus = "plus", amount
        return t
      end
    end
    t.value = parse_unit_value(ctx, path, v, spec.unit)
    if t.value == nil then return nil end
    return t
  end
end

local THRESHOLD_FIELDS = {}
for name in pairs(M.SIGNALS) do THRESHOLD_FIELDS[name] = check_threshold(name) end

local function check_thresholds(ctx, path, v)
  return check_record(ctx, path, v, THRESHOLD_FIELDS)
end

-- ---- sections -----------------------------------------------------------------------


-- rollout.schema errors {path = {...}, message =} (relative to the table at path) -> errors
-- at path + their key paths.
local function schema_errors(ctx, path, errs)
  for _, e in ipairs(errs) do
    local p = path
    for _, k in ipairs(e.path) do p = extend(p, k) end
    ctx:err(p, e.message)
  end
end

-- A section declared as a rollout.schema rule: checked, and kept as written (a table with
-- errors too, as check_record keeps it, so the cross-field checks still see it).
local function declared(rule)
  return function(ctx, path, v)
    schema_errors(ctx, path, schema.check_value(v, rule))
    if type(v) == "table" then return v end
  end
end

local STRING = { kind = "string" }
local VERSION = { kind = "table", required = true, known = true, fields = {
  name = STRING, version = STRING, url = STRING, metrics = STRING, health = STRING, ready = STRING,
  labels = { kind = "table" } } }
local VERSIONS = { kind = "table", known = true, fields = { baseline = VERSION, canary = VERSION } }
local HEADER_OVERRIDE = { kind = "table", known = true,
  fields = { name = { kind = "string", required = true }, value = { kind = "string", required = true } } }
-- (rules live outside TOP: spec/man_spec.lua reads TOP's keys from this file's text)

--- The judge's settings: the playbook's `judge = {...}`, a stage's `judge = true | {...}`
--- (rollout.judge.check says what is allowed), and the runbook's `ab_test`.
function M.check_judge(ctx, path, v, where)
  if where == "stage" and type(v) == "boolean" then return v end
  if type(v) ~= "table" then
    ctx:err(path, (where == "stage" and "expected true, false or a table" or "expected a table") .. ", got " .. typename(v))
    return nil
  end
  schema_errors(ctx, path, judge.check(v, { where = where }))
  return v
end

local function check_ab_test(ctx, path, v)
  if not want(ctx, path, v, "table") then return nil end
  schema_errors(ctx, path, judge.check_ab_test(v))
  return v
end

local function check_stage(ctx, path, v)
  local st = check_record(ctx, path, v, {
    name = check_string,
    weight = function(c, p, x) return check_number(c, p, x, 0, 100) end,
    hold = function(c, p, x) return check_duration(c, p, x, true) end,
    max_hold = function(c, p, x) return check_duration(c, p, x, true) end,
    thresholds = check_thresholds,
    min_samples = function(c, p, x) return check_integer(c, p, x, 0) end,
    pause = check_bool,
    judge = function(c, p, x) return M.check_judge(c, p, x, "stage") end,
  }, { "weight", "hold" })
  return st
end

local function check_condition(ctx, path, v)
  if not want(ctx, path, v, "string") then return nil end
  local c, err = units.condition(v)
  if not c then ctx:err(path, err); return nil end
  local version, signal = "canary", c.signal
  local ver, sig = signal:match("^(%a+)%.([%w_]+)$")
  if ver then version, signal = ver, sig end
  signal = M.ALIASES[signal] or signal
  if not CONDITION_SIGNALS[signal] then
    ctx:err(path, "unknown signal '" .. c.signal .. "' (error_rate, p50, p95, p99, health, rps, requests, cpu, memory, disk, restarts)")
    return nil
  end
  if version ~= "canary" and version ~= "baseline" then
    ctx:err(path, "unknown version '" .. version .. "' (canary or baseline)")
    return nil
  end
  if c.kind == "ratio" then c.value = c.value end -- "5%" already a fraction
  return { signal = signal, op = c.op, value = c.value, version = version, text = v }
end

local function check_trigger(ctx, path, v)
  local tr = check_record(ctx, path, v, {
    name = check_string,
    condition = check_condition,
    check = check_function,
    duration = function(c, p, x) return check_duration(c, p, x) end,
    window = function(c, p, x) return check_duration(c, p, x, true) end,
    alert = function(c, p, x) if want(c, p, x, "table") then return x end end,
    restarts = function(c, p, x) return check_integer(c, p, x, 1) end,
    within = function(c, p, x) return check_duration(c, p, x, true) end,
    description = check_string,
  })
  if not tr then return nil end
  local kinds = (tr.condition and 1 or 0) + (tr.check and 1 or 0) + (tr.alert and 1 or 0) + (tr.restarts and 1 or 0)
  if kinds ~= 1 and #ctx.errors == 0 then
    ctx:err(path, "a trigger needs exactly one of condition, check, alert or restarts")
  end
  return tr
end

local function check_triggers(ctx, path, v)
  if not want(ctx, path, v, "table") then return nil end
  local out = {}
  if #v > 0 then
    for i, t in ipairs(v) do
      local tr = check_trigger(ctx, extend(path, i), t)
      if tr then
        if not tr.name then ctx:err(extend(extend(path, i), "name"), "required in a list of triggers") end
        out[#out + 1] = tr
      end
    end
  else
    local names = {}
    for k in pairs(v) do names[#names + 1] = k end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(names) do
      if type(k) ~= "string" then ctx:err(extend(path, k), "trigger names must be strings")
      else
        local tr = check_trigger(ctx, extend(path, k), v[k])
        if tr then tr.name = tr.name or k; out[#out + 1] = tr end
      end
    end
  end
  return out
end

local HOOK_NAMES = { "deploy", "before_stage", "after_stage", "on_rollback", "on_promote", "finalize", "on_pause", "on_resume",
  "scale_down" } -- scale_down: blue-green retires the old version (rollout.strategies.blue_green)

-- A hook: a function, or a command as an argv list.
local HOOK = { check = function(v)
  if type(v) == "function" then return nil end
  if type(v) == "table" and #v > 0 then
    local bad = {}
    for i, a in ipairs(v) do if type(a) ~= "string" then bad[#bad + 1] = schema.at(i, "argv items must be strings") end end
    return bad
  end
  return "expected a function or an argv list, got " .. typename(v)
end }
local HOOKS = { kind = "table", known = true, fields = {} }
for _, n in ipairs(HOOK_NAMES) do HOOKS.fields[n] = HOOK end

local function check_preflight(ctx, path, v)
  return check_list(ctx, path, v, function(c, p, item)
    return check_record(c, p, item, {
      name = check_string, run = check_function, http = check_string, command = function(cc, pp, x) if want(cc, pp, x, "table") then return x end end,
      expect_status = function(cc, pp, x) return check_integer(cc, pp, x, 100) end,
      timeout = function(cc, pp, x) return check_duration(cc, pp, x, true) end,
      description = check_string, skip = check_string,
    }, { "name" })
  end)
end

local function check_policy(ctx, path, v)
  return check_record(ctx, path, v, {
    inconclusive = function(c, p, x)
      if x ~= "pause" and x ~= "rollback" then c:err(p, "must be \"pause\" or \"rollback\", got " .. tostring(x)); return nil end
      return x
    end,
    consecutive_error_limit = function(c, p, x) return check_integer(c, p, x, 0) end,
    max_hold_factor = function(c, p, x) return check_number(c, p, x, 1) end,
    share_tolerance = check_ratio,
    -- gates on proportions (rollout.proportion): one-sided confidence, power and effect size
    confidence = function(c, p, x) return check_number(c, p, x, 0.5, 0.9999) end,
    power = function(c, p, x) return check_number(c, p, x, 0.5, 0.9999) end,
    detect = function(c, p, x) return check_number(c, p, x, 1.01, 100) end,
    preflight_skips = function(c, p, x)
      if x ~= "skip" and x ~= "fail" then c:err(p, "must be \"skip\" or \"fail\", got " .. tostring(x)); return nil end
      return x
    end,
    relative_to = function(c, p, x)
      if x ~= "snapshot" and x ~= "live" then c:err(p, "must be \"snapshot\" or \"live\", got " .. tostring(x)); return nil end
      return x
    end,
  })
end

-- Routers and sources check their own tables (rollout.routers / rollout.sources dispatch
-- on `type` to the known modules); each problem comes back as a rollout.schema error
-- {path = {...}, message =} relative to the table.
local function check_plugin(mod)
  return function(ctx, path, v)
    if not want(ctx, path, v, "table") then return nil end
    schema_errors(ctx, path, mod.check(v))
    return v
  end
end

local function check_sources(ctx, path, v)
  if type(v) == "table" and v.type then v = { v } end
  return check_list(ctx, path, v, check_plugin(sources))
end

local function any_table(ctx, path, v) if want(ctx, path, v, "table") then return v end end

-- notifications: rollout.notify checks them (types, urls and secrets from *_env/*_file).
local function check_notifications(ctx, path, v)
  local errs = require("rollout.notify").check(v)
  schema_errors(ctx, path, errs)
  if #errs == 0 then return v end
end

local TOP = {
  name = check_string, service = check_string, description = check_string,
  versions = declared(VERSIONS),
  router = check_plugin(routers),
  header_override = declared(HEADER_OVERRIDE),
  sources = check_sources,
  interval = function(c, p, v) return check_duration(c, p, v, true) end,
  trigger_window = function(c, p, v) return check_duration(c, p, v, true) end,
  gate_window = function(c, p, v) return check_duration(c, p, v, true) end,
  thresholds = check_thresholds,
  stages = function(ctx, path, v) return check_list(ctx, path, v, check_stage) end,
  triggers = check_triggers,
  preflight = check_preflight,
  hooks = declared(HOOKS),
  hook_budget = function(ctx, path, v) -- what one hook may spend (rollout.engine HOOK_BUDGET)
    return check_record(ctx, path, v, {
      instructions = function(c, p, x) return check_integer(c, p, x, 1) end,
      time = function(c, p, x) return check_duration(c, p, x, true) end,
      memory = function(c, p, x)
        local n, err = units.parse("bytes", x)
        if not n or n < 1 then c:err(p, err or "must be at least 1 byte"); return nil end
        return n
      end,
    })
  end,
  policy = check_policy,
  max_rollback_time = function(c, p, v) return check_duration(c, p, v, true) end,
  feature_flags = any_table, ab_test = check_ab_test, judge = function(c, p, v) return M.check_judge(c, p, v, "playbook") end,
  notifications = check_notifications,
  metadata = any_table, deployment_id = check_string, commit_time = check_string,
  params = function(c, p, v) -- free-form, but params.kubernetes is rollout.k8s.runbook's configuration
    if not want(c, p, v, "table") then return nil end
    if v.kubernetes ~= nil then schema_errors(c, extend(p, "kubernetes"), require("rollout.k8s.runbook").check_config(v.kubernetes)) end
    return v
  end,
  observe = check_bool, -- observe-only: analysis without moving traffic (rollout.observe)
  strategy = function(c, p, v)
    if v ~= "canary" and v ~= "blue_green" then c:err(p, "must be \"canary\" or \"blue_green\", got " .. tostring(v)); return nil end
    return v
  end,
  blue_green = function(ctx, path, v) -- rollout.strategies.blue_green: two phases and a delay
    local function phase(name)
      return function(c, p, x)
        if not want(c, p, x, "table") then return nil end
        for _, k in ipairs({ "weight", "name", "pause" }) do
          if x[k] ~= nil then c:err(extend(p, k), "not used: blue-green's " .. name:gsub("_", "-") .. " phase sets it") end
        end
        return check_stage(c, p, blue_green.phase(name, x))
      end
    end
    return check_record(ctx, path, v, {
      pre_promotion = phase("pre_promotion"), post_promotion = phase("post_promotion"),
      scale_down_delay = function(c, p, x) return check_duration(c, p, x) end,
    }, { "pre_promotion", "post_promotion" })
  end,
}

-- Cross-field rules: weights increase and stay within 0..100; the last stage reaches 100.
local function check_stages_order(ctx, stages)
  local prev
  for i, st in ipairs(stages) do
    if st.weight then
      if prev and st.weight <= prev then
        ctx:err({ "stages", i, "weight" }, string.format("weights must increase: %s after %s", tostring(st.weight), tostring(prev)))
      end
      prev = st.weight
    end
    if st.hold and st.max_hold and st.max_hold < st.hold then
      ctx:err({ "stages", i, "max_hold" }, "must not be shorter than hold")
    end
  end
end

-- The shortest evaluation interval: every interval the engine samples every source and
-- journals an evaluation; 1ns would spin the loop (and make `simulate` run forever).
M.MIN_INTERVAL = 0.1

local function dur(d)
  if d >= 1 or d == 0 then return string.format("%gs", d) end
  if d >= 1e-3 then return string.format("%gms", d * 1e3) end
  if d >= 1e-6 then return string.format("%gus", d * 1e6) end
  return string.format("%gns", d * 1e9)
end

-- Intervals and windows have sane minimums: interval >= MIN_INTERVAL, and every window
-- (trigger_window, gate_window, a trigger's window / within) at least one interval long.
local function check_minimums(ctx, pb)
  local interval = pb.interval or M.DEFAULTS.interval
  if pb.interval and pb.interval < M.MIN_INTERVAL then
    ctx:err({ "interval" }, "must be at least " .. dur(M.MIN_INTERVAL) .. ", got " .. dur(pb.interval))
    return
  end
  for _, k in ipairs({ "trigger_window", "gate_window" }) do
    if pb[k] and pb[k] < interval - 1e-9 then
      ctx:err({ k }, "must be at least the interval (" .. dur(interval) .. "), got " .. dur(pb[k]))
    end
  end
  for i, tr in ipairs(pb.triggers or {}) do
    for _, k in ipairs({ "window", "within" }) do
      if tr[k] and tr[k] < interval - 1e-9 then
        ctx:err({ "triggers", tr.name or i, k }, "must be at least the interval (" .. dur(interval) .. "), got " .. dur(tr[k]))
      end
    end
  end
end

--- validate(raw, {file=, map=}) -> playbook | nil, errors
function M.validate(raw, opts)
  opts = opts or {}
  local ctx = new_ctx(opts.file, opts.map)
  ctx.lines_for = opts.lines_for
  if type(raw) ~= "table" then
    ctx:err({}, "a playbook must return a table, got " .. typename(raw))
    return nil, ctx.errors
  end
  local bg = raw.strategy == "blue_green"
  local pb = check_record(ctx, {}, raw, TOP, bg and { "name", "versions", "blue_green", "header_override" }
    or { "name", "versions", "stages" }) or {}
  if bg then -- its stages are its two phases
    if raw.stages ~= nil then ctx:err({ "stages" }, "not used with strategy \"blue_green\" (blue_green.pre_promotion and post_promotion are its phases)") end
    if pb.blue_green and pb.blue_green.pre_promotion and pb.blue_green.post_promotion then pb.stages = blue_green.stages(pb.blue_green) end
  elseif raw.blue_green ~= nil then
    ctx:err({ "blue_green" }, "used only with strategy = \"blue_green\"")
  end
  if pb.stages then
    if #pb.stages == 0 then ctx:err({ "stages" }, "needs at least one stage") end
    check_stages_order(ctx, pb.stages)
  end
  check_minimums(ctx, pb)
  if #ctx.errors > 0 then
    table.sort(ctx.errors, function(a, b)
      if (a.line or 0) ~= (b.line or 0) then return (a.line or 0) < (b.line or 0) end
      return a.path < b.path
    end)
    return nil, ctx.errors
  end
  return M.normalise(pb, opts), nil
end

-- Defaults of docs/semantics.md.
M.DEFAULTS = {
  interval = 10, trigger_window = 60, gate_window = 300, max_rollback_time = 300,
  policy = { inconclusive = "pause", consecutive_error_limit = 4, max_hold_factor = 2, share_tolerance = 0.10,
    relative_to = "snapshot", confidence = 0.95, power = 0.8, detect = 3, preflight_skips = "skip" },
}

function M.normalise(pb, opts)
  local d = M.DEFAULTS
  pb.file = opts.file
  pb.service = pb.service or pb.name
  pb.interval = pb.interval or d.interval
  pb.trigger_window = pb.trigger_window or d.trigger_window
  pb.gate_window = pb.gate_window or d.gate_window
  pb.max_rollback_time = pb.max_rollback_time or d.max_rollback_time
  local policy = pb.policy or {}
  for k, v in pairs(d.policy) do if policy[k] == nil then policy[k] = v end end
  pb.policy = policy
  pb.thresholds = pb.thresholds or {}
  pb.triggers = pb.triggers or {}
  pb.hooks = pb.hooks or {}
  pb.preflight = pb.preflight or {}
  pb.sources = pb.sources or {}
  for name, v in pairs(pb.versions) do
    v.name = v.name or name
  end
  for i, st in ipairs(pb.stages) do
    st.index = i
    st.name = st.name or ("stage " .. i)
    st.thresholds = st.thresholds or {}
    st.max_hold = st.max_hold or st.hold * policy.max_hold_factor
    st.min_samples = st.min_samples or 0
  end
  for _, tr in ipairs(pb.triggers) do
    tr.duration = tr.duration or 0
    tr.window = tr.window or (tr.within or pb.trigger_window)
    if tr.alert then tr.kind = "alert"
    elseif tr.restarts then tr.kind = "restarts"; tr.within = tr.within or 300; tr.window = tr.within
    elseif tr.check then tr.kind = "check"
    else tr.kind = "condition" end
  end
  table.sort(pb.triggers, function(a, b) return a.name < b.name end)
  require("rollout.redact").scan(pb) -- its tokens, passwords and *_env/*_file secrets are masked in every output
  return pb
end

--- The thresholds that apply to a stage: the stage's own override the playbook-wide ones.
function M.stage_thresholds(pb, stage)
  local out = {}
  for k, t in pairs(pb.thresholds) do out[k] = t end
  for k, t in pairs(stage.thresholds) do out[k] = t end
  return out
end

-- ---- loading ------------------------------------------------------------------------

--- Apply `--set key=value` overrides to the raw table: `interval=5s`,
--- `stages[2].hold=20s`, `versions.canary.version=v3.0.1`. Values that read as numbers
--- or booleans become them; a value starting with [ or { is JSON (argv lists, tables).
--- Returns true or nil, err.
--- A value may take secrets from outside argv (which `ps` shows): ${env:NAME} is the
--- environment variable NAME, ${file:PATH} the contents of file PATH (its trailing newline
--- cut), `$${` a literal `${`. What they bring is registered with rollout.redact.
--- `--set-file key=PATH` (rollout.args) is `--set key=${file:PATH}`.
function M.expand_secrets(key, value)
  local err
  local out = value:gsub("%$%${", "\0"):gsub("%$(%b{})", function(body)
    if err then return "" end
    local kind, arg = body:match("^{(%a+):(.*)}$")
    if kind == "env" then
      local v = os.getenv(arg)
      if v == nil then err = "--set " .. key .. ": environment variable " .. arg .. " is not set"; return "" end
      require("rollout.redact").register(v)
      return v
    elseif kind == "file" then
      local st = fs.stat(arg)
      if not st or st.type ~= "file" then err = "--set " .. key .. ": " .. arg .. ": not a readable file"; return "" end
      local v, rerr = fs.read(arg)
      if not v then err = "--set " .. key .. ": " .. rerr; return "" end
      v = v:gsub("\r?\n$", "")
      require("rollout.redact").register(v)
      return v
    end
    return nil -- not ours: left as it is
  end)
  if err then return nil, err end
  out = out:gsub("%z", "${")
  return out
end

function M.apply_set(raw, assignment)
  local key, value = assignment:match("^([^=]+)=(.*)$")
  if not key then return nil, "--set expects key=value, got '" .. assignment .. "'" end
  if value:find("${", 1, true) then
    local v, xerr = M.expand_secrets(key, value)
    if not v then return nil, xerr end
    value = v
  end
  local path = {}
  for part, idx in key:gmatch("([^%.%[%]]*)%[?(%d*)%]?") do
    if part ~= "" then path[#path + 1] = part end
    if idx ~= "" then path[#path + 1] = tonumber(idx) end
  end
  if #path == 0 then return nil, "--set: empty key in '" .. assignment .. "'" end
  local v = value
  if value:match("^%s*[%[{]") then -- a list or table as JSON: --set 'params.cmd=["kubectl","scale"]'
    local decoded, jerr = require("rollout.json").decode(value)
    if decoded == nil then return nil, "--set " .. key .. ": malformed JSON value: " .. jerr end
    v = decoded
  elseif value == "true" then v = true elseif value == "false" then v = false
  elseif math.tointeger(tonumber(value)) then v = math.tointeger(tonumber(value))
  elseif tonumber(value) then v = tonumber(value) end
  local t = raw
  for i = 1, #path - 1 do
    if type(t[path[i]]) ~= "table" then
      if t[path[i]] ~= nil then return nil, "--set " .. key .. ": " .. path_string({ table.unpack(path, 1, i) }) .. " is not a table" end
      t[path[i]] = {}
    end
    t = t[path[i]]
  end
  t[path[#path]] = v
  return true
end

--- For scripts that take `PLAYBOOK [--set k=v ...] [flags]`: parse argv with the extra flag
--- spec, load and validate the playbook, print what is wrong. Returns pb, opts, or nil and
--- the exit code (2).
function M.load_from_args(argv, spec, usage)
  local args = require("rollout.args")
  local flags = { set = "list", config = "value" }
  for k, v in pairs(spec or {}) do flags[k] = v end
  local opts, pos = args.parse(argv, flags)
  if not opts or #pos ~= 1 then
    io.stderr:write((opts and "expected one playbook" or pos), "\nusage: ", usage, "\n")
    return nil, 2
  end
  local pb, errs = M.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then
    for _, e in ipairs(errs) do io.stderr:write(M.format_error(e), "\n") end
    return nil, 2
  end
  return pb, opts
end

-- What loading a playbook may spend: VM instructions, seconds of wall time (the loop is
-- served meanwhile: the loader yields every 10 ms), bytes its Lua heap may grow by. Each of
-- the two phases (running the file; merging --config/--set and validating) has this budget.
M.LOAD_BUDGET = { instructions = 5e7, seconds = 5, memory = 64 * 1024 * 1024 }

local function budgeted(limits, fn, ...)
  return budget.run(alloc.run, { instructions = limits.instructions, seconds = limits.seconds },
    fn, limits.memory, ...)
end

-- "file:12: msg" -> file, 12, msg (the file may be an included one)
local function located(path, err)
  local file, line, msg = tostring(err):match("^(.-):(%d+): (.*)$")
  if file and file:sub(1, 1) ~= "[" then return file, tonumber(line), msg end
  return path, nil, tostring(err)
end

local function finish_load(path, raw, opts)
  raw = sandbox.plain(raw) -- no metamethod of the playbook runs while it is validated, or later
  local map = srcmap.load(path)
  local lines_for, warnings
  if opts.config then
    local cfg = require("rollout.config")
    local merged, cerrs, config_lines = cfg.apply(raw, opts.config)
    if not merged then return nil, cerrs end
    raw = merged
    lines_for = config_lines
    warnings = raw.config_warnings
    raw.config_warnings = nil
  end
  for _, s in ipairs(opts.sets or {}) do
    local okset, serr = M.apply_set(raw, s)
    if not okset then return nil, { { file = path, path = "", msg = serr } } end
  end
  local pb, errs = M.validate(raw, { file = path, map = map, lines_for = lines_for, config = opts.config })
  if pb then pb.warnings = warnings or {} end
  return pb, errs
end

--- load(path, {sets = {...}, config = yaml_path, budget = LOAD_BUDGET}) -> pb | nil, errors
--- The file runs in rollout.sandbox's environment (no side effects while it loads) under
--- the load budget; exceeding it, or any error while it runs or is validated, is an error
--- of the playbook (a configuration error), never a crash of the caller.
function M.load(path, opts)
  opts = opts or {}
  local limits = opts.budget or M.LOAD_BUDGET
  local dir = path:match("^(.*)/[^/]*$") or "."
  local env, state = sandbox.new(dir)
  local chunk, err = loadfile(path, "t", env)
  if not chunk then
    local line, msg = err:match(":(%d+): (.*)$")
    return nil, { { file = path, line = tonumber(line), path = "", msg = msg or err } }
  end
  state.loading = true
  local ok, raw = pcall(budgeted, limits, chunk)
  if not ok then
    state.loading = false
    local file, line, msg = located(path, raw)
    return nil, { { file = file, line = line, path = "", msg = msg } }
  end
  local okv, pb, errs = pcall(budgeted, limits, finish_load, path, raw, opts)
  state.loading = false
  if not okv then
    local file, line, msg = located(path, pb)
    return nil, { { file = file, line = line, path = "", msg = msg } }
  end
  -- an error may quote a value that is a secret (--set-file, ${env:...}): every caller
  -- (check --json, submit, an agent's rejection in etcd) gets it redacted
  for _, e in ipairs(errs or {}) do e.msg = require("rollout.redact").text(e.msg) end
  return pb, errs
end

return M

-- rollout.playbook: load, override and validate a playbook; normalise it for the engine.
--
-- A playbook is a Lua file returning a table (optionally through rollout.playbook{...}).
-- Everything is validated before anything acts: unknown keys, wrong types, weights that do
-- not increase or exceed 100, malformed durations, thresholds and percentages. Every key
-- is described once, as a rollout.schema rule (TOP and the rules above it), and one
-- schema walk checks and normalises the whole table (units parsed, defaults filled);
-- routers, sources, notifications, the judge and params.kubernetes are checked by their
-- own modules' schemas, their errors kept at their full key paths. What relates several
-- keys (weights increase, windows at least an interval, the strategy's sections) is
-- checked after, on what could be read. Every error names the file, the line and the key
-- path (`stages[3].hold`; rollout.srcmap finds the line, rollout.config the YAML's for a
-- value --config set), and all errors are reported at once.
--
-- Error policy: validate() and load() return nil, errors (a list of
-- {file=, line=, path=, msg=}, sorted by line) for anything wrong with the playbook,
-- including an error or an exhausted budget while it runs; apply_set() and
-- expand_secrets() return nil, err for a bad --set; nothing raises on bad input, only on
-- programming errors in this module.
local rollout = require("rollout")
local alloc = require("rollout.alloc")
local args = require("rollout.args")
local budget = require("rollout.budget")
local config = require("rollout.config")
local fs = require("rollout.fs")
local json = require("rollout.json")
local judge = require("rollout.judge")
local k8s_runbook = require("rollout.k8s.runbook")
local notify_options = require("rollout.notify_options")
local redact = require("rollout.redact")
local routers = require("rollout.routers")
local sandbox = require("rollout.sandbox")
local schema = require("rollout.schema")
local sources = require("rollout.sources")
local srcmap = require("rollout.srcmap")
local units = require("rollout.units")
local http = require("rollout.http")
local proc = require("rollout.proc")
local net = require("rollout.net")
local yaml = require("rollout.yaml")
local stats = require("rollout.stats")
local histogram = require("rollout.histogram")
local promtext = require("rollout.promtext")
local k8s = require("rollout.k8s")

local M = {}

-- The host API a playbook's code sees, as rollout.sandbox's read-only views (sandbox.MODULES).
M.HOST = { rollout = rollout, http = http, proc = proc, fs = fs, net = net, json = json, yaml = yaml,
  units = units, stats = stats, histogram = histogram, promtext = promtext, k8s = k8s }

-- ---- errors -------------------------------------------------------------------------

local path_string = schema.path_string -- "sources[2].url": one spelling of key paths
M.path_string = path_string

-- Errors of one validation: a key path (a list) -> {file=, line=, path=, msg=}, at the
-- playbook's line of that key (rollout.srcmap) or, for a value --config set, the YAML's.
local Ctx = {}
Ctx.__index = Ctx

local function new_ctx(file, map, lines_for)
  return setmetatable({ file = file, map = map, lines_for = lines_for, errors = {} }, Ctx)
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
  if e.path and e.path ~= "" then return redact.text(string.format("%s: %s: %s", where, e.path, e.msg)) end
  return redact.text(string.format("%s: %s", where, e.msg))
end

-- rollout.schema errors {path, message} of a nested validator (a router's, the judge's)
-- -> problems inside the value being checked, at prefix + their paths.
local function nested(errs, prefix)
  local out = {}
  for _, e in ipairs(errs) do out[#out + 1] = schema.at(schema.extend(prefix or {}, e.path), e.message) end
  return out
end

-- ---- kinds --------------------------------------------------------------------------

-- A number or an integer may be written as a string ("10"), as playbooks always could
-- (schema.PARSE makes it a number); an integer may be written 5.0.
local KINDS = schema.kinds()
function KINDS.number(v)
  local n = tonumber(v)
  if n == nil then return "expected a number, got " .. schema.type_name(v) end
  if n ~= n then return "must be a number, not NaN" end
end
function KINDS.integer(v)
  if not math.tointeger(tonumber(v)) then return "expected an integer, got " .. schema.type_name(v) end
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

-- A threshold's amount in its signal's unit -> number | nil, message
local UNIT_RULES = { duration = { kind = "duration", zero = true }, ratio = { kind = "ratio" }, number = { kind = "number", min = 0 } }
local function unit_value(v, unit)
  local n, errs = schema.normalise(v, UNIT_RULES[unit], { kinds = KINDS })
  if #errs > 0 then return nil, errs[1].message end
  return n
end

-- "500ms", "1%", 0.99, "1.2x" (times the baseline), "+0.5pp" / "+50ms" (baseline plus)
-- -> {signal=, dir=, name=, value= | relative=, factor= | plus=} | nil, message
local function threshold(signal, v)
  local spec = M.SIGNALS[signal]
  local t = { signal = spec.signal or signal, dir = spec.dir, name = signal }
  if type(v) == "string" then
    local factor = v:match("^%s*([%d%.]+)%s*[xX]%s*$")
    local plus = v:match("^%s*%+%s*(.-)%s*$")
    if factor then
      t.relative, t.factor = "factor", tonumber(factor)
      if not t.factor then return nil, "malformed factor: \"" .. v .. "\"" end
      return t
    elseif plus then
      local pp = plus:match("^([%d%.]+)%s*pp$")
      local amount, err
      if pp then
        amount = tonumber(pp) and tonumber(pp) / 100
        if not amount then return nil, "malformed value: \"" .. v .. "\"" end
      else
        amount, err = unit_value(plus, spec.unit)
        if not amount then return nil, err end
      end
      t.relative, t.plus = "plus", amount
      return t
    end
  end
  local value, err = unit_value(v, spec.unit)
  if value == nil then return nil, err end
  t.value = value
  return t
end

function KINDS.threshold(v, rule) return select(2, threshold(rule.signal, v)) end

local THRESHOLDS = { kind = "table", fields = {} }
for name in pairs(M.SIGNALS) do
  THRESHOLDS.fields[name] = { kind = "threshold", signal = name, parse = function(v) return threshold(name, v) end }
end

-- ---- triggers -----------------------------------------------------------------------

-- "error_rate > 5% for 2m" -> {signal=, op=, value=, version=, text=} | nil, message
local function condition(v)
  local c, err = units.condition(v)
  if not c then return nil, err end
  local version, signal = "canary", c.signal
  local ver, sig = signal:match("^(%a+)%.([%w_]+)$")
  if ver then version, signal = ver, sig end
  signal = M.ALIASES[signal] or signal
  if not CONDITION_SIGNALS[signal] then
    return nil, "unknown signal '" .. c.signal .. "' (error_rate, p50, p95, p99, health, rps, requests, cpu, memory, disk, restarts)"
  end
  if version ~= "canary" and version ~= "baseline" then return nil, "unknown version '" .. version .. "' (canary or baseline)" end
  return { signal = signal, op = c.op, value = c.value, version = version, text = v }
end

function KINDS.condition(v)
  if type(v) ~= "string" then return "expected a string, got " .. schema.type_name(v) end
  return select(2, condition(v))
end

local STRING, BOOLEAN, TABLE = { kind = "string" }, { kind = "boolean" }, { kind = "table" }
local FUNCTION = { kind = "function" }
local DURATION, DURATION0 = { kind = "duration" }, { kind = "duration", zero = true }

local TRIGGER_FIELDS = {
  name = STRING, condition = { kind = "condition", parse = condition }, check = FUNCTION,
  duration = DURATION0, window = DURATION, alert = TABLE, restarts = { kind = "integer", min = 1 },
  within = DURATION, description = STRING,
}
local function one_kind(tr)
  local n = (tr.condition and 1 or 0) + (tr.check and 1 or 0) + (tr.alert and 1 or 0) + (tr.restarts and 1 or 0)
  if n ~= 1 then return "a trigger needs exactly one of condition, check, alert or restarts" end
end
local TRIGGER = { kind = "table", fields = TRIGGER_FIELDS, check = one_kind }
local LISTED_TRIGGER = { kind = "table", fields = {}, check = one_kind } -- in a list, a trigger needs its name
for k, r in pairs(TRIGGER_FIELDS) do LISTED_TRIGGER.fields[k] = r end
LISTED_TRIGGER.fields.name = { kind = "string", required = true, what = "in a list of triggers" }

-- A list of named triggers, or a table keyed by name (the engine gets a list, by name).
local function by_name(map)
  local out = {}
  for k, tr in pairs(map) do tr.name = tr.name or k; out[#out + 1] = tr end
  return out
end
local TRIGGERS = { expected = "a list or a table of triggers", one_of = {
  { when = function(v) return type(v) == "table" and #v > 0 end, kind = "list", item = LISTED_TRIGGER },
  { kind = "table", keys = { check = function(k) if type(k) ~= "string" then return "trigger names must be strings" end end },
    map = TRIGGER, parse = by_name },
} }

-- ---- stages, hooks, pre-flight, policy ----------------------------------------------

-- The judge's settings: the playbook's `judge = {...}`, a stage's `judge = true | {...}`
-- (rollout.judge.check says what is allowed), and the runbook's `ab_test`.
local JUDGE = { kind = "table", check = function(v) return nested(judge.check(v, { where = "playbook" })) end }
local STAGE_JUDGE = { expected = "true, false or a table", one_of = {
  BOOLEAN, { kind = "table", check = function(v) return nested(judge.check(v, { where = "stage" })) end } } }
local AB_TEST = { kind = "table", check = function(v) return nested(judge.check_ab_test(v)) end }

local STAGE_FIELDS = {
  name = STRING,
  weight = { kind = "number", min = 0, max = 100, required = true, what = "number from 0 to 100" },
  hold = { kind = "duration", required = true },
  max_hold = DURATION,
  thresholds = THRESHOLDS,
  min_samples = { kind = "integer", min = 0 },
  pause = BOOLEAN,
  judge = STAGE_JUDGE,
}
local STAGE = { kind = "table", fields = STAGE_FIELDS }
local STAGES = { kind = "list", item = STAGE, required = function(pb) return pb.strategy ~= "blue_green" end }

-- blue_green's two phases are stages whose weight and name the strategy sets
-- (rollout.strategies.blue_green runs them)
local BG_PHASES = { pre_promotion = { name = "preview", weight = 0 }, post_promotion = { name = "active", weight = 100 } }
local function phase(name)
  return { kind = "table", fields = STAGE_FIELDS, required = true, prepare = function(x)
    if type(x) ~= "table" then return x end
    local problems = {}
    for _, k in ipairs({ "weight", "name", "pause" }) do
      if x[k] ~= nil then problems[#problems + 1] = schema.at(k, "not used: blue-green's " .. name:gsub("_", "-") .. " phase sets it") end
    end
    local st = {}
    for k, v in pairs(x) do st[k] = v end
    st.name, st.weight = BG_PHASES[name].name, BG_PHASES[name].weight
    return st, problems
  end }
end
local BLUE_GREEN = { kind = "table", required = function(pb) return pb.strategy == "blue_green" end, fields = {
  pre_promotion = phase("pre_promotion"), post_promotion = phase("post_promotion"), scale_down_delay = DURATION0 } }

local VERSION = { kind = "table", required = true, fields = {
  name = STRING, version = STRING, url = STRING, metrics = STRING, health = STRING, ready = STRING, labels = TABLE } }
local VERSIONS = { kind = "table", required = true, what = "table (baseline and canary)",
  fields = { baseline = VERSION, canary = VERSION } }
local HEADER_OVERRIDE = { kind = "table", required = function(pb) return pb.strategy == "blue_green" end,
  fields = { name = { kind = "string", required = true }, value = { kind = "string", required = true } } }

local HOOK_NAMES = { "deploy", "before_stage", "after_stage", "on_rollback", "on_promote", "finalize", "on_pause", "on_resume",
  "scale_down" } -- scale_down: blue-green retires the old version (rollout.strategies.blue_green)

-- A hook: a function, or a command as an argv list.
local HOOK = { expected = "a function or an argv list", one_of = { FUNCTION,
  { when = function(v) return type(v) == "table" and #v > 0 end, kind = "list", item = { check = function(a)
    if type(a) ~= "string" then return "argv items must be strings" end end } } } }
local HOOKS = { kind = "table", fields = {} }
for _, n in ipairs(HOOK_NAMES) do HOOKS.fields[n] = HOOK end

local PREFLIGHT = { kind = "list", item = { kind = "table", fields = {
  name = { kind = "string", required = true }, run = FUNCTION, http = STRING, command = TABLE,
  expect_status = { kind = "integer", min = 100 }, timeout = DURATION, description = STRING, skip = STRING } } }

-- Defaults of docs/semantics.md.
M.DEFAULTS = {
  interval = 10, trigger_window = 60, gate_window = 300, max_rollback_time = 300,
  policy = { inconclusive = "pause", consecutive_error_limit = 4, max_hold_factor = 2, share_tolerance = 0.10,
    relative_to = "snapshot", confidence = 0.95, power = 0.8, detect = 3, preflight_skips = "skip" },
}
local PD = M.DEFAULTS.policy
local POLICY = { kind = "table", fields = {
  inconclusive = { kind = "string", enum = { "pause", "rollback" }, default = PD.inconclusive },
  consecutive_error_limit = { kind = "integer", min = 0, default = PD.consecutive_error_limit },
  max_hold_factor = { kind = "number", min = 1, default = PD.max_hold_factor },
  share_tolerance = { kind = "ratio", default = PD.share_tolerance },
  -- gates on proportions (rollout.proportion): one-sided confidence, power and effect size
  confidence = { kind = "number", min = 0.5, max = 0.9999, default = PD.confidence },
  power = { kind = "number", min = 0.5, max = 0.9999, default = PD.power },
  detect = { kind = "number", min = 1.01, max = 100, default = PD.detect },
  preflight_skips = { kind = "string", enum = { "skip", "fail" }, default = PD.preflight_skips },
  relative_to = { kind = "string", enum = { "snapshot", "live" }, default = PD.relative_to },
} }
POLICY.default = function() return (schema.normalise({}, POLICY, { kinds = KINDS })) end -- no policy: all defaults

local HOOK_BUDGET = { kind = "table", fields = { -- what one hook may spend (rollout.engine HOOK_BUDGET)
  instructions = { kind = "integer", min = 1 }, time = DURATION, memory = { kind = "bytes" } } }

-- Routers and sources check their own tables (rollout.routers / rollout.sources dispatch
-- on `type` to the known modules); each problem comes back as a rollout.schema error
-- {path = {...}, message =} relative to the table.
local ROUTER = { kind = "table", check = function(v) return nested(routers.check(v)) end }
local SOURCES = { kind = "list", item = { kind = "table", check = function(v) return nested(sources.check(v)) end },
  prepare = function(v) if type(v) == "table" and v.type then return { v } end return v end } -- one source alone
-- notifications: rollout.notify_options checks them (types, urls and secrets from *_env/*_file).
local NOTIFICATIONS = { check = function(v) return nested(notify_options.check(v)) end }
-- params: free-form, but params.kubernetes is rollout.k8s.runbook's configuration
local PARAMS = { kind = "table", check = function(v)
  if v.kubernetes ~= nil then return nested(k8s_runbook.check_config(v.kubernetes), { "kubernetes" }) end
end }
local STRATEGY = { kind = "string", enum = { "canary", "blue_green" } }
local function duration_default(name) return { kind = "duration", default = M.DEFAULTS[name] } end
local INTERVAL, TRIGGER_WINDOW = duration_default("interval"), duration_default("trigger_window")
local GATE_WINDOW, MAX_ROLLBACK_TIME = duration_default("gate_window"), duration_default("max_rollback_time")
local NAME = { kind = "string", required = true }
-- (rules live outside TOP: spec/man_spec.lua and spec/docs_spec.lua read TOP's keys from this file's text)

local TOP = {
  name = NAME, service = STRING, description = STRING,
  versions = VERSIONS,
  router = ROUTER,
  header_override = HEADER_OVERRIDE,
  sources = SOURCES,
  interval = INTERVAL,
  trigger_window = TRIGGER_WINDOW,
  gate_window = GATE_WINDOW,
  thresholds = THRESHOLDS,
  stages = STAGES,
  triggers = TRIGGERS,
  preflight = PREFLIGHT,
  hooks = HOOKS,
  hook_budget = HOOK_BUDGET,
  policy = POLICY,
  max_rollback_time = MAX_ROLLBACK_TIME,
  feature_flags = TABLE, ab_test = AB_TEST, judge = JUDGE,
  notifications = NOTIFICATIONS,
  metadata = TABLE, deployment_id = STRING, commit_time = STRING,
  params = PARAMS,
  observe = BOOLEAN, -- observe-only: analysis without moving traffic (rollout.observe)
  strategy = STRATEGY,
  blue_green = BLUE_GREEN, -- rollout.strategies.blue_green: two phases and a delay
}
function KINDS.playbook(v) if type(v) ~= "table" then return "a playbook must return a table, got " .. schema.type_name(v) end end
local PLAYBOOK = { kind = "playbook", fields = TOP }

-- ---- cross-field rules --------------------------------------------------------------
-- Checked on what the schema could read, also when some of it is wrong, so every error
-- is reported at once.

-- Weights increase and stay within 0..100; max_hold is not shorter than hold.
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
  for key, tr in pairs(type(pb.triggers) == "table" and pb.triggers or {}) do
    for _, k in ipairs({ "window", "within" }) do
      if type(tr) == "table" and tr[k] and tr[k] < interval - 1e-9 then
        ctx:err({ "triggers", type(key) == "string" and key or tr.name or key, k },
          "must be at least the interval (" .. dur(interval) .. "), got " .. dur(tr[k]))
      end
    end
  end
end

-- blue_green's stages are its two phases; a canary has no blue_green section.
local function check_strategy(ctx, raw, pb)
  if raw.strategy == "blue_green" then
    if raw.stages ~= nil then
      ctx:err({ "stages" }, "not used with strategy \"blue_green\" (blue_green.pre_promotion and post_promotion are its phases)")
    end
    local bg = pb.blue_green
    pb.stages = bg and bg.pre_promotion and bg.post_promotion and { bg.pre_promotion, bg.post_promotion } or nil
  elseif raw.blue_green ~= nil then
    ctx:err({ "blue_green" }, "used only with strategy = \"blue_green\"")
  end
  if pb.stages and #pb.stages == 0 then ctx:err({ "stages" }, "needs at least one stage") end
end

--- validate(raw, {file=, map=, lines_for=}) -> playbook | nil, errors
--- One rollout.schema walk checks and normalises every key (TOP); then the cross-field
--- rules; errors sorted by line.
function M.validate(raw, opts)
  opts = opts or {}
  local ctx = new_ctx(opts.file, opts.map, opts.lines_for)
  local pb, errs = schema.normalise(raw, PLAYBOOK, { kinds = KINDS, known = true })
  for _, e in ipairs(errs) do ctx:err(e.path, e.message) end
  if not pb then return nil, ctx.errors end -- not a table
  check_strategy(ctx, raw, pb)
  if pb.stages then check_stages_order(ctx, pb.stages) end
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

-- What follows from the validated values: names, indexes, max holds, trigger kinds.
function M.normalise(pb, opts)
  pb.file = opts.file
  pb.service = pb.service or pb.name
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
    st.max_hold = st.max_hold or st.hold * pb.policy.max_hold_factor
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
  redact.scan(pb) -- its tokens, passwords and *_env/*_file secrets are masked in every output
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
      redact.register(v)
      return v
    elseif kind == "file" then
      local st = fs.stat(arg)
      if not st or st.type ~= "file" then err = "--set " .. key .. ": " .. arg .. ": not a readable file"; return "" end
      local v, rerr = fs.read(arg)
      if not v then err = "--set " .. key .. ": " .. rerr; return "" end
      v = v:gsub("\r?\n$", "")
      redact.register(v)
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
    local decoded, jerr = json.decode(value)
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

--- print_errors(errs) -> 2: each error on stderr as `file:line: key: message`, the answer
--- of every command to a playbook that did not load (exit 2, nothing done)
function M.print_errors(errs)
  for _, e in ipairs(errs) do io.stderr:write(M.format_error(e), "\n") end
  return 2
end

--- For scripts that take `PLAYBOOK [--set k=v ...] [flags]`: parse argv with the extra flag
--- spec, load and validate the playbook, print what is wrong. Returns pb, opts, or nil and
--- the exit code (2).
function M.load_from_args(argv, spec, usage)
  local flags = { set = "list", config = "value" }
  for k, v in pairs(spec or {}) do flags[k] = v end
  local opts, pos = args.parse(argv, flags)
  if not opts or #pos ~= 1 then
    io.stderr:write((opts and "expected one playbook" or pos), "\nusage: ", usage, "\n")
    return nil, 2
  end
  local pb, errs = M.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then return nil, M.print_errors(errs) end
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
    local merged, cerrs, config_lines = config.apply(raw, opts.config)
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
  local env, state = sandbox.new(dir, M.HOST)
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
  for _, e in ipairs(errs or {}) do e.msg = redact.text(e.msg) end
  return pb, errs
end

return M

-- rollout.config: the runbook's canary-config.yaml (apiVersion dwcp.io/v1, kind
-- CanaryDeployment) mapped onto a playbook: `rollout run playbooks/canary.lua --config
-- playbooks/canary-config.yaml`. Its stages, golden signals, rollback triggers, feature
-- flags and abTest section override the playbook's. `${VAR}` is expanded from the
-- environment.
--
-- The document is one rollout.schema rule (DOC): one walk checks every key and gives the
-- values the mapping uses; keys rollout cannot use are reported as warnings (file:line:
-- key: why), never silently dropped. A malformed value is an error naming the YAML file,
-- line and key path, also when it is the playbook's own check that finds it (apply's
-- third result maps playbook key paths back to the YAML). A YAML key with no value
-- (`metadata:`) is a key not set.
--
-- Error policy: apply() never raises on a bad file: it returns nil and every error
-- ({file=, line=, path=, msg=}, sorted by line), or the merged playbook with
-- config_warnings.
local schema = require("rollout.schema")
local units = require("rollout.units")
local yaml = require("rollout.yaml")

local M = {}

local NULL = yaml.null

local function expand_env(v)
  if type(v) == "string" then
    return (v:gsub("%${([%w_]+)}", function(name) return os.getenv(name) end))
  elseif type(v) == "table" then
    for k, x in pairs(v) do v[k] = expand_env(x) end
  end
  return v
end

-- A key with no value is a key not set (list items stay: `- ` alone is a malformed item),
-- except `stages:` alone: an empty list of stages, an error.
local function drop_nulls(t, spec)
  for k, x in pairs(t) do
    if x == NULL and type(k) == "string" and not (t == spec and k == "stages") then t[k] = nil
    elseif type(x) == "table" then drop_nulls(x, spec) end
  end
end

-- A YAML key path as the YAML writes it: spec.stages[2].duration, metadata.labels.deployment-id
local function key_path(keys)
  local out = {}
  for i, k in ipairs(keys) do
    out[#out + 1] = type(k) == "number" and ("[" .. k .. "]") or ((i > 1 and "." or "") .. tostring(k))
  end
  return table.concat(out)
end

-- ---- the document -------------------------------------------------------------------

local KINDS = schema.kinds()
function KINDS.mapping(v, rule)
  if type(v) ~= "table" then return "expected a mapping" .. (rule.hint and (" (" .. rule.hint .. ")") or "") end
end
function KINDS.stages(v)
  if type(v) ~= "table" or #v == 0 then return "expected a non-empty list" end
end
function KINDS.condition(v)
  local c, err = units.condition(tostring(v))
  if not c then return err end
end

local NOT_USED = "not used by rollout: unknown key"
local function mapping(fields, extra)
  local r = { kind = "mapping", fields = fields, unknown = NOT_USED }
  for k, x in pairs(extra or {}) do r[k] = x end
  return r
end
local ANY = {}
local function keep(v) return v end
-- durations stay as written: the playbook parses them (and shows them as written)
local DURATION = { kind = "duration", zero = true, parse = keep }
local RATIO = { kind = "ratio" } -- a fraction: "2%" -> 0.02
local VERSION = mapping({ version = ANY }, { unknown = "not used by rollout directly (replicas and images belong to the deploy hook)" })
local STAGE = mapping({
  name = ANY, trafficPercent = { kind = "number" }, duration = DURATION,
  validation = mapping({ healthThreshold = RATIO, errorThreshold = RATIO, latencyP99Max = DURATION, minSampleSize = { kind = "integer" } }),
}, { hint = "name, trafficPercent, duration, validation" })
local TRIGGER = mapping({ condition = { kind = "condition", required = true, what = "condition (\"error_rate > 0.05\")" }, duration = DURATION },
  { hint = "condition, duration" })
local DOC = mapping({
  apiVersion = { enum = { "dwcp.io/v1" }, required = true },
  kind = { enum = { "CanaryDeployment" }, required = true },
  metadata = mapping({ name = ANY, labels = { kind = "mapping", map = ANY } }, { unknown = function(k)
    if k == "namespace" then return "not used by rollout: the router's own settings name the namespace" end
    return NOT_USED
  end }),
  spec = mapping({
    baseline = VERSION, canary = VERSION,
    stages = { kind = "stages", item = STAGE },
    goldenSignals = mapping({
      latency = mapping({ p50Threshold = DURATION, p95Threshold = DURATION, p99Threshold = DURATION }),
      traffic = mapping({ minRequestsPerSecond = ANY }), -- the playbook's min_rps checks it
      errors = mapping({ maxErrorRate = RATIO, criticalErrorRate = RATIO }),
      saturation = mapping({ cpuMax = RATIO, memoryMax = RATIO, diskMax = RATIO }),
    }),
    rollback = mapping({
      autoRollback = { kind = "boolean", check = function(v)
        if v == false then return "false is not supported: rollout always rolls back on a firing trigger" end
      end },
      triggers = { kind = "list", item = TRIGGER },
      maxRollbackTime = DURATION,
    }),
    featureFlags = ANY,
    abTest = mapping({ enabled = ANY, metricName = ANY, significanceLevel = ANY, minimumSampleSize = ANY }), -- rollout.judge checks them
  }, { required = true, what = "mapping" }),
})

-- The trigger names canary.lua uses for the runbook's conditions.
local TRIGGER_NAMES = { error_rate = "error_rate", latency_p99 = "latency_p99", p99 = "latency_p99",
  health_score = "health_score", health = "health_score" }

--- apply(raw_playbook, path) -> merged | nil, errors ; plus warnings in merged.config_warnings
function M.apply(raw, path)
  local doc, lines = yaml.load_file(path, { lines = true })
  if not doc then
    local line, msg = tostring(lines):match(":(%d+):%d+: (.*)$")
    return nil, { { file = path, line = tonumber(line), path = "", msg = msg or tostring(lines) } }
  end
  if type(doc) ~= "table" then return nil, { { file = path, path = "", msg = "expected a mapping" } } end
  -- the line a key path was written on: lines[the table][the key]
  local function line_at(keys)
    local t = doc
    for i = 1, #keys - 1 do
      if type(t) ~= "table" then return nil end
      t = t[keys[i]]
    end
    return type(t) == "table" and lines and lines[t] and lines[t][keys[#keys]] or nil
  end
  local function entries(list) -- a missing key is shown at the line of its mapping
    local out = {}
    for _, e in ipairs(list) do
      local line
      for n = #e.path, 1, -1 do
        line = line_at({ table.unpack(e.path, 1, n) })
        if line then break end
      end
      out[#out + 1] = { file = path, line = line, path = key_path(e.path), msg = e.message }
    end
    table.sort(out, function(a, b)
      if (a.line or 0) ~= (b.line or 0) then return (a.line or 0) < (b.line or 0) end
      return a.path < b.path
    end)
    return out
  end
  drop_nulls(doc, doc.spec)
  expand_env(doc)
  local unknown = {}
  local cfg, errs = schema.normalise(doc, DOC, { kinds = KINDS, unknown_keys = unknown })
  local wrong_kind = {} -- not a CanaryDeployment: nothing else is worth reading
  for _, e in ipairs(errs) do if e.path[1] == "apiVersion" or e.path[1] == "kind" then wrong_kind[#wrong_kind + 1] = e end end
  if #wrong_kind > 0 then return nil, entries(wrong_kind) end
  if #errs > 0 then return nil, entries(errs) end
  local warnings = unknown
  local spec = cfg.spec

  -- where each playbook value the YAML set came from: "stages[2].weight" -> {line=, path=}
  -- (lines_for below), so the playbook's own checks name the YAML file, line and key
  local origin = {}
  local function mark(pbpath, keys)
    local line = line_at(keys)
    if line then origin[pbpath] = { line = line, path = key_path(keys) } end
  end

  local labels = cfg.metadata and cfg.metadata.labels
  local id = labels and labels["deployment-id"]
  if type(id) == "string" and id:find("${", 1, true) then
    warnings[#warnings + 1] = { path = { "metadata", "labels", "deployment-id" },
      message = id .. " is not set in the environment: a deployment id is generated" }
    id = nil
  end
  if id ~= nil and type(id) ~= "string" then id = tostring(id) end
  raw.deployment_id = id or raw.deployment_id

  raw.versions = raw.versions or {}
  for _, v in ipairs({ "baseline", "canary" }) do
    local s = spec[v]
    if s then
      raw.versions[v] = raw.versions[v] or {}
      if s.version then
        raw.versions[v].version = tostring(s.version)
        mark("versions." .. v .. ".version", { "spec", v, "version" })
      end
    end
  end

  if spec.stages then
    local stages = {}
    for i, s in ipairs(spec.stages) do
      local at = { "spec", "stages", i }
      local function key(...) return schema.extend(at, { ... }) end
      local old = raw.stages and raw.stages[i] or {}
      local st = {}
      for k, x in pairs(old) do st[k] = x end
      st.thresholds = {}
      for k, x in pairs(old.thresholds or {}) do st.thresholds[k] = x end
      st.name = s.name and tostring(s.name) or st.name
      local pk = "stages[" .. i .. "]"
      mark(pk, at)
      mark(pk .. ".name", key("name"))
      if s.trafficPercent ~= nil then st.weight = s.trafficPercent; mark(pk .. ".weight", key("trafficPercent")) end
      st.hold = s.duration or st.hold
      mark(pk .. ".hold", key("duration"))
      mark(pk .. ".max_hold", key("duration"))
      local val = s.validation
      if val then
        st.thresholds.health = val.healthThreshold or st.thresholds.health
        st.thresholds.error_rate = val.errorThreshold or st.thresholds.error_rate
        st.thresholds.p99 = val.latencyP99Max or st.thresholds.p99
        if val.minSampleSize ~= nil then st.min_samples = val.minSampleSize end
        mark(pk .. ".thresholds.health", key("validation", "healthThreshold"))
        mark(pk .. ".thresholds.error_rate", key("validation", "errorThreshold"))
        mark(pk .. ".thresholds.p99", key("validation", "latencyP99Max"))
        mark(pk .. ".min_samples", key("validation", "minSampleSize"))
      end
      stages[i] = st
    end
    raw.stages = stages
  end

  local g = spec.goldenSignals
  local critical -- goldenSignals.errors.criticalErrorRate (honoured after the triggers)
  if g then
    raw.thresholds = raw.thresholds or {}
    local th = raw.thresholds
    local gs = { "spec", "goldenSignals" }
    if g.latency then
      for _, q in ipairs({ "p50", "p95", "p99" }) do
        th[q] = g.latency[q .. "Threshold"] or th[q]
        mark("thresholds." .. q, schema.extend(gs, { "latency", q .. "Threshold" }))
      end
    end
    if g.traffic then
      if g.traffic.minRequestsPerSecond ~= nil then th.min_rps = g.traffic.minRequestsPerSecond end
      mark("thresholds.min_rps", schema.extend(gs, { "traffic", "minRequestsPerSecond" }))
    end
    if g.errors then
      th.error_rate = g.errors.maxErrorRate or th.error_rate
      mark("thresholds.error_rate", schema.extend(gs, { "errors", "maxErrorRate" }))
      critical = g.errors.criticalErrorRate -- honoured below, once the rollback triggers are known
    end
    if g.saturation then
      for _, k in ipairs({ "cpu", "memory", "disk" }) do
        th[k] = g.saturation[k .. "Max"] or th[k]
        mark("thresholds." .. k, schema.extend(gs, { "saturation", k .. "Max" }))
      end
    end
  end

  local rb = spec.rollback
  if rb then
    raw.max_rollback_time = rb.maxRollbackTime or raw.max_rollback_time
    mark("max_rollback_time", { "spec", "rollback", "maxRollbackTime" })
    if rb.triggers then
      local triggers = {}
      for k, t in pairs(raw.triggers or {}) do triggers[k] = t end
      for i, t in ipairs(rb.triggers) do
        local at = { "spec", "rollback", "triggers", i }
        local c = units.condition(tostring(t.condition))
        local name = TRIGGER_NAMES[c.signal] or c.signal
        triggers[name] = { condition = t.condition, duration = t.duration or 0 }
        mark("triggers." .. name, at)
        mark("triggers." .. name .. ".condition", schema.extend(at, { "condition" }))
        mark("triggers." .. name .. ".duration", schema.extend(at, { "duration" }))
      end
      raw.triggers = triggers
    end
  end

  -- criticalErrorRate: the error rate at which the canary is rolled back at once. An error_rate
  -- rollback trigger with that very threshold already acts on it (the runbook: 0.05 both);
  -- otherwise it becomes the trigger `critical_error_rate` (error_rate > it, no `for`).
  if critical then
    local covered = false
    for _, t in pairs(raw.triggers or {}) do
      local c = type(t) == "table" and t.condition and units.condition(tostring(t.condition))
      if c and c.signal == "error_rate" and c.op == ">" and math.abs(c.value - critical) < 1e-12 then covered = true end
    end
    if not covered then
      local at = { "spec", "goldenSignals", "errors", "criticalErrorRate" }
      raw.triggers = raw.triggers or {}
      raw.triggers.critical_error_rate = { condition = string.format("error_rate > %.10g", critical), duration = 0 }
      mark("triggers.critical_error_rate", at)
      mark("triggers.critical_error_rate.condition", at)
    end
  end

  if spec.featureFlags ~= nil then raw.feature_flags = spec.featureFlags end
  local ab = spec.abTest
  if ab then
    raw.ab_test = { enabled = ab.enabled, metric = ab.metricName, significance = ab.significanceLevel, min_samples = ab.minimumSampleSize }
    mark("ab_test", { "spec", "abTest" })
    mark("ab_test.enabled", { "spec", "abTest", "enabled" })
    mark("ab_test.metric", { "spec", "abTest", "metricName" })
    mark("ab_test.significance", { "spec", "abTest", "significanceLevel" })
    mark("ab_test.min_samples", { "spec", "abTest", "minimumSampleSize" })
  end

  raw.config_warnings = entries(warnings)
  --- lines_for(keypath list) -> yaml line, yaml file, yaml key path (or nil): the value at
  --- that playbook path, or the nearest enclosing one, came from the YAML.
  local function lines_for(pbpath)
    for n = #pbpath, 1, -1 do
      local parts = {}
      for i = 1, n do
        local k = pbpath[i]
        parts[#parts + 1] = type(k) == "number" and ("[" .. k .. "]") or ((i > 1 and "." or "") .. tostring(k))
      end
      local o = origin[table.concat(parts)]
      if o then return o.line, path, o.path end
    end
    return nil
  end
  return raw, nil, lines_for
end

return M

-- rollout.config: the runbook's canary-config.yaml (apiVersion dwcp.io/v1, kind
-- CanaryDeployment) mapped onto a playbook: `rollout run playbooks/canary.lua --config
-- playbooks/canary-config.yaml`. Its stages, golden signals, rollback triggers, feature
-- flags and abTest section override the playbook's; keys rollout cannot use are reported
-- as warnings (file:line: key: why), never silently dropped. A malformed value is an error
-- naming the YAML file, line and key path, also when it is the playbook's own check that
-- finds it (apply's third result maps playbook key paths back to the YAML). `${VAR}` is
-- expanded from the environment.
--
-- Error policy: apply() never raises on a bad file: it returns nil and every error
-- ({file=, line=, path=, msg=}), or the merged playbook with config_warnings.
local yaml = require("rollout.yaml")
local units = require("rollout.units")

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
  local errors, warnings = {}, {}
  local function line_of(tbl, key) return lines and lines[tbl] and lines[tbl][key] end
  local function err(tbl, key, keypath, msg) errors[#errors + 1] = { file = path, line = line_of(tbl, key), path = keypath, msg = msg } end
  local function warn(tbl, key, keypath, msg) warnings[#warnings + 1] = { file = path, line = line_of(tbl, key), path = keypath, msg = msg } end
  -- where each playbook value the YAML set came from: "stages[2].weight" -> {line=, path=}
  -- (lines_for below), so the playbook's own checks name the YAML file, line and key
  local origin = {}
  local function mark(pbpath, tbl, key, keypath)
    local line = line_of(tbl, key)
    if line then origin[pbpath] = { line = line, path = keypath } end
  end
  if type(doc) ~= "table" then return nil, { { file = path, path = "", msg = "expected a mapping" } } end
  if doc.apiVersion ~= "dwcp.io/v1" or doc.kind ~= "CanaryDeployment" then
    err(doc, "kind", "kind", "expected apiVersion dwcp.io/v1, kind CanaryDeployment; got " .. tostring(doc.apiVersion) .. ", " .. tostring(doc.kind))
    return nil, errors
  end
  expand_env(doc)
  local spec = doc.spec
  if type(spec) ~= "table" then err(doc, "spec", "spec", "required mapping"); return nil, errors end

  local function known(tbl, keypath, keys)
    if type(tbl) ~= "table" then return end
    for k in pairs(tbl) do
      if not keys[k] then warn(tbl, k, keypath .. "." .. k, "not used by rollout: " .. (keys._why or "unknown key")) end
    end
  end

  local function dur(tbl, key, keypath)
    local v = tbl[key]
    if v == nil or v == NULL then return nil end
    local d, e = units.parse("duration", v)
    if not d then err(tbl, key, keypath, e) end
    return d and v
  end

  local function ratio(tbl, key, keypath)
    local v = tbl[key]
    if v == nil or v == NULL then return nil end
    local r, e = units.parse("ratio", v)
    if not r then err(tbl, key, keypath, e); return nil end
    if r < 0 or r > 1 then err(tbl, key, keypath, "must be between 0 and 1 (or 0% and 100%)"); return nil end
    return r
  end

  local md = doc.metadata
  if md ~= nil and md ~= NULL and type(md) ~= "table" then
    err(doc, "metadata", "metadata", "expected a mapping")
  elseif type(md) == "table" then
    local labels = md.labels
    if labels ~= nil and labels ~= NULL and type(labels) ~= "table" then
      err(md, "labels", "metadata.labels", "expected a mapping")
    end
    local id = type(labels) == "table" and labels["deployment-id"] or nil
    if type(id) == "string" and id:find("${", 1, true) then
      warn(labels, "deployment-id", "metadata.labels.deployment-id",
        id .. " is not set in the environment: a deployment id is generated")
      id = nil
    end
    if id ~= nil and type(id) ~= "string" then id = tostring(id) end
    raw.deployment_id = id or raw.deployment_id
    known(md, "metadata", { name = true, labels = true, namespace = true, _why = "" })
    if md.namespace then warn(md, "namespace", "metadata.namespace", "not used by rollout: the router's own settings name the namespace") end
  end
  known(doc, "", { apiVersion = true, kind = true, metadata = true, spec = true })
  known(spec, "spec", { baseline = true, canary = true, stages = true, goldenSignals = true, rollback = true,
    featureFlags = true, abTest = true })

  raw.versions = raw.versions or {}
  for _, v in ipairs({ "baseline", "canary" }) do
    local s = spec[v]
    if type(s) == "table" then
      raw.versions[v] = raw.versions[v] or {}
      if s.version then
        raw.versions[v].version = tostring(s.version)
        mark("versions." .. v .. ".version", s, "version", "spec." .. v .. ".version")
      end
      for k in pairs(s) do
        if k ~= "version" then
          warn(s, k, "spec." .. v .. "." .. k, "not used by rollout directly (replicas and images belong to the deploy hook)")
        end
      end
    end
  end

  if spec.stages ~= nil then
    if type(spec.stages) ~= "table" or #spec.stages == 0 then err(spec, "stages", "spec.stages", "expected a non-empty list")
    else
      local stages = {}
      for i, s in ipairs(spec.stages) do
        local kp = "spec.stages[" .. i .. "]"
        if type(s) ~= "table" then
          err(spec.stages, i, kp, "expected a mapping (name, trafficPercent, duration, validation)")
          goto next_stage
        end
        local old = raw.stages and raw.stages[i] or {}
        local st = {}
        for k, x in pairs(old) do st[k] = x end
        st.thresholds = {}
        for k, x in pairs(old.thresholds or {}) do st.thresholds[k] = x end
        known(s, kp, { name = true, trafficPercent = true, duration = true, validation = true })
        st.name = s.name and tostring(s.name) or st.name
        local pk = "stages[" .. i .. "]"
        mark(pk, spec.stages, i, kp)
        mark(pk .. ".name", s, "name", kp .. ".name")
        if s.trafficPercent ~= nil then
          if type(s.trafficPercent) ~= "number" then err(s, "trafficPercent", kp .. ".trafficPercent", "expected a number")
          else st.weight = s.trafficPercent; mark(pk .. ".weight", s, "trafficPercent", kp .. ".trafficPercent") end
        end
        st.hold = dur(s, "duration", kp .. ".duration") or st.hold
        mark(pk .. ".hold", s, "duration", kp .. ".duration")
        mark(pk .. ".max_hold", s, "duration", kp .. ".duration")
        local val = s.validation
        if type(val) == "table" then
          known(val, kp .. ".validation", { healthThreshold = true, errorThreshold = true, latencyP99Max = true, minSampleSize = true })
          st.thresholds.health = ratio(val, "healthThreshold", kp .. ".validation.healthThreshold") or st.thresholds.health
          st.thresholds.error_rate = ratio(val, "errorThreshold", kp .. ".validation.errorThreshold") or st.thresholds.error_rate
          st.thresholds.p99 = dur(val, "latencyP99Max", kp .. ".validation.latencyP99Max") or st.thresholds.p99
          if val.minSampleSize ~= nil then
            if math.type(val.minSampleSize) ~= "integer" then err(val, "minSampleSize", kp .. ".validation.minSampleSize", "expected an integer")
            else st.min_samples = val.minSampleSize end
          end
          mark(pk .. ".thresholds.health", val, "healthThreshold", kp .. ".validation.healthThreshold")
          mark(pk .. ".thresholds.error_rate", val, "errorThreshold", kp .. ".validation.errorThreshold")
          mark(pk .. ".thresholds.p99", val, "latencyP99Max", kp .. ".validation.latencyP99Max")
          mark(pk .. ".min_samples", val, "minSampleSize", kp .. ".validation.minSampleSize")
        end
        stages[i] = st
        ::next_stage::
      end
      raw.stages = stages
    end
  end

  local g = spec.goldenSignals
  local critical, critical_src -- goldenSignals.errors.criticalErrorRate (honoured after the triggers)
  if type(g) == "table" then
    raw.thresholds = raw.thresholds or {}
    local th = raw.thresholds
    known(g, "spec.goldenSignals", { latency = true, traffic = true, errors = true, saturation = true })
    if type(g.latency) == "table" then
      known(g.latency, "spec.goldenSignals.latency", { p50Threshold = true, p95Threshold = true, p99Threshold = true })
      th.p50 = dur(g.latency, "p50Threshold", "spec.goldenSignals.latency.p50Threshold") or th.p50
      th.p95 = dur(g.latency, "p95Threshold", "spec.goldenSignals.latency.p95Threshold") or th.p95
      th.p99 = dur(g.latency, "p99Threshold", "spec.goldenSignals.latency.p99Threshold") or th.p99
      for _, q in ipairs({ "p50", "p95", "p99" }) do
        mark("thresholds." .. q, g.latency, q .. "Threshold", "spec.goldenSignals.latency." .. q .. "Threshold")
      end
    end
    if type(g.traffic) == "table" then
      known(g.traffic, "spec.goldenSignals.traffic", { minRequestsPerSecond = true })
      if g.traffic.minRequestsPerSecond ~= nil then th.min_rps = g.traffic.minRequestsPerSecond end
      mark("thresholds.min_rps", g.traffic, "minRequestsPerSecond", "spec.goldenSignals.traffic.minRequestsPerSecond")
    end
    if type(g.errors) == "table" then
      known(g.errors, "spec.goldenSignals.errors", { maxErrorRate = true, criticalErrorRate = true })
      th.error_rate = ratio(g.errors, "maxErrorRate", "spec.goldenSignals.errors.maxErrorRate") or th.error_rate
      mark("thresholds.error_rate", g.errors, "maxErrorRate", "spec.goldenSignals.errors.maxErrorRate")
      if g.errors.criticalErrorRate ~= nil then
        -- honoured below, once the rollback triggers are known
        critical = ratio(g.errors, "criticalErrorRate", "spec.goldenSignals.errors.criticalErrorRate")
        critical_src = g.errors
      end
    end
    if type(g.saturation) == "table" then
      known(g.saturation, "spec.goldenSignals.saturation", { cpuMax = true, memoryMax = true, diskMax = true })
      th.cpu = ratio(g.saturation, "cpuMax", "spec.goldenSignals.saturation.cpuMax") or th.cpu
      th.memory = ratio(g.saturation, "memoryMax", "spec.goldenSignals.saturation.memoryMax") or th.memory
      th.disk = ratio(g.saturation, "diskMax", "spec.goldenSignals.saturation.diskMax") or th.disk
      for _, k in ipairs({ "cpu", "memory", "disk" }) do
        mark("thresholds." .. k, g.saturation, k .. "Max", "spec.goldenSignals.saturation." .. k .. "Max")
      end
    end
  end

  local rb = spec.rollback
  if type(rb) == "table" then
    known(rb, "spec.rollback", { autoRollback = true, triggers = true, maxRollbackTime = true })
    if rb.autoRollback == false then
      err(rb, "autoRollback", "spec.rollback.autoRollback", "false is not supported: rollout always rolls back on a firing trigger")
    end
    raw.max_rollback_time = dur(rb, "maxRollbackTime", "spec.rollback.maxRollbackTime") or raw.max_rollback_time
    mark("max_rollback_time", rb, "maxRollbackTime", "spec.rollback.maxRollbackTime")
    if type(rb.triggers) == "table" then
      local triggers = {}
      for k, t in pairs(raw.triggers or {}) do triggers[k] = t end
      for i, t in ipairs(rb.triggers) do
        local kp = "spec.rollback.triggers[" .. i .. "]"
        if type(t) ~= "table" then err(rb.triggers, i, kp, "expected a mapping (condition, duration)"); goto next_trigger end
        known(t, kp, { condition = true, duration = true })
        local c, e = units.condition(tostring(t.condition))
        if not c then err(t, "condition", kp .. ".condition", e)
        else
          local name = TRIGGER_NAMES[c.signal] or c.signal
          triggers[name] = { condition = t.condition, duration = dur(t, "duration", kp .. ".duration") or 0 }
          mark("triggers." .. name, rb.triggers, i, kp)
          mark("triggers." .. name .. ".condition", t, "condition", kp .. ".condition")
          mark("triggers." .. name .. ".duration", t, "duration", kp .. ".duration")
        end
        ::next_trigger::
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
      raw.triggers = raw.triggers or {}
      raw.triggers.critical_error_rate = { condition = string.format("error_rate > %.10g", critical), duration = 0 }
      mark("triggers.critical_error_rate", critical_src, "criticalErrorRate", "spec.goldenSignals.errors.criticalErrorRate")
      mark("triggers.critical_error_rate.condition", critical_src, "criticalErrorRate",
        "spec.goldenSignals.errors.criticalErrorRate")
    end
  end

  if spec.featureFlags ~= nil then raw.feature_flags = spec.featureFlags end
  local ab = spec.abTest
  if type(ab) == "table" then
    known(ab, "spec.abTest", { enabled = true, metricName = true, significanceLevel = true, minimumSampleSize = true })
    raw.ab_test = { enabled = ab.enabled, metric = ab.metricName, significance = ab.significanceLevel, min_samples = ab.minimumSampleSize }
    mark("ab_test", spec, "abTest", "spec.abTest")
    mark("ab_test.enabled", ab, "enabled", "spec.abTest.enabled")
    mark("ab_test.metric", ab, "metricName", "spec.abTest.metricName")
    mark("ab_test.significance", ab, "significanceLevel", "spec.abTest.significanceLevel")
    mark("ab_test.min_samples", ab, "minimumSampleSize", "spec.abTest.minimumSampleSize")
  end

  if #errors > 0 then return nil, errors end
  raw.config_warnings = warnings
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

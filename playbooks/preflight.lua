-- The runbook's ten pre-flight checks (Step 4). Each is a real check through `http` or
-- `proc` against a configurable target (the playbook's `params`), and is skipped with a
-- stated reason when its target is not configured: a skip is visible, never a pass.
-- A command is an argv list (never a shell), e.g.
--   --set 'params.database_command=["psql","postgres://db/app","-c","SELECT 1"]' (via --config)
-- `monitoring` is a real check whenever a source is configured: every metric source is
-- asked once the way an evaluation asks it (ctx.check_sources; and Prometheus's /-/ready),
-- and a source that cannot answer fails the check.
local function params(ctx) return ctx.engine.pb.params or {} end

local function run_command(ctx, key, what)
  local argv = params(ctx)[key]
  if not argv then return "skip", "params." .. key .. " not set (" .. what .. ")" end
  if type(argv) == "string" then argv = { "sh", "-c", argv } end -- an explicit shell, by the user's choice
  local r, err = proc.run({ argv = argv, timeout = 60 })
  if not r then return false, err end
  if r.code ~= 0 then return false, string.format("%s exited %d: %s", argv[1], r.code, (r.stderr or ""):sub(1, 200)) end
  return true, (r.stdout or ""):gsub("%s+$", ""):sub(1, 200)
end

local function get_ok(url, what)
  local r, err = http.request({ method = "GET", url = url, timeout = 5 })
  if not r then return false, what .. ": " .. err end
  if r.status < 200 or r.status > 299 then return false, string.format("%s: %s answered %d", what, url, r.status) end
  return true, string.format("%s answered %d", url, r.status)
end

local function source_url(ctx, kind)
  for _, s in ipairs(ctx.engine.pb.sources) do if s.type == kind then return s.url end end
end

-- Flags as the service reads them: a JSON object, YAML mapping, or `name=value` lines.
local function parse_flags(text)
  local ok, doc = pcall(json.decode, text)
  if ok and type(doc) == "table" then return doc end
  local yok, ydoc = pcall(yaml.load, text)
  if yok and type(ydoc) == "table" then return ydoc end
  local out, any = {}, false
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^%s*([%w_%.%-]+)%s*[=:]%s*(%S+)%s*$")
    if k then out[k], any = v, true end
  end
  if any then return out end
  return nil, "not a JSON object, a YAML mapping or name=value lines"
end

-- Read the flags from where the service reads them: params.feature_flags_url (GET),
-- params.feature_flags_file, or params.feature_flags_command (its stdout). Returns flags,
-- where | nil, err | nil (none configured).
local function read_flags(ctx)
  local p = params(ctx)
  if p.feature_flags_url then
    local r, err = http.request({ method = "GET", url = p.feature_flags_url, timeout = 5 })
    if not r then return nil, "feature flags: " .. err end
    if r.status < 200 or r.status > 299 then return nil, string.format("feature flags: %s answered %d", p.feature_flags_url, r.status) end
    local flags, perr = parse_flags(r.body)
    if not flags then return nil, p.feature_flags_url .. ": " .. perr end
    return flags, p.feature_flags_url
  end
  if p.feature_flags_file then
    local text, err = fs.read(p.feature_flags_file)
    if not text then return nil, "feature flags: cannot read " .. p.feature_flags_file .. ": " .. tostring(err) end
    local flags, perr = parse_flags(text)
    if not flags then return nil, p.feature_flags_file .. ": " .. perr end
    return flags, p.feature_flags_file
  end
  if p.feature_flags_command then
    local argv = p.feature_flags_command
    if type(argv) == "string" then argv = { "sh", "-c", argv } end
    local r, err = proc.run({ argv = argv, timeout = 60 })
    if not r then return nil, err end
    if r.code ~= 0 then return nil, string.format("%s exited %d: %s", argv[1], r.code, (r.stderr or ""):sub(1, 200)) end
    local flags, perr = parse_flags(r.stdout or "")
    if not flags then return nil, argv[1] .. "'s output: " .. perr end
    return flags, table.concat(argv, " ")
  end
end

-- The same value as the playbook expects: booleans and numbers also as their text ("true").
local function same_flag(want, have)
  if have == want then return true end
  return have ~= nil and tostring(have) == tostring(want)
end

--- 8. the playbook's feature_flags against the flags the service reads; a flag missing
--- there or with another value fails the check, naming each.
local function feature_flags(ctx)
  local want = ctx.engine.pb.feature_flags
  if not want or next(want) == nil then return "skip", "no feature_flags in the playbook" end
  local have, where = read_flags(ctx)
  if have == nil and where == nil then
    return "skip", "params.feature_flags_url, feature_flags_file or feature_flags_command not set (where the service reads its flags)"
  end
  if not have then return false, where end
  local names, bad = {}, {}
  for k in pairs(want) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    if not same_flag(want[k], have[k]) then
      bad[#bad + 1] = string.format("%s: expected %s, the service has %s", k, tostring(want[k]),
        have[k] == nil and "no such flag" or tostring(have[k]))
    end
  end
  if #bad > 0 then return false, "feature flags differ from " .. where .. ": " .. table.concat(bad, "; ") end
  return true, string.format("%d flag(s) as expected in %s", #names, where)
end

return {
  { name = "cluster_capacity", description = "1. cluster capacity",
    run = function(ctx) return run_command(ctx, "capacity_command", "e.g. kubectl describe nodes") end },
  { name = "baseline_status", description = "2. baseline deployment healthy",
    run = function(ctx)
      local b = ctx.versions.baseline
      if b.health then return get_ok(b.health, "baseline health") end
      return run_command(ctx, "baseline_status_command", "or set versions.baseline.health")
    end },
  { name = "database", description = "3. database connectivity",
    run = function(ctx) return run_command(ctx, "database_command", "e.g. psql ... -c 'SELECT 1'") end },
  { name = "traffic_routing", description = "4. traffic routing configuration",
    run = function(ctx)
      local router = ctx.engine.router
      if not router or not router.check then return "skip", "no router to check" end
      for _, c in ipairs(router:check()) do
        if not c.ok then return false, c.name .. ": " .. tostring(c.detail) end
      end
      local w, err = router:get_weights()
      if not w then return false, err end
      if w.canary ~= 0 then return false, "canary already receives " .. w.canary .. "% (expected 0 before the rollout)" end
      return true, "baseline 100%, canary 0%"
    end },
  { name = "monitoring", description = "5. monitoring stack (every metric source answers)",
    run = function(ctx)
      local answered = {}
      local url = source_url(ctx, "prometheus")
      if url then
        local ok, detail = get_ok(url .. "/-/ready", "prometheus")
        if not ok then return false, detail end
      end
      for _, c in ipairs(ctx.check_sources()) do
        if not c.ok then return false, c.detail end
        answered[#answered + 1] = c.detail
      end
      if #answered == 0 then return "skip", "no metric source configured" end
      return true, table.concat(answered, ", ")
    end },
  { name = "alertmanager", description = "6. alert configuration (Alertmanager up)",
    run = function(ctx)
      local url = source_url(ctx, "alertmanager")
      if not url then return "skip", "no alertmanager source configured" end
      return get_ok(url .. "/api/v2/status", "alertmanager")
    end },
  { name = "canary_image", description = "7. canary image available",
    run = function(ctx)
      local c = ctx.versions.canary
      if c.ready then return get_ok(c.ready, "canary readiness") end
      return run_command(ctx, "canary_image_command", "e.g. docker pull novacron/dwcp:v3.0.0")
    end },
  { name = "feature_flags", description = "8. feature flag configuration",
    run = function(ctx) return feature_flags(ctx) end },
  { name = "external_dependencies", description = "9. external dependencies",
    run = function(ctx)
      local url = params(ctx).external_health_url
      if not url then return "skip", "params.external_health_url not set" end
      return get_ok(url, "external dependency")
    end },
  { name = "rollback_ready", description = "10. rollback readiness",
    run = function(ctx)
      local p = params(ctx)
      if p.rollback_ready_command then return run_command(ctx, "rollback_ready_command", "") end
      local router = ctx.engine.router
      if not router then return "skip", "no router" end
      local w, err = router:get_weights()
      if not w then return false, "cannot read weights back, so a rollback could not be confirmed: " .. err end
      return true, "router reads back weights; rollback sets baseline 100%"
    end },
}

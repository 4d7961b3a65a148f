-- rollout.schema: declarative option specs, checked with structured errors.
--
-- One walker for every configuration table rollout reads (routers, sources, notifiers,
-- ...): a spec says which keys a table has, what kind each value is, which are required,
-- which values are allowed; the walker reports every problem as {path = {...}, message =}
-- with the full key path (a list of keys: {"router", "socket"}, {"sources", 2, "url"}), so
-- the playbook can map each one to its file and line (rollout.srcmap) without parsing text.
--
--   local schema = require("rollout.schema")
--   local FIELDS = {
--     socket  = { kind = "string", required = true },
--     timeout = { kind = "duration" },                       -- 5, "250ms", "5m"
--     mode    = { kind = "string", enum = { "fast", "safe" } },
--     limits  = { kind = "table", fields = { memory = { kind = "bytes" } } },   -- nested
--     targets = { kind = "table", item = { kind = "string" } },                 -- a list
--     port    = { kind = "integer", min = 1, max = 65535 },
--     url     = { kind = "string", check = function(v, parent) if ... then return "message" end end },
--   }
--   local errs = schema.check(cfg, FIELDS, { path = { "router" } })
--   for _, e in ipairs(errs) do print(schema.path_string(e.path) .. ": " .. e.message) end
--   -- router.timeout: expected a duration (seconds or "250ms", "5m", "1h30m"), got boolean
--
-- A rule: kind (a name in opts.kinds, else in schema.KINDS), required (with `what`, the
-- words after "required": "required string"), enum (allowed values), min / max (numbers),
-- fields (a nested table's spec), item (each element of a list), check(v, parent) for
-- anything else. A kind or a check returns nil when the value is fine, a message, a
-- schema.at(key, message) for a problem inside the value (an argv's 3rd element), or a
-- list of those. Keys of a table are checked in sorted order, then unknown keys (each an
-- error at its own full path); a record with `known = true` lists the known keys.
--
-- Modules keep their own message wording by passing kinds that override schema.KINDS
-- (schema.kinds{...}); schema.strings(errs) gives the "key: message" lines their
-- validate() functions always returned.
--
-- Error policy: check() never raises on bad input (that is what it reports); a malformed
-- spec (an unknown kind) raises, as it is a programming error.
local units = require("rollout.units")

local M = {}

local function type_name(v)
  if type(v) == "number" then return math.type(v) == "integer" and "integer" or "number" end
  return type(v)
end
M.type_name = type_name

-- ---- paths --------------------------------------------------------------------------

--- path_string({"sources", 2, "url"}) -> "sources[2].url"; keys that are not identifiers
--- are quoted: {"env", "A B"} -> 'env["A B"]'.
function M.path_string(path)
  local out = {}
  for i, k in ipairs(path) do
    if type(k) == "number" then out[#out + 1] = "[" .. k .. "]"
    elseif type(k) == "string" and k:match("^[%a_][%w_]*$") then out[#out + 1] = (i > 1 and "." or "") .. k
    else out[#out + 1] = "[" .. string.format("%q", tostring(k)) .. "]" end
  end
  return table.concat(out)
end

local function extend(path, key)
  local p = {}
  for i = 1, #path do p[i] = path[i] end
  if type(key) == "table" then
    for _, k in ipairs(key) do p[#p + 1] = k end
  else
    p[#p + 1] = key
  end
  return p
end
M.extend = extend

--- at(key | {keys...}, message): a problem inside the value being checked (returned by a
--- kind or check function; its path is the value's path plus key).
function M.at(key, message)
  return { at = key, message = message }
end

--- strings(errs [, sort]) -> {"path: message", ...} (a message alone when the path is
--- empty); sorted when sort is true.
function M.strings(errs, sort)
  local out = {}
  for _, e in ipairs(errs) do
    local p = M.path_string(e.path)
    out[#out + 1] = p ~= "" and (p .. ": " .. e.message) or e.message
  end
  if sort then table.sort(out) end
  return out
end

-- ---- kinds --------------------------------------------------------------------------

local KINDS = {}
M.KINDS = KINDS

function KINDS.any() end
function KINDS.string(v) if type(v) ~= "string" then return "expected a string, got " .. type_name(v) end end
function KINDS.nonempty(v) -- a string that says something
  if type(v) ~= "string" then return "expected a string, got " .. type_name(v) end
  if v == "" then return "must not be empty" end
end
function KINDS.number(v)
  if type(v) ~= "number" then return "expected a number, got " .. type_name(v) end
  if v ~= v then return "must be a number, not NaN" end
end
function KINDS.integer(v) if math.type(v) ~= "integer" then return "expected an integer, got " .. type_name(v) end end
function KINDS.boolean(v) if type(v) ~= "boolean" then return "expected a boolean, got " .. type_name(v) end end
function KINDS.table(v) if type(v) ~= "table" then return "expected a table, got " .. type_name(v) end end
KINDS["function"] = function(v) if type(v) ~= "function" then return "expected a function, got " .. type_name(v) end end

--- A unit kind: numbers and strings rollout.units parses ("5m", "1%", "2Gi"); `positive`
--- also rejects 0.
function M.unit_kind(unit, what, positive)
  return function(v)
    if type(v) ~= "number" and type(v) ~= "string" then return "expected " .. what .. ", got " .. type_name(v) end
    local x, err = units.parse(unit, v)
    if not x then return err end
    if positive and x <= 0 then return "must be greater than 0" end
    if not positive and x < 0 then return "must not be negative" end
  end
end
KINDS.duration = M.unit_kind("duration", "a duration (seconds or \"250ms\", \"5m\", \"1h30m\")", true)
KINDS.ratio = function(v)
  if type(v) ~= "number" and type(v) ~= "string" then return "expected a ratio (0.02 or \"2%\"), got " .. type_name(v) end
  local r, err = units.parse("ratio", v)
  if not r then return err end
  if r < 0 or r > 1 then return string.format("must be between 0 and 100%%, got %s", tostring(v)) end
end
KINDS.bytes = M.unit_kind("bytes", "a size (bytes or \"2Gi\")", true)
function KINDS.url(v)
  if type(v) ~= "string" then return "expected a string, got " .. type_name(v) end
  if not v:match("^https?://[^/]") then return "expected an http:// or https:// URL, got \"" .. v .. "\"" end
end
function KINDS.list(v) -- a list of anything (item = rule checks the elements)
  if type(v) ~= "table" then return "expected a list, got " .. type_name(v) end
end

--- kinds(overrides) -> a kinds table: the overrides, else schema.KINDS.
function M.kinds(overrides)
  return setmetatable(overrides or {}, { __index = KINDS })
end

-- ---- the walker ---------------------------------------------------------------------

local check_record

-- Append what a kind or check returned (nil, a message, an at(), or a list of them).
local function report(errs, path, r)
  if r == nil or r == false then return end
  if type(r) == "string" then errs[#errs + 1] = { path = path, message = r }; return end
  if r.message then errs[#errs + 1] = { path = r.at ~= nil and extend(path, r.at) or path, message = r.message }; return end
  for _, x in ipairs(r) do report(errs, path, x) end
end

local function check_value(v, rule, path, opts, errs, parent)
  local kinds = opts.kinds or KINDS
  local kind = kinds[rule.kind or "any"]
  if not kind then error("schema: unknown kind '" .. tostring(rule.kind) .. "'", 3) end
  local n = #errs
  report(errs, path, kind(v))
  if #errs > n then return end
  if rule.enum then
    local ok = false
    for _, x in ipairs(rule.enum) do if x == v then ok = true; break end end
    if not ok then
      local shown = {}
      for _, x in ipairs(rule.enum) do shown[#shown + 1] = type(x) == "string" and ("\"" .. x .. "\"") or tostring(x) end
      report(errs, path, "must be one of " .. table.concat(shown, ", ") .. ", got " .. tostring(v))
      return
    end
  end
  if type(v) == "number" and (rule.min or rule.max) then
    if (rule.min and v < rule.min) or (rule.max and v > rule.max) then
      if rule.min and rule.max then
        report(errs, path, string.format("must be between %s and %s, got %s", rule.min, rule.max, tostring(v)))
      elseif rule.min then
        report(errs, path, string.format("must be at least %s, got %s", rule.min, tostring(v)))
      else
        report(errs, path, string.format("must be at most %s, got %s", rule.max, tostring(v)))
      end
      return
    end
  end
  if rule.fields and type(v) == "table" then
    check_record(v, rule.fields, path, opts, errs, rule)
    if #errs > n then return end
  end
  if rule.item and type(v) == "table" then
    local len = #v
    local stray = {}
    for k in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > len then stray[#stray + 1] = k end
    end
    table.sort(stray, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(stray) do report(errs, extend(path, k), "expected a list (1..n); this key does not belong") end
    for i = 1, len do check_value(v[i], rule.item, extend(path, i), opts, errs, v) end
    if #errs > n then return end
  end
  if rule.check then report(errs, path, rule.check(v, parent)) end
end

check_record = function(t, fields, path, opts, errs, rule)
  local keys = {}
  for k in pairs(fields) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local r, v = fields[k], t[k]
    if v == nil then
      if r.required then
        report(errs, extend(path, k), "required" .. ((r.what or r.kind) and (" " .. (r.what or r.kind)) or ""))
      end
    else
      check_value(v, r, extend(path, k), opts, errs, t)
    end
  end
  local unknown = {}
  for k in pairs(t) do if fields[k] == nil then unknown[#unknown + 1] = k end end
  table.sort(unknown, function(a, b) return tostring(a) < tostring(b) end)
  local known = (rule and rule.known) or opts.known
  for _, k in ipairs(unknown) do
    local msg = "unknown key"
    if known then
      local names = {}
      for _, name in ipairs(keys) do names[#names + 1] = tostring(name) end
      msg = msg .. " (known: " .. table.concat(names, ", ") .. ")"
    end
    report(errs, extend(path, k), msg)
  end
end

--- check(t, fields, {path = {...}, kinds = {...}, known = bool, errs = list}) -> errs
--- Every problem of table t against the spec `fields`, as {path = {...}, message = "..."}
--- (paths start with opts.path); an empty list when t is fine. A t that is not a table is
--- one error at opts.path.
function M.check(t, fields, opts)
  opts = opts or {}
  local errs = opts.errs or {}
  local path = opts.path or {}
  if type(t) ~= "table" then
    report(errs, path, "expected a table, got " .. type_name(t))
    return errs
  end
  check_record(t, fields, path, opts, errs, opts)
  return errs
end

--- check_value(v, rule, {path =, kinds =}) -> errs: one value against one rule.
function M.check_value(v, rule, opts)
  opts = opts or {}
  local errs = opts.errs or {}
  check_value(v, rule, opts.path or {}, opts, errs, nil)
  return errs
end

--- prefix(errs, path) -> errs with path put in front of each error's path (in place).
function M.prefix(errs, path)
  for _, e in ipairs(errs) do e.path = extend(path, e.path) end
  return errs
end

return M

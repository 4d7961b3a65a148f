-- rollout.schema: declarative option specs, checked with structured errors.
--
-- One walker for every configuration table rollout reads (the playbook, the --config YAML,
-- routers, sources, notifiers, the judge, scenarios, ...): a spec says which keys a table
-- has, what kind each value is, which are required, which values are allowed; the walker
-- reports every problem as {path = {...}, message =} with the full key path (a list of
-- keys: {"router", "socket"}, {"sources", 2, "url"}), so the playbook can map each one to
-- its file and line (rollout.srcmap) without parsing text.
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
-- A rule:
--   kind      a name in opts.kinds, else in schema.KINDS; kind(v, rule) -> nil | problem
--   required  true, or function(parent) -> bool; `what` is the words after "required"
--   enum      the allowed values (checked instead of the kind);  min / max  bounds of a number
--   fields    a record's spec (unknown keys are errors, or go to the list opts.unknown_keys;
--             `known = true` lists the known keys, `unknown = "message"` words the error)
--   item      each element of a list;  map / keys  each value / key of a table
--   one_of    alternatives: the first whose when(v) is true (or, without when, whose kind
--             accepts v) applies; none: "expected <rule.expected>, got <type>"
--   prepare(v, parent) -> v' [, problems]   a shorthand rewritten before it is checked
--   check(v, parent) -> problem             anything else, once the value is well formed
--   parse(v, parent) -> value | nil, msg    normalise() only: the value the program uses
--   default   normalise() only: the value (or function(parent) -> value) of an absent key
--   zero      a duration / size kind that also accepts 0
--   nonempty  a string kind that refuses ""
-- The base kinds (string, number, positive, integer, boolean, table, duration, bytes,
-- ratio, url, headers, list, ...) are the only ones: a module adds kinds of its own
-- (schema.kinds{...}) but states its differences from these as rule options, never by
-- redefining them, so one value means the same in a source, a router and a notifier.
-- `headers` refuses CR and LF in names and values (a header injection) for everyone.
-- A problem is nil when the value is fine, a message, a schema.at(key, message) for a
-- problem inside the value (an argv's 3rd element), or a list of those. Keys of a table
-- are checked in sorted order, then unknown keys (each an error at its own full path).
--
-- check() reports; normalise() also builds the normalised value (units parsed, defaults
-- filled, lists and maps rebuilt) so a module validates and normalises in one walk.
-- Modules add their own kinds with schema.kinds{...}; schema.strings(errs) gives the "key: message" lines their
-- validate() functions always returned.
--
-- Error policy: check() and normalise() never raise on bad input (that is what they
-- report); a malformed spec (an unknown kind) raises, as it is a programming error.
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
    else -- %q writes a line break as "\" and the break itself: keep the path on one line
      out[#out + 1] = "[" .. string.format("%q", tostring(k)):gsub("\\\n", "\\n") .. "]"
    end
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

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  local rank = { number = 1, string = 2 }
  table.sort(keys, function(a, b) -- numbers, then strings, then the rest by their text
    local ra, rb = rank[type(a)] or 3, rank[type(b)] or 3
    if ra ~= rb then return ra < rb end
    if ra < 3 then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

-- ---- kinds --------------------------------------------------------------------------

local KINDS = {}
M.KINDS = KINDS

function KINDS.any() end
function KINDS.string(v, rule) -- `nonempty = true`: "" is refused
  if type(v) ~= "string" then return "expected a string, got " .. type_name(v) end
  if v == "" and rule and rule.nonempty then return "must not be empty" end
end
function KINDS.nonempty(v) -- a string that says something
  if type(v) ~= "string" then return "expected a string, got " .. type_name(v) end
  if v == "" then return "must not be empty" end
end
function KINDS.number(v)
  if type(v) ~= "number" then return "expected a number, got " .. type_name(v) end
  if v ~= v then return "must be a number, not NaN" end
end
function KINDS.positive(v) -- a finite number > 0 (a rate, a limit)
  local e = KINDS.number(v)
  if e then return e end
  if v <= 0 or v == math.huge then return "must be a finite number > 0" end
end
function KINDS.integer(v) if math.type(v) ~= "integer" then return "expected an integer, got " .. type_name(v) end end
function KINDS.boolean(v) if type(v) ~= "boolean" then return "expected a boolean, got " .. type_name(v) end end
function KINDS.table(v) if type(v) ~= "table" then return "expected a table, got " .. type_name(v) end end
KINDS["function"] = function(v) if type(v) ~= "function" then return "expected a function, got " .. type_name(v) end end

--- A unit kind: numbers and strings rollout.units parses ("5m", "1%", "2Gi"); `positive`
--- also rejects 0, unless the rule says `zero = true`.
function M.unit_kind(unit, what, positive)
  return function(v, rule)
    if type(v) ~= "number" and type(v) ~= "string" then return "expected " .. what .. ", got " .. type_name(v) end
    local x, err = units.parse(unit, v)
    if not x then return err end
    if positive and x <= 0 and not (rule and rule.zero) then return "must be greater than 0" end
    if x < 0 then return "must not be negative" end
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
-- HTTP headers {name = value}: strings, and no CR or LF anywhere (a line break in a name
-- or value would let a config inject a header or a request).
function KINDS.headers(v)
  if type(v) ~= "table" then return "expected a table of header = value, got " .. type_name(v) end
  for _, k in ipairs(sorted_keys(v)) do
    local x = v[k]
    if type(k) ~= "string" or type(x) ~= "string" then
      return M.at(k, "expected string header names and values, got " .. type_name(k) .. " = " .. type_name(x))
    end
    if k:find("[\r\n]") then return M.at(k, "header name contains a line break (CR or LF)") end
    if x:find("[\r\n]") then return M.at(k, "header value contains a line break (CR or LF)") end
  end
end
function KINDS.list(v) -- a list of anything (item = rule checks the elements)
  if type(v) ~= "table" then return "expected a list, got " .. type_name(v) end
end

-- What normalise() makes of a kind's value when its rule has no parse: a unit's number.
M.PARSE = {
  duration = function(v) return (units.parse("duration", v)) end,
  ratio = function(v) return (units.parse("ratio", v)) end,
  bytes = function(v) return (units.parse("bytes", v)) end,
  number = tonumber,
  integer = function(v) return math.tointeger(tonumber(v)) end,
}

--- kinds(overrides) -> a kinds table: the overrides, else schema.KINDS.
function M.kinds(overrides)
  return setmetatable(overrides or {}, { __index = KINDS })
end

-- ---- the walker ---------------------------------------------------------------------

local walk

-- Append what a kind or check returned (nil, a message, an at(), or a list of them).
local function report(errs, path, r)
  if r == nil or r == false then return end
  if type(r) == "string" then errs[#errs + 1] = { path = path, message = r }; return end
  if r.message then errs[#errs + 1] = { path = r.at ~= nil and extend(path, r.at) or path, message = r.message }; return end
  for _, x in ipairs(r) do report(errs, path, x) end
end

local function shown(x) return type(x) == "string" and ("\"" .. x .. "\"") or tostring(x) end


local function record(t, fields, path, opts, errs, rule)
  local out = {}
  local keys = sorted_keys(fields)
  for _, k in ipairs(keys) do
    local r, v = fields[k], t[k]
    if v == nil then
      local req = r.required
      if type(req) == "function" then req = req(t) end
      if req then
        report(errs, extend(path, k), "required" .. ((r.what or r.kind) and (" " .. (r.what or r.kind)) or ""))
      elseif opts.normalise and r.default ~= nil then
        if type(r.default) == "function" then out[k] = r.default(t) else out[k] = r.default end
      end
    else
      out[k] = walk(v, r, extend(path, k), opts, errs, t)
    end
  end
  local known = (rule and rule.known) or opts.known
  local why = rule and rule.unknown
  for _, k in ipairs(sorted_keys(t)) do
    if fields[k] == nil then
      local msg = type(why) == "function" and why(k, t) or why or "unknown key"
      if known then
        local names = {}
        for _, name in ipairs(keys) do names[#names + 1] = tostring(name) end
        msg = msg .. " (known: " .. table.concat(names, ", ") .. ")"
      end
      local into = opts.unknown_keys or errs -- a list that takes them instead (warnings)
      into[#into + 1] = { path = extend(path, k), message = msg }
    end
  end
  return out
end

local function list(v, item, path, opts, errs)
  local len, out = #v, {}
  for _, k in ipairs(sorted_keys(v)) do
    if math.type(k) ~= "integer" or k < 1 or k > len then
      report(errs, extend(path, k), "expected a list (1..n); this key does not belong")
    end
  end
  for i = 1, len do out[i] = walk(v[i], item, extend(path, i), opts, errs, v) end
  return out
end

local function map(v, rule, path, opts, errs)
  local out = {}
  for _, k in ipairs(sorted_keys(v)) do
    local p = extend(path, k)
    local n = #errs
    if rule.keys then walk(k, rule.keys, p, opts, errs, v) end
    if #errs == n then out[k] = walk(v[k], rule.map, p, opts, errs, v) end
  end
  return out
end

-- One value against one rule -> its normalised value (opts.normalise), nil after an error
-- in a plain value, the partial table after an error inside a record, list or map.
walk = function(v, rule, path, opts, errs, parent)
  local n = #errs
  if rule.prepare then
    local problems
    v, problems = rule.prepare(v, parent)
    report(errs, path, problems)
    n = #errs -- reported; the rewritten value is still checked
  end
  local out = v
  if rule.one_of then
    local chosen
    for _, alt in ipairs(rule.one_of) do
      if alt.when then
        if alt.when(v) then chosen = alt; break end
      elseif not (opts.kinds or KINDS)[alt.kind or "any"](v, alt) then
        chosen = alt; break
      end
    end
    if not chosen then
      report(errs, path, "expected " .. (rule.expected or "something else") .. ", got " .. type_name(v))
      return nil
    end
    out = walk(v, chosen, path, opts, errs, parent)
    if #errs > n then return out end
  else
    local kinds = opts.kinds or KINDS
    local kind = kinds[rule.kind or "any"]
    if not kind then error("schema: unknown kind '" .. tostring(rule.kind) .. "'", 3) end
    if rule.enum then -- the allowed values say more than the kind (1 for "pause" or "rollback")
      local allowed = false
      for _, x in ipairs(rule.enum) do if x == v then allowed = true; break end end
      if not allowed then
        local names = {}
        for _, x in ipairs(rule.enum) do names[#names + 1] = shown(x) end
        local got = type(v) == "table" and "a table" or tostring(v)
        local want = #names == 1 and names[1] or #names == 2 and (names[1] .. " or " .. names[2])
          or ("one of " .. table.concat(names, ", "))
        report(errs, path, "must be " .. want .. ", got " .. got)
        return nil
      end
    else
      report(errs, path, kind(v, rule))
      if #errs > n then return nil end
    end
    local x = v -- a kind may accept a number written as a string ("10"): its bounds still hold
    if type(x) == "string" and (rule.kind == "number" or rule.kind == "integer") then x = tonumber(x) end
    if type(x) == "number" and (rule.min or rule.max) then
      if (rule.min and x < rule.min) or (rule.max and x > rule.max) then
        if rule.min and rule.max then
          report(errs, path, string.format("must be between %s and %s, got %s", rule.min, rule.max, tostring(v)))
        elseif rule.min then
          report(errs, path, string.format("must be at least %s, got %s", rule.min, tostring(v)))
        else
          report(errs, path, string.format("must be at most %s, got %s", rule.max, tostring(v)))
        end
        return nil
      end
    end
    local structured = type(v) == "table" and (rule.fields or rule.item or rule.map)
    if type(v) == "table" then
      if rule.fields then out = record(v, rule.fields, path, opts, errs, rule)
      elseif rule.item then out = list(v, rule.item, path, opts, errs)
      elseif rule.map then out = map(v, rule, path, opts, errs) end
    end
    if #errs > n then return structured and out or nil end
    if opts.normalise and rule.parse == nil and M.PARSE[rule.kind] then out = M.PARSE[rule.kind](v) end
  end
  if rule.check then
    report(errs, path, rule.check(v, parent))
    if #errs > n then return type(out) == "table" and out or nil end
  end
  if opts.normalise and rule.parse then
    local parsed, problem = rule.parse(out, parent)
    if parsed == nil then report(errs, path, problem); return nil end
    out = parsed
  end
  return out
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
  record(t, fields, path, opts, errs, opts)
  return errs
end

--- check_value(v, rule, {path =, kinds =}) -> errs: one value against one rule.
function M.check_value(v, rule, opts)
  opts = opts or {}
  local errs = opts.errs or {}
  walk(v, rule, opts.path or {}, opts, errs, nil)
  return errs
end

--- normalise(v, rule, {path =, kinds =, errs =}) -> value, errs: check v against rule and
--- build what the program uses: each rule's parse(value, parent) result (a kind in
--- schema.PARSE, e.g. "5m" -> 300, when the rule has no parse of its own), absent keys'
--- defaults, lists and maps rebuilt; after an error the value is nil (a record, list or
--- map: what could be read of it, so cross-field checks still see the rest).
function M.normalise(v, rule, opts)
  local o = { normalise = true }
  for k, x in pairs(opts or {}) do o[k] = x end
  local errs = o.errs or {}
  o.errs = errs
  return walk(v, rule, o.path or {}, o, errs, nil), errs
end

--- prefix(errs, path) -> errs with path put in front of each error's path (in place).
function M.prefix(errs, path)
  for _, e in ipairs(errs) do e.path = extend(path, e.path) end
  return errs
end

return M

-- rollout.sources.common: what the metric sources share. Config checking that names the
-- key path, the label-matcher syntax (PromQL's `code=~"5.."`) with a small regex subset
-- for matching in Lua, {{template}} expansion, window formatting, and concurrent fetches.
--
-- Error policy: a malformed configuration raises from new() with every problem listed
-- (validate() returns them without raising); operational failures return nil, err.
local rollout = require("rollout")
local schema = require("rollout.schema")

local M = {}

M.VERSIONS = { "baseline", "canary" }

-- ---- config checking -----------------------------------------------------------------
-- rollout.schema walks the tables with its base kinds (strings here are `nonempty`,
-- durations and sizes > 0, `headers` refuse CR/LF); the kinds below are the sources' own.

local type_name = schema.type_name
M.type_name = type_name

local KINDS = schema.kinds()
-- A metric name, or false to switch that signal off.
function KINDS.metric(v)
  if v == false then return nil end
  if type(v) ~= "string" or not v:match("^[%a_:][%w_:]*$") then
    return "expected a metric name (or false), got " .. (type(v) == "string" and ("\"" .. v .. "\"") or type_name(v))
  end
end
function KINDS.matchers(v) -- 'code=~"5..",method="GET"' or {code = "500"} / {code = {re = "5.."}}
  local _, err = M.parse_matchers(v)
  return err
end
function KINDS.versions(v) -- {baseline = x, canary = y}
  if type(v) ~= "table" then return "expected a table {baseline = ..., canary = ...}, got " .. type_name(v) end
  for k in pairs(v) do
    if k ~= "baseline" and k ~= "canary" then return schema.at(k, "unknown version (baseline, canary)") end
  end
end
M.KINDS = KINDS

--- check(cfg, fields [, errs]) -> errs {{path = {...}, message =}, ...}: cfg against a
--- rollout.schema spec {key = {kind=, required=, what=, check=fn(v, cfg)}} with the
--- sources' kinds (paths relative to the source table). Unknown keys are errors.
function M.check(cfg, fields, errs)
  errs = errs or {}
  if type(cfg) ~= "table" then
    errs[#errs + 1] = { path = {}, message = "source: expected a table, got " .. type_name(cfg) }
    return errs
  end
  return schema.check(cfg, fields, { kinds = KINDS, errs = errs })
end

--- strings(errs) -> the "key: message" lines validate() returns (in check's order).
function M.strings(errs) return schema.strings(errs) end

--- err(key, message) -> one error at {key} (for a module's cross-field rules).
function M.err(key, message) return { path = { key }, message = message } end

--- Raise one error listing every problem (a configuration error), or return nothing.
function M.assert_valid(kind, errs, level)
  if #errs == 0 then return end
  error(kind .. " source: " .. table.concat(errs, "; "), (level or 1) + 1)
end

--- The fields every source accepts.
function M.base_schema(type_name_)
  return {
    type = { kind = "string", nonempty = true, required = true, check = function(v)
      if v ~= type_name_ then return "expected \"" .. type_name_ .. "\"" end
    end },
    name = { kind = "string", nonempty = true },
  }
end

-- ---- label matchers --------------------------------------------------------------------

-- A status class such as "5xx" (HAProxy's code label) also matches the codes in it
-- ("503"), so one setting serves HAProxy and applications alike.
local function class_regex(v)
  local d = v:match("^(%d)[xX][xX]$")
  if d then return d .. "([xX][xX]|[0-9][0-9])" end
end

local function unquote(s, i)
  local q = s:sub(i, i)
  if q ~= '"' and q ~= "'" and q ~= "`" then return nil, "expected a quoted value" end
  local out, j = {}, i + 1
  while j <= #s do
    local c = s:sub(j, j)
    if c == "\\" and q ~= "`" then
      local n = s:sub(j + 1, j + 1)
      out[#out + 1] = (n == "n" and "\n") or n
      j = j + 2
    elseif c == q then
      return table.concat(out), j + 1
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
  return nil, "unterminated value"
end

local OPS = { ["="] = "eq", ["!="] = "ne", ["=~"] = "re", ["!~"] = "nre" }

local function normalise(op, value)
  if op == "eq" and class_regex(value) then return { re = class_regex(value) } end
  if op == "eq" then return value end
  return { [op] = value }
end

--- Parse label matchers into promtext.select's form {label = "v" | {eq|ne|re|nre = "v"}}.
--- Accepts PromQL's text ('code=~"5..", method="GET"', braces optional) or a table in
--- either form. Returns matchers, or nil, err. Regexes are POSIX extended, anchored.
function M.parse_matchers(spec)
  if spec == nil then return {} end
  if type(spec) == "table" then
    local out = {}
    for k, v in pairs(spec) do
      if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then return nil, "bad label name " .. tostring(k) end
      if type(v) == "string" then
        out[k] = normalise("eq", v)
      elseif type(v) == "table" then
        local op, val = next(v)
        if next(v, op) ~= nil or type(val) ~= "string"
          or not (op == "eq" or op == "ne" or op == "re" or op == "nre") then
          return nil, k .. ": expected a string or {eq|ne|re|nre = string}"
        end
        out[k] = normalise(op, val)
      else
        return nil, k .. ": expected a string or {eq|ne|re|nre = string}"
      end
    end
    return out
  end
  if type(spec) ~= "string" then
    return nil, "expected label matchers such as 'code=~\"5..\"', got " .. type_name(spec)
  end
  local s = spec:match("^%s*{?(.-)}?%s*$")
  local out, i = {}, 1
  while true do
    i = s:match("^[%s,]*()", i)
    if i > #s then break end
    local label, op, j = s:match("^([%a_][%w_]*)%s*([=!][=~]?)%s*()", i)
    if not label or not OPS[op] then
      return nil, "bad matcher at \"" .. s:sub(i, i + 20) .. "\" (expected label=\"value\", !=, =~ or !~)"
    end
    local value, k = unquote(s, j)
    if not value then return nil, k .. " for label " .. label end
    if out[label] ~= nil then return nil, "label " .. label .. " matched twice" end
    out[label] = normalise(OPS[op], value)
    i = k
    local rest = s:match("^%s*(.?)", i)
    if rest ~= "," and rest ~= "" then return nil, "expected ',' after the matcher for " .. label end
  end
  return out
end

--- Merge matcher tables (later wins).
function M.merge_matchers(...)
  local out = {}
  for i = 1, select("#", ...) do
    for k, v in pairs(select(i, ...) or {}) do out[k] = v end
  end
  return out
end

-- A regex subset for matching in Lua (the probe classifies status codes without promtext):
-- literals, `.`, `[...]` classes, `\d`, top-level and grouped `|`, `?` `*` `+` `{n}` `{n,m}`
-- on single atoms. Anchored at both ends, as PromQL's =~. Anything else is refused.

-- Split at `|` outside groups and classes.
local function split_alternatives(re)
  local alts, depth, start, i = {}, 0, 1, 1
  while i <= #re do
    local c = re:sub(i, i)
    if c == "\\" then i = i + 1
    elseif c == "[" then i = re:find("]", i + 2, true) or #re
    elseif c == "(" then depth = depth + 1
    elseif c == ")" then depth = depth - 1
    elseif c == "|" and depth == 0 then alts[#alts + 1] = re:sub(start, i - 1); start = i + 1 end
    i = i + 1
  end
  alts[#alts + 1] = re:sub(start)
  return alts
end

-- Rewrite groups away: "5(xx|[0-9][0-9])" -> {"5xx", "5[0-9][0-9]"}.
local function expand_groups(re, out)
  for _, alt in ipairs(split_alternatives(re)) do
    local i, j = alt:find("%b()")
    if not i then
      if alt:find("[()]") then return nil, "unbalanced parentheses" end
      out[#out + 1] = alt
    else
      if alt:sub(j + 1, j + 1):match("[%*%+%?{]") then return nil, "quantifiers after a group are not supported" end
      for _, inner in ipairs(split_alternatives(alt:sub(i + 1, j - 1))) do
        local ok, err = expand_groups(alt:sub(1, i - 1) .. inner .. alt:sub(j + 1), out)
        if not ok then return nil, err end
      end
    end
  end
  return out
end

local compile_simple

local function compile_regex(re)
  local alts, err = expand_groups(re, {})
  if not alts then return nil, err end
  local patterns = {}
  for k, a in ipairs(alts) do
    patterns[k], err = compile_simple(a)
    if not patterns[k] then return nil, err end
  end
  return function(s)
    for _, p in ipairs(patterns) do if s:find(p) then return true end end
    return false
  end
end

-- One group-free alternative -> an anchored Lua pattern.
function compile_simple(re)
  local atoms, i = {}, 1
  while i <= #re do
    local c, atom = re:sub(i, i), nil -- luacheck: ignore atom (every branch sets it)
    if c == "\\" then
      local n = re:sub(i + 1, i + 1)
      atom = (n == "d" and "%d") or (n == "w" and "[%w_]") or (n == "s" and "%s") or ("%" .. n)
      if not n:match("[%pdws]") then return nil, "unsupported escape \\" .. n end
      i = i + 2
    elseif c == "[" then
      local j = re:find("]", i + 2, true)
      if not j then return nil, "unterminated [" end
      atom = "[" .. re:sub(i + 1, j - 1):gsub("%%", "%%%%"):gsub("\\d", "%%d") .. "]"
      i = j + 1
    elseif c == "." then atom = "."; i = i + 1
    elseif c:match("[%^%$]") then return nil, "anchors are implied"
    elseif c:match("[%*%+%?{]") then return nil, "quantifier without an atom"
    else atom = c:match("%w") and c or ("%" .. c); i = i + 1 end
    local q = re:sub(i, i)
    if q == "?" or q == "*" or q == "+" then
      atoms[#atoms + 1] = atom .. (q == "*" and "*" or q == "+" and "+" or "?"); i = i + 1
    elseif q == "{" then
      local a, b, j = re:match("^{(%d+),?(%d*)}()", i)
      if not a then return nil, "bad {n,m}" end
      local comma = re:sub(i, j - 1):find(",", 1, true)
      a = tonumber(a); b = (b ~= "" and tonumber(b)) or (comma and -1) or a
      atoms[#atoms + 1] = atom:rep(a)
      if b == -1 then atoms[#atoms + 1] = atom .. "*"
      else atoms[#atoms + 1] = (atom .. "?"):rep(b - a) end
      i = j
    else
      atoms[#atoms + 1] = atom
    end
  end
  return "^" .. table.concat(atoms) .. "$"
end
M.compile_regex = compile_regex

--- A Lua predicate fn(labels) -> bool for matchers in the parse_matchers form.
function M.matcher_fn(matchers)
  local tests = {}
  for label, m in pairs(matchers) do
    local op, val = "eq", m
    if type(m) == "table" then op, val = next(m) end
    local f
    if op == "eq" then f = function(v) return v == val end
    elseif op == "ne" then f = function(v) return v ~= val end
    else
      local re, err = compile_regex(val)
      if not re then return nil, label .. ": " .. err .. " in regex \"" .. val .. "\"" end
      f = op == "re" and re or function(v) return not re(v) end
    end
    tests[#tests + 1] = { label = label, f = f }
  end
  return function(labels)
    for _, t in ipairs(tests) do
      if not t.f(labels[t.label] or "") then return false end
    end
    return true
  end
end

--- Matchers back to PromQL text, sorted: code=~"5..",method="GET".
function M.format_matchers(matchers)
  local parts = {}
  for label, m in pairs(matchers) do
    local op, val = "eq", m
    if type(m) == "table" then op, val = next(m) end
    local sym = ({ eq = "=", ne = "!=", re = "=~", nre = "!~" })[op]
    parts[#parts + 1] = label .. sym .. "\"" .. val:gsub("\\", "\\\\"):gsub('"', '\\"') .. "\""
  end
  table.sort(parts)
  return table.concat(parts, ",")
end

-- ---- templates and windows -------------------------------------------------------------

--- Expand {{name}} placeholders; unknown names raise (validate() checks them first).
function M.expand(s, vars)
  return (s:gsub("{{%s*([%w_]+)%s*}}", function(k)
    local v = vars[k]
    if v == nil then error("unknown template variable {{" .. k .. "}}", 0) end
    return tostring(v)
  end))
end

--- Unknown {{names}} in s as an error string, or nil.
function M.check_template(s, known)
  for k in s:gmatch("{{%s*([%w_]+)%s*}}") do
    if not known[k] then return "unknown template variable {{" .. k .. "}}" end
  end
end

--- A window in seconds as a PromQL duration, to the millisecond: 300 -> "5m", 45 -> "45s",
--- 300.000001 -> "5m", 1.5 -> "1500ms", 5400 -> "90m", 7200 -> "2h".
function M.format_window(seconds)
  local ms = math.max(1, math.floor(seconds * 1000 + 0.5))
  if ms % 1000 ~= 0 then return ms .. "ms" end
  local s = ms // 1000
  if s % 3600 == 0 then return (s // 3600) .. "h" end
  if s % 60 == 0 then return (s // 60) .. "m" end
  return s .. "s"
end

--- Parse a Prometheus sample value ("1.5", "NaN", "+Inf"). NaN -> nil (no data).
function M.parse_value(s)
  if type(s) == "number" then return s == s and s or nil end
  if type(s) ~= "string" then return nil end
  local l = s:lower()
  if l == "nan" then return nil end
  if l == "+inf" or l == "inf" then return math.huge end
  if l == "-inf" then return -math.huge end
  return tonumber(s)
end

-- ---- concurrency -----------------------------------------------------------------------

--- Run fns[k]() concurrently (one task each) and wait for all; returns {k = {results...}}.
--- A function that raises gives {nil, message}.
function M.parallel(fns)
  local tasks, keys = {}, {}
  for k, fn in pairs(fns) do
    keys[#keys + 1] = k
    tasks[#tasks + 1] = rollout.spawn(function() return pcall(fn) end)
  end
  local out = {}
  for i, t in ipairs(tasks) do
    local r = table.pack(t:wait())
    if r[1] then out[keys[i]] = table.pack(table.unpack(r, 2, r.n))
    else out[keys[i]] = table.pack(nil, tostring(r[2])) end
  end
  return out
end

-- The counts behind a signal travel with it (rollout.proportion decides gates from them).
local EVIDENCE = { error_rate = { "errors" }, health = { "health_ok", "health_total" },
  p50 = { "histogram" }, p95 = { "histogram" }, p99 = { "histogram" } }

--- Keep only the signals a source provides (the engine merges sources: the first non-nil
--- value of a signal wins, so a source must not answer for what it cannot see), with the
--- counts behind them.
function M.only(provides, s)
  local out = { span = s.span }
  for k in pairs(provides) do
    out[k] = s[k]
    for _, e in ipairs(EVIDENCE[k] or {}) do out[e] = s[e] end
  end
  return out
end

--- The set {signal = true, ...} of a list.
function M.set(list)
  local out = {}
  for _, k in ipairs(list) do out[k] = true end
  return out
end

--- The ctx.versions entry of a version, never nil.
function M.version_info(ctx, v)
  return (ctx and ctx.versions and ctx.versions[v]) or {}
end

--- Call ctx.emit(kind, fields) if the engine gave one; an emitter's error is not ours.
function M.emit(ctx, kind, fields)
  if ctx and ctx.emit then pcall(ctx.emit, kind, fields) end
end

return M

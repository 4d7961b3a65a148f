-- rollout.fingerprint: what a resolved playbook is, as a hash a journal can keep.
--
--   fingerprint.of(pb [, env]) -> {hash = "fnv1a64:<16 hex>", keys = {top-level key = hash}}
--   fingerprint.diff(a, b) -> {"stages", "interval", ...}  (top-level keys whose hashes differ)
--   fingerprint.canonical(v) -> string
--
-- The resolved playbook is the validated table (after --config and --set), serialised
-- canonically: tables with their keys sorted, numbers in one spelling, strings quoted,
-- cycles as <cycle>. A Lua function is its line range, a hash of the whole text of the
-- file it was defined in (not the file's name: the playbook or an include()d file), and the
-- values of its scalar upvalues (numbers, strings, booleans), so editing a hook, or a
-- file-level `local LIMIT = 0.2` a trigger's check reads, changes the hash, and the same
-- playbook read again, or through another path, does not. Any edit of such a file (a
-- comment too) counts as a change: --accept-changed-playbook takes it.
--
--   fingerprint.of(pb, {observe = true}) also covers the run's observe-only mode (it is
--   then part of the hash as the pseudo-key `env.observe`; absent, the hash is as before).
-- `file` (where the playbook was read from) and `warnings` are not part of it: the same
-- playbook read through another path is the same playbook.
--
-- The hash is FNV-1a (64 bit): it tells a changed playbook from the same one; it is not a
-- secret's protection (the journal never holds the serialisation itself).
--
-- Error policy: never raises on a table a playbook can hold.
local M = {}

local SKIP = { file = true, warnings = true }

local function fnv1a(s, h)
  h = h or -3750763034362895579 -- 14695981039346656037 as a signed 64-bit integer
  for i = 1, #s do
    h = (h ~ s:byte(i)) * 1099511628211
  end
  return h
end

local function hex(h) return string.format("%016x", h) end

local file_lines = {} -- for one of() call: files are read again by the next one
local function lines_of(path)
  local cached = file_lines[path]
  if cached ~= nil then return cached end
  local f = io.open(path, "r")
  local out = false
  if f then
    out = {}
    for line in f:lines() do out[#out + 1] = line end
    f:close()
  end
  file_lines[path] = out
  return out
end

local function function_id(fn)
  local info = debug.getinfo(fn, "S")
  if info.what == "C" then return "cfunction" end
  local src, first, last = info.source or "?", info.linedefined or 0, info.lastlinedefined or 0
  local text = ""
  if src:sub(1, 1) == "@" then
    local lines = lines_of(src:sub(2))
    if lines then text = table.concat(lines, "\n") end -- the whole file: its file-level locals too
  else
    text = src -- a chunk loaded from a string: its text is the source
  end
  local ups = {}
  for i = 1, 255 do
    local name, v = debug.getupvalue(fn, i)
    if not name then break end
    local t = type(v)
    if t == "number" or t == "string" or t == "boolean" then
      ups[#ups + 1] = name .. "=" .. (t == "string" and string.format("%q", v) or tostring(v))
    end
  end
  return string.format("function(%d-%d:%s:%s)", first, last, hex(fnv1a(text)), hex(fnv1a(table.concat(ups, ","))))
end

local function sort_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

local function canonical(v, out, seen)
  local t = type(v)
  if t == "table" then
    if seen[v] then out[#out + 1] = "<cycle>"; return end
    seen[v] = true
    out[#out + 1] = "{"
    for _, k in ipairs(sort_keys(v)) do
      canonical(k, out, seen)
      out[#out + 1] = "="
      canonical(v[k], out, seen)
      out[#out + 1] = ","
    end
    out[#out + 1] = "}"
    seen[v] = nil
  elseif t == "string" then
    out[#out + 1] = string.format("%q", v)
  elseif t == "number" then
    out[#out + 1] = math.type(v) == "integer" and string.format("%d", v) or string.format("%.17g", v)
  elseif t == "function" then
    out[#out + 1] = function_id(v)
  elseif t == "boolean" or t == "nil" then
    out[#out + 1] = tostring(v)
  else
    out[#out + 1] = "<" .. t .. ">"
  end
end

function M.canonical(v)
  local out = {}
  canonical(v, out, {})
  return table.concat(out)
end

function M.of(pb, env)
  file_lines = {}
  local keys, h = {}, nil
  for _, k in ipairs(sort_keys(pb)) do
    if not SKIP[k] then
      local text = M.canonical(k) .. "=" .. M.canonical(pb[k])
      keys[tostring(k)] = hex(fnv1a(text))
      h = fnv1a(text .. ";", h)
    end
  end
  if env and env.observe then -- the run's mode is part of what it resolves to
    local text = "env.observe=true"
    keys["env.observe"] = hex(fnv1a(text))
    h = fnv1a(text .. ";", h)
  end
  return { hash = "fnv1a64:" .. hex(h or fnv1a("")), keys = keys }
end

function M.diff(a, b)
  local out, seen = {}, {}
  for k, v in pairs(a or {}) do
    seen[k] = true
    if (b or {})[k] ~= v then out[#out + 1] = k end
  end
  for k in pairs(b or {}) do if not seen[k] then out[#out + 1] = k end end
  table.sort(out)
  return out
end

return M

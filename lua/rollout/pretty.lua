-- rollout.pretty: readable, deterministic rendering of Lua values (REPL, test failures).
-- Keys are sorted; cycles print as <cycle>; depth and width are bounded.
-- Error policy: raises only when a value's own __tostring raises (not with raw); any other
-- value renders (functions and userdata as tostring shows them).
local M = {}

local function is_ident(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function scalar(v)
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 1e15 then
    return string.format("%.1f", v)
  end
  return tostring(v)
end

local function render(v, indent, depth, seen, opts, out)
  if type(v) ~= "table" then out[#out + 1] = scalar(v); return end
  local mt = getmetatable(v)
  if mt and mt.__tostring and not opts.raw then out[#out + 1] = tostring(v); return end
  if seen[v] then out[#out + 1] = "<cycle>"; return end
  if depth >= opts.depth then out[#out + 1] = "{...}"; return end
  seen[v] = true
  local n = #v
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  if n == 0 and #keys == 0 then out[#out + 1] = "{}"; seen[v] = nil; return end
  local pad = string.rep("  ", indent + 1)
  out[#out + 1] = "{\n"
  local shown = 0
  local function item(prefix, val)
    shown = shown + 1
    if shown > opts.width then return false end
    out[#out + 1] = pad .. prefix
    render(val, indent + 1, depth + 1, seen, opts, out)
    out[#out + 1] = ",\n"
    return true
  end
  for i = 1, n do if not item("", v[i]) then break end end
  for _, k in ipairs(keys) do
    local prefix = is_ident(k) and (k .. " = ") or ("[" .. scalar(k) .. "] = ")
    if not item(prefix, v[k]) then break end
  end
  if shown > opts.width then out[#out + 1] = pad .. "... (" .. (n + #keys - opts.width) .. " more)\n" end
  out[#out + 1] = string.rep("  ", indent) .. "}"
  seen[v] = nil
end

--- Render v as text. opts: depth (default 8), width (items per table, default 200), raw.
function M.format(v, opts)
  opts = opts or {}
  local o = { depth = opts.depth or 8, width = opts.width or 200, raw = opts.raw }
  local out = {}
  render(v, 0, 0, {}, o, out)
  return table.concat(out)
end

return M

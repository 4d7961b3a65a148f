-- rollout.args: command-line flags for the commands, declared once.
--
-- A command module declares its flags as a list, and gets parsing, `--help`/`-h`/`rollout
-- help CMD`, and "did you mean" for a mistyped flag from that one declaration:
--
--   M.summary = "run a playbook for real"                     -- one line, for `rollout --help`
--   M.usage   = "rollout run PLAYBOOK [OPTIONS]"              -- or a list of usage lines
--   M.description = "Runs a playbook for real: ..."           -- optional paragraph(s)
--   M.options = {
--     { "--config FILE", "map a CanaryDeployment YAML onto the playbook" },   -- takes a value
--     { "--set KEY=VALUE", "override a playbook value; repeatable", list = true },
--     { "--json", "one JSON object per event" },                              -- a flag
--   }
--   M.exit = "0 promoted, 1 rolled back, 2 usage or configuration error, 3 paused"  -- optional
--   function M.main(argv) local opts, pos = args.parse(argv, M.options) ... end
--
-- The first word of an option is its name; a second word (FILE, URL, ...) means it takes a
-- value, `list = true` that it may be repeated (values collect in a list). opts uses the
-- name without dashes, '-' as '_' (--run-dir -> opts.run_dir). `--name=value` and
-- `--name value` both work; `--` ends the options. Where `--set` is a list, `--set-file
-- KEY=PATH` adds `KEY=${file:PATH}` to it (rollout.playbook reads the file: a secret given
-- this way never shows in argv). The older form, a map of
-- name -> "flag" | "value" | "list", is still accepted by parse().
--
-- Error policy: parse() returns nil, message for a user's mistake (unknown flag, with a
-- suggestion; a missing value); a malformed declaration raises.
local M = {}

--- spec_of(decl) -> { key = "flag" | "value" | "list" }: a declaration list or an old map
function M.spec_of(decl)
  if decl[1] == nil then return decl end
  local spec = {}
  for i, o in ipairs(decl) do
    local name, metavar = tostring(o[1]):match("^%-%-([%w][%w%-_]*)%s*(%S*)")
    if not name then error("args: option #" .. i .. ": expected '--name [VALUE]', got " .. tostring(o[1]), 2) end
    spec[(name:gsub("%-", "_"))] = metavar == "" and "flag" or (o.list and "list" or "value")
  end
  return spec
end

--- distance(a, b) -> the optimal string alignment distance (a swap of neighbours costs 1)
function M.distance(a, b)
  local la, lb = #a, #b
  local d = {}
  for i = 0, la do d[i] = { [0] = i } end
  for j = 0, lb do d[0][j] = j end
  for i = 1, la do
    for j = 1, lb do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end

--- suggest(word, candidates) -> the closest candidate, or nil when none is close: within
--- a third of the word's length (at least 1, at most 3) edits, or a unique prefix.
function M.suggest(word, candidates)
  local best, bestd
  local limit = math.min(3, math.max(1, #word // 3))
  for _, c in ipairs(candidates) do
    local d = M.distance(word, c)
    if d <= limit and (not bestd or d < bestd) then best, bestd = c, d end
  end
  if best then return best end
  local pre
  for _, c in ipairs(candidates) do
    if #word >= 2 and c:sub(1, #word) == word then
      if pre then return nil end
      pre = c
    end
  end
  return pre
end

local function unknown(name, spec)
  local names = { "help" }
  for k in pairs(spec) do names[#names + 1] = (k:gsub("_", "-")) end
  table.sort(names)
  local s = M.suggest(name, names)
  return "unknown option '--" .. name .. "'" .. (s and (" (did you mean '--" .. s .. "'?)") or "")
end

--- parse(args, decl) -> opts, positional | nil, err
function M.parse(args, decl)
  local spec = M.spec_of(decl)
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    end
    local name, inline = a:match("^%-%-([%w%-_]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-_]+)$") end
    if name then
      local key = name:gsub("%-", "_")
      local kind = spec[key]
      if key == "set_file" and spec.set == "list" then
        -- --set-file KEY=PATH: --set KEY=${file:PATH} (a secret stays out of argv and `ps`)
        local v = inline
        if not v then i = i + 1; v = args[i] end
        local k, path = (v or ""):match("^([^=]+)=(.+)$")
        if not k then return nil, "option '--set-file' expects KEY=PATH" end
        opts.set = opts.set or {}
        table.insert(opts.set, k .. "=${file:" .. path .. "}")
        goto next_arg
      end
      if not kind then return nil, unknown(name, spec) end
      if kind == "flag" then
        if inline then return nil, "option '--" .. name .. "' takes no value" end
        opts[key] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = args[i]
          if v == nil then return nil, "option '--" .. name .. "' needs a value" end
        end
        if kind == "list" then opts[key] = opts[key] or {}; table.insert(opts[key], v)
        else opts[key] = v end
      end
    elseif a:sub(1, 1) == "-" and #a > 1 then
      return nil, "unknown option '" .. a .. "'"
    else
      pos[#pos + 1] = a
    end
    ::next_arg::
    i = i + 1
  end
  return opts, pos
end

--- wants_help(args) -> true when -h or --help comes before any `--`
function M.wants_help(args)
  for _, a in ipairs(args) do
    if a == "--" then return false end
    if a == "-h" or a == "--help" then return true end
  end
  return false
end

-- Wrap `text` to `width` columns after `first` (default ""); later lines start with `indent`.
local function wrap(text, width, indent, first)
  local out = {}
  local line, fresh = first or "", true
  for word in text:gmatch("%S+") do
    if fresh then line, fresh = line .. word, false
    elseif #line + 1 + #word > width then out[#out + 1] = line; line = indent .. word
    else line = line .. " " .. word end
  end
  out[#out + 1] = line
  return table.concat(out, "\n")
end
M.wrap = wrap

local HELP_OPTION = { "-h, --help", "show this help and exit" }

--- help(name, mod [, width]) -> the usage text of command `name` from its declaration
function M.help(name, mod, width)
  width = math.max(60, math.min(width or 80, 100))
  local out = {}
  local usage = mod.usage or ("rollout " .. name .. " [OPTIONS]")
  if type(usage) == "string" then usage = { usage } end
  for i, u in ipairs(usage) do out[#out + 1] = (i == 1 and "usage: " or "       ") .. u end
  out[#out + 1] = ""
  local text = mod.description or mod.summary
  if text then
    for para in (text .. "\n\n"):gmatch("(.-)\n\n+") do
      if para:find("^  ") then out[#out + 1] = para   -- preformatted (examples)
      else out[#out + 1] = wrap(para, width, "") end
      out[#out + 1] = ""
    end
  end
  local opts = {}
  for _, o in ipairs(mod.options or {}) do opts[#opts + 1] = o end
  opts[#opts + 1] = HELP_OPTION
  local col = 0
  for _, o in ipairs(opts) do col = math.max(col, #o[1]) end
  col = math.min(col, 26)
  out[#out + 1] = "options:"
  for _, o in ipairs(opts) do
    local head = "  " .. o[1]
    local indent = string.rep(" ", col + 4)
    if #head > col + 2 then
      out[#out + 1] = head
      out[#out + 1] = wrap(o[2], width, indent, indent)
    else
      out[#out + 1] = wrap(o[2], width, indent, head .. string.rep(" ", col + 4 - #head))
    end
  end
  if mod.exit then
    out[#out + 1] = ""
    out[#out + 1] = wrap("exit codes: " .. mod.exit, width, "  ")
  end
  return table.concat(out, "\n") .. "\n"
end

function M.usage_error(cmd, msg, usage)
  io.stderr:write("rollout " .. cmd .. ": " .. msg .. "\n")
  if type(usage) == "table" then usage = table.concat(usage, "\n       ") end
  if usage then io.stderr:write("usage: " .. usage .. "\n") end
  io.stderr:write("Try 'rollout " .. cmd .. " --help'.\n")
  return 2
end

return M

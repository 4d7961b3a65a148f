-- rollout.args: command-line flags for the commands. A spec maps a flag name to "flag"
-- (boolean), "value" (one value) or "list" (repeatable). `--name=value` and `--name value`
-- both work. An unknown flag or a missing value is a usage error (exit 2), named.
local M = {}

--- parse(args, spec) -> opts, positional | nil, err
function M.parse(args, spec)
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
      if not kind then return nil, "unknown option '--" .. name .. "'" end
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
    i = i + 1
  end
  return opts, pos
end

function M.usage_error(cmd, msg, usage)
  io.stderr:write("rollout " .. cmd .. ": " .. msg .. "\n")
  if usage then io.stderr:write("usage: " .. usage .. "\n") end
  return 2
end

return M

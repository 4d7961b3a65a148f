-- rollout.routers.exec: weights through commands you name, for proxies without a router.
--
--   require("rollout.routers.exec").new{
--     set = {"kubectl", "annotate", "ingress/app", "--overwrite",
--            "nginx.ingress.kubernetes.io/canary-weight={canary}"},
--     get = {"/usr/local/bin/app-weights", "--json"}}
--
-- Each command is an argv list run directly (never through a shell), with the placeholders
-- {baseline} and {canary} (percent) replaced inside any argument, and {name} {value} in the
-- optional `override` command. The `get` command prints what the proxy serves now, as JSON
-- {"baseline": 75, "canary": 25} or as two numbers "75 25"; a set is confirmed when that
-- equals the request. Exit status 0 means success; otherwise stderr is the error.
-- `check` (optional) is run by r:check() and must not move traffic; without it check() runs
-- `get`. `override_get` (optional) prints the active override as JSON {"name":..,"value":..}
-- or nothing.
--
-- Error policy: bad config raises from new(); a command that cannot start, fails or times
-- out returns nil, err naming the command.
local json = require("rollout.json")
local proc = require("rollout.proc")
local common = require("rollout.routers.common")
local schema = require("rollout.schema")

local M = {}

local PLACEHOLDERS = { baseline = true, canary = true, name = true, value = true }

local function placeholder_check(allowed)
  return function(argv)
    for i, a in ipairs(argv) do
      for p in a:gmatch("{(%w+)}") do
        if not PLACEHOLDERS[p] then return schema.at(i, "unknown placeholder {" .. p .. "}") end
        if not allowed[p] then return schema.at(i, "placeholder {" .. p .. "} is not available here") end
      end
    end
  end
end

local SCHEMA = {
  type = common.type_rule("exec"),
  name = { kind = "string", nonempty = true },
  set = { kind = "argv", required = true, what = "argv list",
    check = placeholder_check({ baseline = true, canary = true }) },
  get = { kind = "argv", required = true, what = "argv list", check = placeholder_check({}) },
  check = { kind = "argv", check = placeholder_check({}) },
  override = { kind = "argv", check = placeholder_check({ name = true, value = true }) },
  override_get = { kind = "argv", check = placeholder_check({}) },
  timeout = { kind = "duration", zero = true },
  env = { kind = "table" },
}

--- Problems with cfg as rollout.schema errors {path =, message =}; empty when fine.
function M.check(cfg)
  local errs = common.check(cfg, SCHEMA)
  if type(cfg) == "table" and type(cfg.env) == "table" then
    for k, v in pairs(cfg.env) do
      if type(k) ~= "string" or type(v) ~= "string" then
        errs[#errs + 1] = { path = { "env", k }, message = "expected a string" }
      end
    end
  end
  return errs
end

--- Problems with cfg as "key: message" strings; empty when fine. No side effects.
function M.validate(cfg) return common.strings(M.check(cfg)) end

local R = setmetatable({}, { __index = common.Router })
R.__index = R

function M.new(cfg, opts)
  common.assert_valid("exec", M.validate(cfg), 2)
  local self = common.init(setmetatable({}, R), "exec", cfg, opts)
  self.timeout = common.duration(cfg.timeout, 30)
  self.target = cfg.set[1]
  return self
end

--- argv with {placeholders} replaced; a value is inserted as one argument's text, never
--- re-split or interpreted.
function M.expand(argv, values)
  local out = {}
  for i, a in ipairs(argv) do
    out[i] = a:gsub("{(%w+)}", function(k)
      local v = values[k]
      if v == nil then return nil end
      return common.num(v)
    end)
  end
  return out
end

local function one_line(s) return ((s or ""):gsub("%s+$", ""):gsub("\n", " | ")) end

function R:_exec(argv)
  local shown = table.concat(argv, " ")
  local timeout, terr = self:io_timeout() -- within a rollback's max_rollback_time
  if not timeout then return nil, shown .. ": not run: " .. terr end
  local r, err = proc.run{ argv = argv, timeout = timeout, env = self.cfg.env }
  if not r then return nil, shown .. ": " .. tostring(err) end
  if r.code ~= 0 then
    local why = one_line(r.stderr ~= "" and r.stderr or r.stdout)
    return nil, shown .. " exited " .. tostring(r.code) .. (why ~= "" and (": " .. why) or "")
  end
  return r.stdout
end

--- Parse `get` output: JSON {"baseline":..,"canary":..} or "B C". weights | nil, err.
function M.parse_weights(out)
  local text = out:gsub("^%s+", ""):gsub("%s+$", "")
  local b, c
  if text:sub(1, 1) == "{" then
    local t, err = json.decode(text)
    if type(t) ~= "table" then return nil, "not JSON: " .. tostring(err) end
    b, c = t.baseline, t.canary
  else
    local sb, sc = text:match("^([%d.]+)%s+([%d.]+)$")
    b, c = tonumber(sb), tonumber(sc)
  end
  if type(b) ~= "number" or type(c) ~= "number" then
    return nil, "expected {\"baseline\":N,\"canary\":N} or \"B C\", got '" .. text:sub(1, 80) .. "'"
  end
  if b + c == 0 then return { baseline = 0, canary = 0 } end
  if math.abs(b + c - 100) > 1e-6 then return common.shares(b, c) end
  return { baseline = math.tointeger(b) or b, canary = math.tointeger(c) or c }
end

function R:_read()
  local out, err = self:_exec(self.cfg.get)
  if not out then return nil, err end
  local w, perr = M.parse_weights(out)
  if not w then return nil, table.concat(self.cfg.get, " ") .. ": " .. perr end
  return w
end

function R:_apply(w)
  local out, err = self:_exec(M.expand(self.cfg.set, w))
  if not out then return nil, err end
  return true
end

function R:_apply_override(h)
  if not self.cfg.override then return nil, "exec router: no `override` command configured" end
  local out, err = self:_exec(M.expand(self.cfg.override, h or { name = "", value = "" }))
  if not out then return nil, err end
  self.applied_override = h
  return true
end

function R:_read_override()
  -- Without override_get there is nothing to read back: trust the exit status.
  if not self.cfg.override_get then return self.applied_override or false end
  local out, err = self:_exec(self.cfg.override_get)
  if not out then return nil, err end
  if out:match("^%s*$") then return false end
  local h, jerr = json.decode(out)
  if type(h) ~= "table" or type(h.name) ~= "string" then
    return nil, table.concat(self.cfg.override_get, " ") .. ": expected {\"name\":..,\"value\":..}: "
      .. tostring(jerr or out)
  end
  if h.value == "" or h.value == json.null then return false end
  return { name = h.name, value = tostring(h.value) }
end

function R:_checks()
  local item = common.item
  local items = {}
  local function resolvable(cmd)
    local exe = cmd[1]
    if exe:find("/") then
      local f = io.open(exe, "r")
      if f then f:close(); return true end
      return nil, exe .. ": no such file"
    end
    for dir in (os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
      local f = io.open(dir .. "/" .. exe, "r")
      if f then f:close(); return true end
    end
    return nil, exe .. ": not found on PATH"
  end
  for _, key in ipairs({ "set", "get", "override", "override_get", "check" }) do
    local cmd = self.cfg[key]
    if cmd then
      local ok, err = resolvable(cmd)
      items[#items + 1] = item(key .. " command", ok, ok and cmd[1] or err)
    end
  end
  if self.cfg.check then
    local out, err = self:_exec(self.cfg.check)
    items[#items + 1] = item("check", out ~= nil, out and (one_line(out) ~= "" and one_line(out) or "exit 0") or err)
  end
  local w, err = self:_read()
  items[#items + 1] = item("weights", w ~= nil, w and ("serving " .. common.fmt_weights(w)) or err)
  return items
end

return M

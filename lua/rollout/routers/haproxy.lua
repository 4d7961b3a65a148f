-- rollout.routers.haproxy: weights through HAProxy's runtime API (the stats socket).
--
--   local r = require("rollout.routers.haproxy").new{socket = "/run/haproxy/admin.sock",
--     backend = "be", baseline = "baseline", canary = "canary"}
--   r:set_weights{baseline = 75, canary = 25}
--
-- Percent maps to absolute weights so the share is exact: baseline = 100 - p, canary = p
-- (`set weight be/srv N`; HAProxy accepts 0..256). Read back with `get weight be/srv`.
-- A shift sets the growing server first, so the backend never has both at weight 0.
-- Runtime weights are lost when HAProxy reloads or restarts; verify() notices (the read-back
-- differs from the last confirmed weights) and re-applies them.
--
-- Header override: the HAProxy config carries the rule, the router carries the value.
--   backend be
--     use-server canary if { req.hdr(canary) -f /etc/haproxy/canary.acl }
-- with `override_acl = "/etc/haproxy/canary.acl"` (and `override_header = "canary"`, the
-- header the rule reads). header_override{name = "canary", value = "true"} puts the value
-- into that ACL with `add acl` / `del acl`; `use-server` picks the canary at any weight,
-- also 0.
--
-- Error policy: bad config raises from new() (validate() lists the problems); socket and
-- HAProxy failures return nil, err naming the socket path and the command.
local rollout = require("rollout")
local net = require("rollout.net")
local common = require("rollout.routers.common")

local M = {}

local function name_check(v)
  if v:find("[%s/;]") then return "must not contain spaces, '/' or ';'" end
end

local SCHEMA = {
  type = common.type_rule("haproxy"),
  name = { kind = "string", nonempty = true },
  socket = { kind = "string", nonempty = true, required = true, what = "string (path of the admin stats socket, or tcp:host:port)" },
  backend = { kind = "string", nonempty = true, required = true, check = name_check },
  baseline = { kind = "string", nonempty = true, required = true, what = "string (server name)", check = name_check },
  canary = { kind = "string", nonempty = true, required = true, what = "string (server name)", check = name_check },
  timeout = { kind = "duration", zero = true },
  override_acl = { kind = "string", nonempty = true },
  override_header = { kind = "string", nonempty = true },
}

--- Problems with cfg as rollout.schema errors {path =, message =}; empty when fine.
function M.check(cfg)
  local errs = common.check(cfg, SCHEMA)
  if type(cfg) == "table" and type(cfg.baseline) == "string" and cfg.baseline == cfg.canary then
    errs[#errs + 1] = { path = { "canary" }, message = "must differ from baseline" }
  end
  if type(cfg) == "table" and cfg.override_header ~= nil and cfg.override_acl == nil then
    errs[#errs + 1] = { path = { "override_acl" }, message = "required with override_header" }
  end
  return errs
end

--- Problems with cfg as "key: message" strings; empty when fine. No side effects.
function M.validate(cfg) return common.strings(M.check(cfg)) end

local R = setmetatable({}, { __index = common.Router })
R.__index = R

function M.new(cfg, opts)
  common.assert_valid("haproxy", M.validate(cfg), 2)
  local self = common.init(setmetatable({}, R), "haproxy", cfg, opts)
  self.socket, self.backend = cfg.socket, cfg.backend
  self.servers = { baseline = cfg.baseline, canary = cfg.canary }
  self.target = cfg.socket .. " " .. cfg.backend
  return self
end

-- ---- the runtime API -----------------------------------------------------------------

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

--- Send one line (commands joined by ';') and return HAProxy's whole reply.
--- Every exchange is bounded by io_timeout(): within a call's deadline (a rollback's
--- max_rollback_time) a hung HAProxy costs what is left of it, no more.
function R:_cli(line)
  local conn, err
  local timeout, terr = self:io_timeout()
  if not timeout then return nil, "HAProxy socket " .. self.socket .. ": not sent '" .. line .. "': " .. terr end
  local t0 = rollout.now()
  local host, port = self.socket:match("^tcp:(.+):(%d+)$")
  if host then
    conn, err = net.connect_tcp(host, tonumber(port), timeout)
  else
    conn, err = net.connect_unix(self.socket, timeout)
  end
  if not conn then return nil, "HAProxy runtime API unreachable: " .. tostring(err) end
  local left = math.max(0.001, timeout - (rollout.now() - t0))
  local ok, serr = conn:send(line .. "\n", left)
  if not ok then conn:close(); return nil, "HAProxy socket " .. self.socket .. ": send: " .. tostring(serr) end
  local reply, rerr = conn:receive("a", math.max(0.001, timeout - (rollout.now() - t0)))
  conn:close()
  if not reply then
    return nil, "HAProxy socket " .. self.socket .. ": no reply to '" .. line .. "': " .. tostring(rerr)
  end
  return reply
end

function R:_srv(role) return self.backend .. "/" .. self.servers[role] end

--- Absolute weights of both servers: {baseline=, canary=}, {initial weights} | nil, err.
function R:_abs_weights()
  local line = "get weight " .. self:_srv("baseline") .. "; get weight " .. self:_srv("canary")
  local reply, err = self:_cli(line)
  if not reply then return nil, err end
  local got, initial, i = {}, {}, 0
  for l in reply:gmatch("[^\n]+") do
    i = i + 1
    local role = i == 1 and "baseline" or "canary"
    local w, iw = l:match("^(%d+) %(initial (%d+)%)")
    if not w then return nil, "HAProxy: get weight " .. self:_srv(role) .. ": " .. trim(l) end
    got[role], initial[role] = tonumber(w), tonumber(iw)
  end
  if i ~= 2 then return nil, "HAProxy: unexpected reply to '" .. line .. "': " .. trim(reply) end
  return got, initial
end

function R:_read()
  local abs, initial = self:_abs_weights()
  if not abs then return nil, initial end
  return common.shares(abs.baseline, abs.canary), { absolute = abs, initial = initial }
end

function R:_apply(w)
  local b, c = math.floor(w.baseline + 0.5), math.floor(w.canary + 0.5)
  if b + c ~= 100 then return nil, "HAProxy weights must be whole percents, got " .. common.fmt_weights(w) end
  local sets = {
    baseline = "set weight " .. self:_srv("baseline") .. " " .. b,
    canary = "set weight " .. self:_srv("canary") .. " " .. c,
  }
  -- Raise before lowering: in between, the backend serves with a total weight above 0.
  -- A write goes only right after a read HAProxy answered: to a hung HAProxy (stopped,
  -- overloaded) nothing is sent, so no `set weight` waits in its socket to be applied
  -- after we gave up and journaled what we last read back.
  local cur, rerr = self:_abs_weights()
  if not cur then return nil, rerr end
  local first = (not cur or c > cur.canary) and "canary" or "baseline"
  local second = first == "canary" and "baseline" or "canary"
  local line = sets[first] .. "; " .. sets[second]
  local reply, err = self:_cli(line)
  if not reply then return nil, err end
  if trim(reply) ~= "" then return nil, "HAProxy refused '" .. line .. "': " .. trim(reply):gsub("\n+", " ") end
  return true
end

-- ---- header override via an ACL file -------------------------------------------------

-- Values in the ACL, as {value = "0xADDR"} ids. nil, err when HAProxy does not know it.
function R:_acl_entries()
  local acl = self.cfg.override_acl
  local reply, err = self:_cli("show acl " .. acl)
  if not reply then return nil, err end
  local entries = {}
  for l in reply:gmatch("[^\n]+") do
    local id, value = l:match("^(0x%x+) (.+)$")
    if id then entries[#entries + 1] = { id = id, value = value }
    elseif trim(l) ~= "" then return nil, "HAProxy: show acl " .. acl .. ": " .. trim(l) end
  end
  return entries
end

function R:_header_name() return self.cfg.override_header or "canary" end

function R:_apply_override(h)
  local acl = self.cfg.override_acl
  if not acl then
    return nil, "HAProxy header override needs override_acl (the ACL file of the config's use-server rule)"
  end
  if h and h.name:lower() ~= self:_header_name():lower() then
    return nil, "the HAProxy config matches header '" .. self:_header_name() .. "' (override_header), not '"
      .. h.name .. "'"
  end
  local entries, err = self:_acl_entries()
  if not entries then return nil, err end
  local cmds, have = {}, false
  for _, e in ipairs(entries) do
    if h and e.value == h.value then have = true else cmds[#cmds + 1] = "del acl " .. acl .. " #" .. e.id end
  end
  if h and not have then table.insert(cmds, 1, "add acl " .. acl .. " " .. h.value) end
  if #cmds == 0 then return true end
  local line = table.concat(cmds, "; ")
  local reply, cerr = self:_cli(line)
  if not reply then return nil, cerr end
  if trim(reply) ~= "" then return nil, "HAProxy refused '" .. line .. "': " .. trim(reply):gsub("\n+", " ") end
  return true
end

function R:_read_override()
  if not self.cfg.override_acl then return false end
  local entries, err = self:_acl_entries()
  if not entries then return nil, err end
  if #entries == 0 then return false end
  if #entries > 1 then
    local vals = {}
    for _, e in ipairs(entries) do vals[#vals + 1] = e.value end
    return { name = self:_header_name(), value = table.concat(vals, ",") }
  end
  return { name = self:_header_name(), value = entries[1].value }
end

-- ---- status and checks ---------------------------------------------------------------

local OP_STATES = { [0] = "down", [1] = "starting", [2] = "up", [3] = "stopping" }

local function admin_state(bits)
  if bits & (0x01 | 0x02 | 0x04 | 0x20 | 0x40) ~= 0 then return "maint" end
  if bits & (0x08 | 0x10) ~= 0 then return "drain" end
  return "ready"
end

--- `show servers state BACKEND` as {name = {addr=, port=, weight=, initial=, state=, admin=}}.
function R:_servers()
  local reply, err = self:_cli("show servers state " .. self.backend)
  if not reply then return nil, err end
  local header, servers = nil, {}
  for l in reply:gmatch("[^\n]+") do
    if l:sub(1, 2) == "# " then
      header = {}
      for f in l:sub(3):gmatch("%S+") do header[#header + 1] = f end
    elseif header then
      local row, i = {}, 0
      for f in l:gmatch("%S+") do i = i + 1; row[header[i] or i] = f end
      if row.srv_name then
        servers[row.srv_name] = { addr = row.srv_addr, port = tonumber(row.srv_port),
          weight = tonumber(row.srv_uweight), initial = tonumber(row.srv_iweight),
          state = OP_STATES[tonumber(row.srv_op_state)] or row.srv_op_state,
          admin = admin_state(tonumber(row.srv_admin_state) or 0) }
      end
    elseif trim(l) ~= "" and not l:match("^%d+$") then
      return nil, "HAProxy: show servers state " .. self.backend .. ": " .. trim(l)
    end
  end
  if not header then return nil, "HAProxy: no such backend '" .. self.backend .. "'" end
  return servers
end

function R:_checks()
  local item = common.item
  local items = {}
  local level, err = self:_cli("show cli level")
  if not level then
    items[1] = item("socket", false, err)
    return items
  end
  level = trim(level)
  items[#items + 1] = item("socket", level == "admin",
    self.socket .. " answers, level " .. level .. (level == "admin" and "" or " (set weight needs level admin)"))
  local servers, serr = self:_servers()
  items[#items + 1] = item("backend " .. self.backend, servers ~= nil, servers and "exists" or serr)
  if not servers then return items end
  for _, role in ipairs({ "baseline", "canary" }) do
    local s = servers[self.servers[role]]
    local detail
    if s then
      detail = string.format("%s %s:%s weight %d, %s, %s", role, s.addr, tostring(s.port), s.weight, s.state, s.admin)
    else
      local names = {}
      for n in pairs(servers) do names[#names + 1] = n end
      table.sort(names)
      detail = "no server '" .. self.servers[role] .. "' in backend " .. self.backend
        .. " (has: " .. table.concat(names, ", ") .. ")"
    end
    items[#items + 1] = item("server " .. self:_srv(role), s ~= nil and s.admin ~= "maint", detail)
  end
  if self.cfg.override_acl then
    local entries, aerr = self:_acl_entries()
    items[#items + 1] = item("override acl " .. self.cfg.override_acl, entries ~= nil,
      entries and (#entries == 0 and "loaded, empty" or "loaded, " .. #entries .. " value(s)") or aerr)
  end
  local w, werr = self:_read()
  items[#items + 1] = item("weights", w ~= nil, w and ("serving " .. common.fmt_weights(w)) or werr)
  return items
end

function R:_describe(out)
  out.backend = self.backend
  out.servers = self:_servers()
  out.live_header_override = self:_read_override()
end

return M

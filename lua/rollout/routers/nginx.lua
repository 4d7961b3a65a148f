-- rollout.routers.nginx: weights through an NGINX upstream the router writes and reloads.
--
--   local r = require("rollout.routers.nginx").new{upstream = "app",
--     baseline = "10.0.0.1:8080", canary = "10.0.0.2:8080",
--     include = "/etc/nginx/rollout/app.conf", status = "127.0.0.1:8089"}
--
-- The router owns one file, included at `http` level by the operator's nginx.conf. It holds
--   upstream app        { server BASELINE weight=100-p; server CANARY weight=p; }
--   upstream app_canary { server CANARY; }                        (the header override's target)
--   map $http_canary $rollout_app { default app; "true" app_canary; }
--   server { listen STATUS; location = /rollout/app { return 200 '{"generation":N,...}'; } }
-- and the operator's server uses `proxy_pass http://$rollout_app;`. weight=0 is invalid in
-- NGINX, so 0 % is written as `down`.
--
-- A shift: write the file atomically (temp + rename) with generation N+1, `nginx -t`, reload
-- (`nginx -s reload`, or SIGHUP to the master in pid_file), then GET the status location on
-- fresh connections until two in a row answer generation N+1: only new workers know it, so
-- the new weights are what NGINX serves. `nginx -t` refusing the file puts the previous
-- file back (the running config never saw it) and reports NGINX's message.
--
-- Error policy: bad config raises from new(); NGINX and I/O failures return nil, err.
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local proc = require("rollout.proc")
local common = require("rollout.routers.common")
local schema = require("rollout.schema")

local M = {}

local function addresses(v)
  if type(v) == "string" then return { v } end
  return v
end

local function address_list_check(v)
  local list = addresses(v)
  if type(list) ~= "table" or #list == 0 then return "expected \"host:port\" or a list of them" end
  for i, a in ipairs(list) do
    if type(a) ~= "string" or a:find("[%s;{}'\"]") or a == "" then
      return schema.at(i, "expected an address (\"host:port\" or \"unix:/path\"), got " .. tostring(a))
    end
  end
end

local function ident_check(v)
  if not v:match("^[%w_.-]+$") then return "must be letters, digits, '_', '.' or '-'" end
end

local SCHEMA = {
  type = common.type_rule("nginx"),
  name = { kind = "string", nonempty = true },
  upstream = { kind = "string", nonempty = true, required = true, what = "string (the upstream name)", check = ident_check },
  -- a string or a list of addresses: validate() checks them by hand
  baseline = { kind = "table", required = true, what = "address (\"host:port\" or a list)" },
  canary = { kind = "table", required = true, what = "address (\"host:port\" or a list)" },
  include = { kind = "string", nonempty = true, required = true, what = "string (path of the file the router writes)" },
  status = { kind = "hostport", required = true, what = "\"host:port\" (where the router's status location listens)" },
  nginx = { kind = "argv" },
  prefix = { kind = "string", nonempty = true },
  conf = { kind = "string", nonempty = true },
  pid_file = { kind = "string", nonempty = true },
  header = { kind = "string", nonempty = true, check = function(v)
    if not v:match("^[%w-]+$") then return "must be a header name (letters, digits, '-')" end end },
  variable = { kind = "string", nonempty = true, check = function(v)
    if not v:match("^[%a_][%w_]*$") then return "must be a variable name (letters, digits, '_')" end end },
  server_options = { kind = "string", nonempty = true, check = function(v)
    if v:find("[;{}]") then return "must not contain ';' or braces" end end },
  upstream_directives = { kind = "table" },
  reload_timeout = { kind = "duration", zero = true },
  timeout = { kind = "duration", zero = true },
}

--- Problems with cfg as rollout.schema errors {path =, message =}; empty when fine.
function M.check(cfg)
  if type(cfg) ~= "table" then return common.check(cfg, SCHEMA) end
  local shallow = {}
  for k, v in pairs(cfg) do shallow[k] = v end
  local errs = {}
  for _, role in ipairs({ "baseline", "canary" }) do
    if cfg[role] ~= nil then
      local e = address_list_check(cfg[role])
      if type(e) == "table" then errs[#errs + 1] = { path = { role, e.at }, message = e.message }
      elseif e then errs[#errs + 1] = { path = { role }, message = e } end
      shallow[role] = {}
    end
  end
  common.check(shallow, SCHEMA, nil, errs)
  if type(cfg.upstream_directives) == "table" then
    for i, d in ipairs(cfg.upstream_directives) do
      if type(d) ~= "string" or d:find("[{}]") then
        errs[#errs + 1] = { path = { "upstream_directives", i }, message = "expected a directive string without braces" }
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
  common.assert_valid("nginx", M.validate(cfg), 2)
  local self = common.init(setmetatable({}, R), "nginx", cfg, opts)
  self.upstream = cfg.upstream
  self.include = cfg.include
  self.status_url = "http://" .. cfg.status .. "/rollout/" .. cfg.upstream
  self.reload_timeout = common.duration(cfg.reload_timeout, 5)
  self.target = "upstream " .. cfg.upstream .. " (" .. cfg.include .. ")"
  self.generation = nil -- the generation in our file; learnt on first use
  self.reloads = 0
  return self
end

-- ---- the include file ----------------------------------------------------------------

local function weight_lines(list, share, other_count, opts)
  local out = {}
  for _, a in ipairs(list) do
    -- Each server of a version gets share * (servers of the other version), so the
    -- versions' totals stand in the ratio share : (100 - share) whatever the counts.
    local w = math.floor(share * other_count + 0.5)
    local o = opts ~= "" and (" " .. opts) or ""
    out[#out + 1] = w > 0 and string.format("    server %s weight=%d%s;", a, w, o)
      or string.format("    server %s down;", a)
  end
  return out
end

local function quote_json(s) return json.encode(s) end

--- The text of the include file for weights w (percent), generation gen and header
--- override h (or false).
function M.render(cfg, w, gen, h)
  local up = cfg.upstream
  local base, can = addresses(cfg.baseline), addresses(cfg.canary)
  local var = cfg.variable or ("rollout_" .. up:gsub("[^%w_]", "_"))
  local header = h and h.name or cfg.header or "canary"
  local opts = cfg.server_options or ""
  local lines = {
    "# Written by rollout (routers.nginx). Do not edit: every weight change replaces this file.",
    "# rollout-generation: " .. gen,
    "upstream " .. up .. " {",
  }
  for _, l in ipairs(weight_lines(base, w.baseline, #can, opts)) do lines[#lines + 1] = l end
  for _, l in ipairs(weight_lines(can, w.canary, #base, opts)) do lines[#lines + 1] = l end
  for _, d in ipairs(cfg.upstream_directives or {}) do lines[#lines + 1] = "    " .. d:gsub(";%s*$", "") .. ";" end
  lines[#lines + 1] = "}"
  lines[#lines + 1] = "upstream " .. up .. "_canary {"
  for _, a in ipairs(can) do lines[#lines + 1] = "    server " .. a .. (opts ~= "" and " " .. opts or "") .. ";" end
  for _, d in ipairs(cfg.upstream_directives or {}) do lines[#lines + 1] = "    " .. d:gsub(";%s*$", "") .. ";" end
  lines[#lines + 1] = "}"
  lines[#lines + 1] = "map $http_" .. header:lower():gsub("-", "_") .. " $" .. var .. " {"
  lines[#lines + 1] = "    default " .. up .. ";"
  if h then lines[#lines + 1] = "    \"" .. h.value .. "\" " .. up .. "_canary;" end
  lines[#lines + 1] = "}"
  local status = string.format(
    '{"router":"rollout","upstream":%s,"generation":%d,"baseline":%s,"canary":%s,"header":%s}',
    quote_json(up), gen, common.num(w.baseline), common.num(w.canary),
    h and string.format('{"name":%s,"value":%s}', quote_json(h.name), quote_json(h.value)) or "null")
  local listen = cfg.status
  local shost, sport = common.split_hostport(listen)
  if shost == "*" or shost == "0.0.0.0" then listen = tostring(sport) end
  for _, l in ipairs({
    "server {",
    "    listen " .. listen .. ";",
    "    access_log off;",
    "    location = /rollout/" .. up .. " {",
    "        default_type application/json;",
    "        add_header Cache-Control no-store always;",
    "        return 200 '" .. status .. "\\n';",
    "    }",
    "}",
  }) do lines[#lines + 1] = l end
  return table.concat(lines, "\n") .. "\n"
end

local function file_generation(text)
  return text and tonumber(text:match("# rollout%-generation: (%d+)"))
end

--- Write the include without reloading: the first file, before NGINX starts.
function R:write_config(w, h)
  local want, err = common.normalize_weights(w)
  if not want then error("write_config: " .. err, 2) end
  h = common.check_override(h, 2)
  local gen = (file_generation(fs.read(self.include)) or 0) + 1
  local ok, werr = fs.write_atomic(self.include, M.render(self.cfg, want, gen, h), 420)
  if not ok then return nil, werr end
  self.generation = gen
  return true
end

-- ---- running nginx -------------------------------------------------------------------

function R:_nginx_argv(...)
  local argv = {}
  for _, a in ipairs(self.cfg.nginx or { "nginx" }) do argv[#argv + 1] = a end
  if self.cfg.prefix then argv[#argv + 1] = "-p"; argv[#argv + 1] = self.cfg.prefix end
  if self.cfg.conf then argv[#argv + 1] = "-c"; argv[#argv + 1] = self.cfg.conf end
  for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
  return argv
end

local function one_line(s)
  return ((s or ""):gsub("%s+$", ""):gsub("\n", " | "))
end

function R:_run(...)
  local argv = self:_nginx_argv(...)
  local timeout, terr = self:io_timeout() -- within a rollback's max_rollback_time
  if not timeout then return nil, table.concat(argv, " ") .. ": not run: " .. terr end
  if timeout == self.timeout then timeout = math.max(self.timeout, 10) end -- no deadline: reloads take time
  local r, err = proc.run{ argv = argv, timeout = timeout }
  if not r then return nil, table.concat(argv, " ") .. ": " .. tostring(err) end
  if r.code ~= 0 then
    return nil, table.concat(argv, " ") .. " exited " .. tostring(r.code) .. ": "
      .. one_line(r.stderr ~= "" and r.stderr or r.stdout)
  end
  return r
end

function R:_reload()
  local pid_file = self.cfg.pid_file
  if not pid_file then
    local ok, err = self:_run("-s", "reload")
    if not ok then return nil, err end
    return true
  end
  local text, err = fs.read(pid_file)
  if not text then return nil, "NGINX pid file: " .. err end
  local pid = tonumber(text:match("%d+"))
  if not pid then return nil, "NGINX pid file " .. pid_file .. " holds no pid" end
  local ok, kerr = fs.kill(pid, 1) -- SIGHUP: the master re-reads its config
  if not ok then return nil, "SIGHUP to the NGINX master: " .. kerr end
  return true
end

-- ---- the status location -------------------------------------------------------------

function R:_status()
  local timeout, terr = self:io_timeout() -- within a rollback's max_rollback_time
  if not timeout then return nil, "NGINX status " .. self.status_url .. ": " .. terr end
  local res, err = http.request{ url = self.status_url, headers = { Connection = "close" }, timeout = timeout }
  if not res then return nil, "NGINX status " .. self.status_url .. ": " .. tostring(err) end
  if res.status ~= 200 then
    return nil, "NGINX status " .. self.status_url .. ": HTTP " .. res.status .. " (is the include loaded?)"
  end
  local st, jerr = json.decode(res.body)
  if type(st) ~= "table" or st.router ~= "rollout" then
    return nil, "NGINX status " .. self.status_url .. ": not a rollout status: "
      .. tostring(jerr or res.body:sub(1, 80))
  end
  if st.header == json.null then st.header = false end
  return st
end

function R:_read()
  local st, err = self:_status()
  if not st then return nil, err end
  return { baseline = st.baseline, canary = st.canary }, { generation = st.generation, header = st.header }
end

function R:_read_override()
  local st, err = self:_status()
  if not st then return nil, err end
  return st.header
end

-- Until two fresh connections in a row answer generation `gen`.
function R:_await(gen)
  local t0, seen, last = rollout.now(), 0, "no answer"
  while true do
    local st, err = self:_status()
    if st and st.generation == gen then
      seen = seen + 1
      if seen >= 2 then return true end
    else
      seen = 0
      last = st and ("generation " .. tostring(st.generation)) or err
    end
    if rollout.now() - t0 > self.reload_timeout then
      return nil, string.format("generation %d not live %.1f s after the reload (status: %s)",
        gen, self.reload_timeout, last)
    end
    rollout.sleep(0.01)
  end
end

-- Learn the generation (file or live, whichever is newer) and the live header override.
function R:_adopt()
  if self.generation then return end
  local st = self:_status()
  local g = file_generation(fs.read(self.include)) or 0
  if st and math.type(st.generation) == "integer" and st.generation > g then g = st.generation end
  self.generation = g
  if st and st.header and not self.override then self.override = st.header end
end

function R:_write_reload(w, h)
  self:_adopt()
  local t0 = rollout.now()
  local gen = self.generation + 1
  local prev = fs.read(self.include)
  local ok, err = fs.write_atomic(self.include, M.render(self.cfg, w, gen, h), 420)
  if not ok then return nil, "writing the include: " .. err end
  local function restore(why)
    if prev then fs.write_atomic(self.include, prev, 420) else os.remove(self.include) end
    return nil, why
  end
  ok, err = self:_run("-t", "-q")
  if not ok then return restore("NGINX refused the new config (previous file restored): " .. err) end
  self.generation = gen -- taken even if the reload fails: never reuse a generation
  ok, err = self:_reload()
  if not ok then return restore("reload failed: " .. err) end
  ok, err = self:_await(gen)
  if not ok then return restore(err) end
  self.reloads = self.reloads + 1
  self:_emit("reload", { generation = gen, elapsed = rollout.now() - t0 })
  return true
end

function R:_apply(w)
  self:_adopt()
  return self:_write_reload(w, self.override)
end

function R:_apply_override(h)
  local w, err = self:_read()
  if not w then return nil, err end
  return self:_write_reload(w, h)
end

-- ---- checks --------------------------------------------------------------------------

local function dir_of(path) return path:match("^(.*)/[^/]*$") or "." end

local function writable(path)
  local dir = dir_of(path)
  local probe = dir .. "/.rollout-check-" .. fs.getpid()
  local f, err = io.open(probe, "w")
  if not f then return nil, "cannot create files in " .. dir .. ": " .. tostring(err) end
  f:close()
  os.remove(probe)
  if fs.stat(path) then
    local g, gerr = io.open(path, "r+")
    if not g then return nil, tostring(gerr) end
    g:close()
  end
  return true
end

function R:_checks()
  local item = common.item
  local items = {}
  local v, verr = self:_run("-v")
  items[#items + 1] = item("nginx binary", v ~= nil, v and one_line(v.stderr ~= "" and v.stderr or v.stdout) or verr)
  local ok, werr = writable(self.include)
  items[#items + 1] = item("include writable", ok, ok and self.include or werr)
  local text = fs.read(self.include)
  local fgen = file_generation(text)
  if text then
    items[#items + 1] = item("include managed", fgen ~= nil,
      fgen and ("generation " .. fgen)
        or (self.include .. " exists but was not written by rollout (no generation line)"))
  else
    items[#items + 1] = item("include managed", false,
      self.include .. " missing: write it with write_config() before NGINX starts")
  end
  local t, terr = self:_run("-t", "-q")
  items[#items + 1] = item("config valid", t ~= nil, t and "nginx -t passed" or terr)
  local st, serr = self:_status()
  local detail = serr
  if st then
    detail = "generation " .. tostring(st.generation) .. " live, serving " .. common.fmt_weights(st)
    if fgen and st.generation ~= fgen then
      detail = detail .. "; the file holds generation " .. fgen .. " (a reload is pending)"
    end
  end
  items[#items + 1] = item("status endpoint", st ~= nil, detail)
  return items
end

function R:_describe(out)
  out.upstream = self.upstream
  out.include = self.include
  out.generation = self.generation
  out.reloads = self.reloads
  local st = self:_status()
  out.live_generation = st and st.generation
  out.live_header_override = st and st.header
end

return M

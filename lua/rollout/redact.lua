-- rollout.redact: keep secrets out of everything rollout writes (terminal and --json output,
-- the journal, reports, the control socket, REPL printing).
--
--   redact.text(s) -> s with secrets replaced by "[REDACTED]"
--   redact.value(v) -> a deep copy of v with every string redacted, and the whole value of a
--                      key that names a secret (token, password, authorization, ...) masked;
--                      metatables (json.array_mt) are kept, cycles stay cycles
--   redact.register(value)  a secret read from a file or the environment: masked wherever
--                      it appears, also in its JSON-escaped form (values under 6 bytes are
--                      ignored: masking "abc" everywhere would hide more than it protects)
--   redact.scan(tbl)   registers what a playbook holds as secrets: strings under secret
--                      keys (params.api_token, headers.Authorization, bearer, password ...),
--                      the environment variables that *_env keys name and the contents of
--                      the files that *_file keys name (token_file, url_file; not ca_file)
--
-- Recognised without registration (text patterns, case-insensitive names):
--   Authorization: <credentials>       a header, also "Authorization" = "..." in tables/JSON
--   Bearer <token>                     (Basic credentials: in an Authorization header)
--   scheme://user:password@host        userinfo in any URL
--   ?token=... &access_token=... api_key key secret password sig signature (query params)
--   /services/T.../B.../<secret>       Slack incoming-webhook paths
--   token = "...", "password": "..."   quoted values of secret-named keys (Lua tables, JSON)
--   password=DBPASS333 --token=abc       unquoted key=value of secret-named keys (also argv)
--   X-Custom-Auth: v, ["X-Auth"] = "v"   X- headers named like auth, token, secret, api-key
--   /api/webhooks/<id>/<token>           Discord-style webhook paths
--
-- Matches never consume a backslash or a quote, so redacting JSON text keeps it valid JSON.
-- Every pattern starts at a literal or at a word boundary (%f), so text() is linear in the
-- length of its input (a 10 KB word took seconds with a free-floating [%w_]* prefix).
-- Error policy: never raises on any input; non-strings pass through text() unchanged.
local json = require("rollout.json")
local fs = require("rollout.fs")

local M = {}

M.MASK = "[REDACTED]"

local registered = {}  -- list of literal secrets, longest first
local known = {}       -- secret -> true

local function ci(word) -- a case-insensitive Lua pattern for a plain word
  return (word:gsub("%a", function(c) return "[" .. c:upper() .. c:lower() .. "]" end))
end

-- Key names whose values are secrets.
local SECRET_KEYS = { "authorization", "proxy%-authorization", "token", "access_token", "refresh_token", "id_token",
  "api_key", "apikey", "api%-key", "x%-api%-key", "x%-auth%-token", "secret", "client_secret", "password", "passwd",
  "bearer", "cookie", "set%-cookie", "private_key", "credentials", "sig", "signature", "webhook_url" }

local function secret_key(k)
  if type(k) ~= "string" then return false end
  local l = k:lower()
  for _, s in ipairs(SECRET_KEYS) do
    if l:match("^" .. s .. "$") then return true end
  end
  -- api_token, slack_token, db_password, github_secret ... (but not token_file, token_env)
  if l:match("token$") or l:match("password$") or l:match("secret$") or l:match("api_?key$") then return true end
  -- auth-like names: X-Auth, X-Custom-Auth, auth, basic_auth, X-Auth-Token (not author,
  -- authority, nor what names a file, a variable, a kind or a URL: auth_file, auth_type ...)
  if l:find("auth", 1, true) and not l:find("author", 1, true) then
    for _, suffix in ipairs({ "_file", "_env", "_type", "_mode", "_method", "_scheme", "_url", "-type", "-mode" }) do
      if l:sub(-#suffix) == suffix then return false end
    end
    return true
  end
  return false
end
M.secret_key = secret_key

local QUERY_KEYS = { "token", "access_token", "api_key", "apikey", "key", "secret", "password", "sig", "signature",
  "auth", "client_secret", "x%-amz%-signature" }

local PATTERNS = {}
local function add(pat, repl) PATTERNS[#PATTERNS + 1] = { pat, repl } end

-- Authorization headers: "Authorization: Basic abc", "authorization=..." up to the end of the value
add("(" .. ci("authorization") .. "%s*:%s*)[^\r\n\"'\\]+", "%1" .. M.MASK)
add("(" .. ci("proxy-authorization") .. "%s*:%s*)[^\r\n\"'\\]+", "%1" .. M.MASK)
-- "Authorization" = "..." / "Authorization": "..." in printed tables and JSON
add("(" .. ci("authorization") .. "[\"']?%]?%s*[:=]%s*[\"'])[^\"'\\\r\n]*", "%1" .. M.MASK)
-- Bearer credentials anywhere (8 characters at least: "the bearer of" is English)
add("(" .. ci("bearer") .. "%s+)([%w%-%._~%+/]+=*)", function(prefix, tok)
  if #tok >= 8 then return prefix .. M.MASK end
end)
-- userinfo in URLs
add("(%f[%w%+%.%-]%a[%w%+%.%-]*://)[^/%s@\"'\\]+@", "%1" .. M.MASK .. "@")
-- Slack incoming webhooks: /services/T000/B000/XXXX
add("(/services/)T[%w]+/B[%w]+/[%w]+", "%1" .. M.MASK)
-- token-like query parameters
for _, k in ipairs(QUERY_KEYS) do
  add("([%?&;]" .. ci(k) .. "=)[^&#%s\"'\\]+", "%1" .. M.MASK)
end
-- quoted values of secret-named keys: token = "x", "password": "x", ['api_key'] = 'x'
for _, k in ipairs({ "token", "access_token", "api_key", "apikey", "secret", "client_secret", "password", "passwd", "bearer",
  "private_key", "cookie" }) do
  add("(%f[%w_][%w_]*" .. ci(k) .. "[\"']?%]?%s*[:=]%s*[\"'])[^\"'\\\r\n]+", "%1" .. M.MASK)
end

-- Discord (and Discord-compatible) webhooks: /api/webhooks/<id>/<token>
add("(/api/webhooks/%d+/)[%w%-_%.]+", "%1" .. M.MASK)
-- X-... headers whose name says auth, token, secret or key: "X-Custom-Auth: v", and in
-- printed tables / JSON: ["X-Auth"] = "v", "X-Api-Key": "v"
local function x_secret(name)
  local l = name:lower()
  return l:find("auth", 1, true) or l:find("token", 1, true) or l:find("secret", 1, true)
    or l:find("api-key", 1, true) or l:find("apikey", 1, true) or l:find("password", 1, true)
end
add("(%f[%w%-][Xx]%-[%w%-]+)(%s*:%s*)([^\r\n\"'\\]+)", function(name, sep, v)
  if x_secret(name) and v ~= M.MASK then return name .. sep .. M.MASK end
end)
add("([\"'])([Xx]%-[%w%-]+)([\"']%]?%s*[:=]%s*[\"'])([^\"'\\\r\n]*)", function(q, name, mid, v)
  if x_secret(name) and v ~= M.MASK then return q .. name .. mid .. M.MASK end
end)
-- unquoted key=value of secret-named keys: password=DBPASS333, --token=abc, API_KEY=...
for _, k in ipairs({ "password", "passwd", "pwd", "token", "secret", "api_key", "apikey", "api%-key", "access_key",
  "private_key", "client_secret", "auth" }) do
  add("(%f[%w_%-][%w_%-]*" .. ci(k) .. "%s*=%s*)([^%s\"'\\&,;%)%]}%[][^%s\"'\\&,;%)%]}]*)", function(prefix, v)
    if v ~= M.MASK then return prefix .. M.MASK end
  end)
end

-- Secret files scan() read (token_file, ...): re-read when they change (a rotated token).
local watched = {} -- path -> {mtime=, size=}
local refresh

local function mask(s)
  if type(s) ~= "string" or s == "" then return s end
  for _, secret in ipairs(registered) do
    if s:find(secret, 1, true) then
      s = s:gsub(secret:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"), M.MASK)
    end
  end
  for _, p in ipairs(PATTERNS) do
    s = s:gsub(p[1], p[2])
  end
  return s
end

--- text(s) -> s with secrets masked.
function M.text(s)
  if type(s) ~= "string" or s == "" then return s end
  refresh()
  return mask(s)
end

local function copy(v, seen, under_secret)
  local t = type(v)
  if t == "string" then return under_secret and M.MASK or mask(v) end
  if t ~= "table" then return v end
  if seen[v] then return seen[v] end
  local mt = getmetatable(v)
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do
    local key = type(k) == "string" and mask(k) or k
    out[key] = copy(x, seen, secret_key(k))
  end
  if mt then setmetatable(out, mt) end
  return out
end

--- value(v) -> a redacted deep copy (strings and tables; other values as they are).
function M.value(v)
  refresh()
  if type(v) ~= "table" then
    if type(v) == "string" then return M.text(v) end
    return v
  end
  return copy(v, {}, false)
end

local function json_escaped(s)
  local eok, enc = pcall(json.encode, s)
  if eok and type(enc) == "string" then return enc:sub(2, -2) end
end

local function remember(s)
  if known[s] then return end
  known[s] = true
  registered[#registered + 1] = s
  table.sort(registered, function(a, b) return #a > #b end)
end

--- register(value): mask this secret wherever it appears from now on.
function M.register(value)
  if type(value) ~= "string" then return end
  value = value:match("^%s*(.-)%s*$")
  if #value < 6 then return end
  remember(value)
  local esc = json_escaped(value)
  if esc and esc ~= value then remember(esc) end
  -- "Bearer xyz" registers xyz too; a URL registers its userinfo and query secrets too
  local cred = value:match("^%a+%s+(%S+)$")
  if cred and #cred >= 6 then remember(cred) end
end

--- guard_stderr(): from now on io.stderr:write passes through text() (what a command
--- prints on stderr: errors with values, warnings, router and notifier messages).
function M.guard_stderr()
  local real = io.stderr
  if type(real) ~= "userdata" then return end -- guarded already
  local guard = setmetatable({}, { __index = function(_, k)
    local v = real[k]
    if type(v) ~= "function" then return v end
    return function(self, ...)
      if self ~= nil and rawequal(self, io.stderr) then self = real end
      return v(self, ...)
    end
  end })
  guard.write = function(_, ...)
    local parts = table.pack(...)
    for i = 1, parts.n do
      if type(parts[i]) == "string" then parts[i] = M.text(parts[i]) end
    end
    local ok, err = real:write(table.unpack(parts, 1, parts.n))
    if not ok then return ok, err end
    return io.stderr
  end
  io.stderr = guard -- luacheck: ignore 122
end

--- The number of registered secrets (for tests and `rollout check`).
function M.count() return #registered end

local NOT_SECRET_FILES = { ca_file = true, cafile = true, cert_file = true, pid_file = true, config_file = true }

local function read_small(path) -- a regular file only: never block on a FIFO or a device
  local real = fs.realpath(path) -- through symlinks (projected tokens), to a regular file
  local st = real and fs.stat(real)
  if not st or st.type ~= "file" then return nil end
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read(65536)
  f:close()
  return s
end

-- The identity of a file's current contents: its target's mtime (ns) and size. A projected
-- service-account token is a symlink chain that rotation re-points: stat what it points to.
local function file_id(path)
  local real = fs.realpath(path)
  local st = real and fs.stat(real)
  if not st then return nil end
  return st.mtime .. ":" .. st.size .. ":" .. real
end

function refresh()
  for path, id in pairs(watched) do
    local now = file_id(path)
    if now and now ~= id then
      watched[path] = now
      M.register(read_small(path))
    end
  end
end

local function watch(path)
  if watched[path] == nil then watched[path] = file_id(path) or false end
end

--- scan(tbl): register the secrets a playbook (or any config table) holds; the files that
--- *_file keys name are watched, and read again when they change (a rotated token).
function M.scan(tbl, seen)
  if type(tbl) ~= "table" then return end
  seen = seen or {}
  if seen[tbl] then return end
  seen[tbl] = true
  for k, v in pairs(tbl) do
    if type(v) == "table" then
      if type(k) == "string" and k:lower() == "headers" then
        for hk, hv in pairs(v) do
          if type(hv) == "string" and secret_key(hk) then M.register(hv) end
        end
      end
      M.scan(v, seen)
    elseif type(v) == "string" and type(k) == "string" then
      local base, suffix = k:match("^(.-)_(env)$")
      if not base then base, suffix = k:match("^(.-)_(file)$") end
      if suffix == "env" and (secret_key(base) or base == "url" or base:match("_url$")) then
        M.register(os.getenv(v))
      elseif suffix == "file" and not NOT_SECRET_FILES[k] and (secret_key(base) or base == "url" or base:match("_url$")) then
        M.register(read_small(v))
        watch(v)
      elseif secret_key(k) then
        M.register(v)
      end
    end
  end
end

return M

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
--
-- Matches never consume a backslash or a quote, so redacting JSON text keeps it valid JSON.
-- Every pattern starts at a literal or at a word boundary (%f), so text() is linear in the
-- length of its input (a 10 KB word took seconds with a free-floating [%w_]* prefix).
-- Error policy: never raises on any input; non-strings pass through text() unchanged.
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
  return (l:match("token$") or l:match("password$") or l:match("secret$") or l:match("api_?key$")) and true or false
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

--- text(s) -> s with secrets masked.
function M.text(s)
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

local function copy(v, seen, under_secret)
  local t = type(v)
  if t == "string" then return under_secret and M.MASK or M.text(v) end
  if t ~= "table" then return v end
  if seen[v] then return seen[v] end
  local mt = getmetatable(v)
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do
    local key = type(k) == "string" and M.text(k) or k
    out[key] = copy(x, seen, secret_key(k))
  end
  if mt then setmetatable(out, mt) end
  return out
end

--- value(v) -> a redacted deep copy (strings and tables; other values as they are).
function M.value(v)
  if type(v) ~= "table" then
    if type(v) == "string" then return M.text(v) end
    return v
  end
  return copy(v, {}, false)
end

local function json_escaped(s)
  local ok, json = pcall(require, "rollout.json")
  if not ok then return nil end
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

--- The number of registered secrets (for tests and `rollout check`).
function M.count() return #registered end

local NOT_SECRET_FILES = { ca_file = true, cafile = true, cert_file = true, pid_file = true, config_file = true }

local function read_small(path) -- a regular file only: never block on a FIFO or a device
  local ok, fs = pcall(require, "rollout.fs")
  local st = ok and fs.stat(path)
  if not st or st.type ~= "file" then return nil end
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read(65536)
  f:close()
  return s
end

--- scan(tbl): register the secrets a playbook (or any config table) holds.
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
      elseif secret_key(k) then
        M.register(v)
      end
    end
  end
end

return M

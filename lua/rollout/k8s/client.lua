-- rollout.k8s.client: the Kubernetes API over the host's HTTP client (rollout.http).
--
--   local client = require("rollout.k8s.client")
--   local c = client.new{ namespace = "production" }     -- credentials found as kubectl would
--   local d, err, e = c:get("/apis/apps/v1/namespaces/production/deployments/dwcp-v3")
--   local obj, err = c:modify(path, function(cur) return { metadata = { labels = {...} } } end)
--
-- Credentials (client.new(cfg)), first match wins:
--   1. cfg.api: that URL, with cfg.token | cfg.token_file, cfg.ca_file, cfg.cert_file/key_file;
--   2. cfg.kubeconfig (a path) or cfg.context: that kubeconfig (rollout.k8s.kubeconfig);
--   3. in a cluster (KUBERNETES_SERVICE_HOST set): the service account's token file and CA
--      under /var/run/secrets/kubernetes.io/serviceaccount (cfg.token_file/ca_file override);
--   4. $KUBECONFIG or ~/.kube/config, when one exists.
-- Otherwise every call fails with a reason. A token file is re-read every token_refresh
-- (default 1m) and at once after a 401, so a rotated service-account token is picked up.
--
-- Requests send Accept: application/json; bodies are JSON with the content type given
-- (application/json for create, application/merge-patch+json for patches).
--
-- Errors are typed: every failing call returns nil, message, e where e = {code=, kind=,
-- reason=, message=, verb=, resource=, namespace=, name=} and kind is one of
--   "unauthorized" (401)  "forbidden" (403: the message names the verb and the resource)
--   "not_found" (404)     "conflict" (409)   "invalid" (422: the server's message)
--   "http" (other statuses)  "transport" (no answer)  "config" (no API or credentials).
-- c:modify() retries a 409 with a fresh read (up to 5 times).
--
-- Error policy: bad config raises from new() (with the key path); operational failures
-- return nil, err, e.
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local kubeconfig = require("rollout.k8s.kubeconfig")
local units = require("rollout.units")
local redact = require("rollout.redact")

local M = {}

M.SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

local C = {}
C.__index = C

local KIND_OF = { [401] = "unauthorized", [403] = "forbidden", [404] = "not_found", [409] = "conflict",
  [422] = "invalid" }

-- ---- request attributes (what RBAC sees) -------------------------------------------

--- The RBAC attributes of a request: {verb=, group=, version=, resource=, subresource=,
--- namespace=, name=}. Used for 403 messages and by `rollout check`'s access reviews.
function M.attributes(method, path, query)
  local p = path:gsub("%?.*$", "")
  local parts = {}
  for seg in p:gmatch("[^/]+") do parts[#parts + 1] = seg end
  local a, i = {}
  if parts[1] == "api" then a.group, a.version, i = "", parts[2], 3
  elseif parts[1] == "apis" then a.group, a.version, i = parts[2], parts[3], 4
  else return { verb = method:lower(), path = p } end
  if parts[i] == "namespaces" and parts[i + 2] then a.namespace = parts[i + 1]; i = i + 2 end
  a.resource, a.name, a.subresource = parts[i], parts[i + 1], parts[i + 2]
  if a.resource == "namespaces" and not a.namespace and a.name then a.namespace = a.name end
  local verbs = { GET = a.name and "get" or "list", POST = "create", PUT = "update", PATCH = "patch",
    DELETE = a.name and "delete" or "deletecollection" }
  a.verb = verbs[method] or method:lower()
  if method == "GET" and query and query:match("watch=true") then a.verb = "watch" end
  return a
end

--- "patch deployments/scale in apps (namespace production)"
function M.describe_attributes(a)
  if not a.resource then return a.verb .. " " .. tostring(a.path) end
  local r = a.resource .. (a.subresource and ("/" .. a.subresource) or "")
  local g = (a.group and a.group ~= "") and (" in API group \"" .. a.group .. "\"") or " in the core API group"
  return string.format("%s %s%s%s", a.verb, r, g, a.namespace and (" in namespace " .. a.namespace) or " (cluster-wide)")
end

-- ---- construction -------------------------------------------------------------------

local function duration(v, default)
  if v == nil then return default end
  if type(v) == "number" then return v end
  local d = units.parse("duration", v)
  if not d then error("k8s: bad duration " .. tostring(v), 3) end
  return d
end

local function in_cluster_api()
  local host, port = os.getenv("KUBERNETES_SERVICE_HOST"), os.getenv("KUBERNETES_SERVICE_PORT")
  if not host or host == "" then return nil end
  return "https://" .. (host:find(":") and "[" .. host .. "]" or host) .. ":" .. (port or "443")
end

--- A client. cfg: api=, namespace=, token=, token_file=, token_refresh=, ca_file=,
--- cert_file=, key_file=, insecure=, kubeconfig=, context=, timeout= (10s).
function M.new(cfg)
  cfg = cfg or {}
  if type(cfg) ~= "table" then error("k8s.client.new: expected a table", 2) end
  local self = setmetatable({ timeout = duration(cfg.timeout, 10), token_refresh = duration(cfg.token_refresh, 60) }, C)
  local creds, why
  if cfg.api then
    creds = { api = cfg.api, token = cfg.token, token_file = cfg.token_file, ca_file = cfg.ca_file,
      cert_file = cfg.cert_file, key_file = cfg.key_file, insecure = cfg.insecure, source = "api " .. cfg.api }
    if not creds.token and not creds.token_file and not creds.cert_file then creds.token_file = M.SA_DIR .. "/token" end
    if not creds.ca_file and cfg.api:match("^https:") and not cfg.insecure then creds.ca_file = M.SA_DIR .. "/ca.crt" end
  elseif cfg.kubeconfig or cfg.context then
    creds, why = kubeconfig.load{ path = cfg.kubeconfig, context = cfg.context }
  elseif in_cluster_api() then
    creds = { api = in_cluster_api(), token_file = cfg.token_file or (M.SA_DIR .. "/token"),
      ca_file = cfg.ca_file or (M.SA_DIR .. "/ca.crt"), source = "in-cluster service account" }
    local ns = fs.read(M.SA_DIR .. "/namespace")
    creds.namespace = ns and ns:gsub("%s+$", "") or nil
  else
    local any = false
    for _, p in ipairs(kubeconfig.paths()) do if fs.stat(p) then any = true end end
    if any then creds, why = kubeconfig.load{} end
    if not any then
      why = "no Kubernetes API: set `api`, run in a cluster (KUBERNETES_SERVICE_HOST is unset), "
        .. "or provide a kubeconfig ($KUBECONFIG or ~/.kube/config)"
      -- an explicit token file still shows up in check()
      creds = nil
      self.token_file = cfg.token_file
      self.ca_file = cfg.ca_file
    end
  end
  if creds then
    self.api = creds.api:gsub("/+$", "")
    self.static_token, self.token_file = creds.token, creds.token_file
    self.ca_file, self.ca_pem = creds.ca_file, creds.ca_pem
    self.cert_file, self.key_file, self.cert_pem, self.key_pem = creds.cert_file, creds.key_file, creds.cert_pem, creds.key_pem
    self.insecure = creds.insecure
    self.source = creds.source
    self.namespace = cfg.namespace or creds.namespace or "default"
  else
    self.config_error = why
    self.namespace = cfg.namespace or "default"
  end
  return self
end

-- ---- the token ----------------------------------------------------------------------

function C:token(force)
  if self.static_token then return self.static_token end
  if not self.token_file then return false end
  local now = rollout.now()
  if force or not self.tok or now - self.tok_at >= self.token_refresh then
    local text, err = fs.read(self.token_file)
    if not text then return nil, "token: " .. err end
    local tok = text:gsub("%s+$", ""):gsub("^%s+", "")
    if tok == "" then return nil, "token: " .. self.token_file .. " is empty" end
    redact.register(tok) -- a rotated token is as secret as the first
    self.tok, self.tok_at = tok, now
  end
  return self.tok
end

-- ---- requests -----------------------------------------------------------------------

local function api_message(res)
  local st = json.decode(res.body or "")
  if type(st) == "table" and type(st.message) == "string" then return st.message, st.reason end
  return (res.body or ""):sub(1, 200)
end

local function fail(kind, msg, extra)
  local e = extra or {}
  e.kind, e.message = kind, e.message or msg
  return nil, msg, e
end

--- One API call. body (a table or a string) is sent with content type ctype (JSON by
--- default). opts.query: a string or table appended to the path. Returns the decoded
--- object (or true for an empty body) and the response | nil, err, e.
function C:request(method, path, body, ctype, opts)
  opts = opts or {}
  if not self.api then return fail("config", self.config_error or "no Kubernetes API") end
  local q = opts.query
  if type(q) == "table" then q = http.encode_query(q) end
  local full = path .. ((q and q ~= "") and ("?" .. q) or "")
  local function once(force)
    local tok, terr = self:token(force)
    if tok == nil then return fail("config", terr) end
    local headers = { Accept = "application/json" }
    if tok then headers.Authorization = "Bearer " .. tok end
    local data
    if body ~= nil then
      data = type(body) == "string" and body or json.encode(body)
      headers["Content-Type"] = ctype or "application/json"
    end
    local res, herr = http.request{ method = method, url = self.api .. full, headers = headers, body = data,
      timeout = opts.timeout or self.timeout, cafile = self.ca_file, ca_pem = self.ca_pem,
      cert = self.cert_file, key = self.key_file, cert_pem = self.cert_pem, key_pem = self.key_pem,
      insecure = self.insecure or nil }
    if not res then return fail("transport", method .. " " .. full .. ": " .. tostring(herr)) end
    return res
  end
  local res, err, e = once(false)
  if not res then return nil, err, e end
  if res.status == 401 and self.token_file then
    res, err, e = once(true) -- a rotated token: read the file again now
    if not res then return nil, err, e end
  end
  if res.status < 200 or res.status > 299 then
    local msg, reason = api_message(res)
    local a = M.attributes(method, path, q)
    local info = { code = res.status, reason = reason, message = msg, verb = a.verb, resource = a.resource,
      subresource = a.subresource, group = a.group, namespace = a.namespace, name = a.name }
    local text
    if res.status == 403 then
      text = string.format("%s %s: HTTP 403: forbidden: the credentials (%s) may not %s: %s", method, full,
        self.source or "?", M.describe_attributes(a), msg)
    else
      text = string.format("%s %s: HTTP %d: %s%s", method, full, res.status, msg, reason and (" (" .. reason .. ")") or "")
      if res.status == 401 then
        text = text .. " (credentials: " .. (self.token_file and ("token from " .. self.token_file) or self.source or "?") .. ")"
      end
    end
    return fail(KIND_OF[res.status] or "http", text, info)
  end
  if res.body == nil or res.body == "" then return true, res end
  local obj, jerr = json.decode(res.body)
  if obj == nil then return fail("http", method .. " " .. full .. ": response is not JSON: " .. tostring(jerr)) end
  return obj, res
end

function C:get(path, opts) return self:request("GET", path, nil, nil, opts) end
function C:create(path, obj, opts) return self:request("POST", path, obj, "application/json", opts) end
function C:delete(path, opts) return self:request("DELETE", path, nil, nil, opts) end
function C:merge_patch(path, patch, opts) return self:request("PATCH", path, patch, "application/merge-patch+json", opts) end

--- Read-modify-write with optimistic concurrency: GET path, fn(current) returns a merge
--- patch (or nil: nothing to change, returns current), PATCH it carrying the read
--- resourceVersion; a 409 re-reads and calls fn again (opts.attempts, default 5).
--- Returns the new object | nil, err, e.
function C:modify(path, fn, opts)
  opts = opts or {}
  local attempts = opts.attempts or 5
  local last, lerr
  for _ = 1, attempts do
    local cur, err, e = self:get(path)
    if not cur then return nil, err, e end
    local patch = fn(cur)
    if patch == nil then return cur end
    patch.metadata = patch.metadata or {}
    patch.metadata.resourceVersion = cur.metadata and cur.metadata.resourceVersion
    local obj, perr, pe = self:merge_patch(path, patch, opts)
    if obj then return obj end
    if pe.kind ~= "conflict" then return nil, perr, pe end
    last, lerr = perr, pe
  end
  return nil, last .. " (still conflicting after " .. attempts .. " fresh reads)", lerr
end

--- What check() shows: credentials readable, API reachable (GET /version).
function C:checks(item)
  local items = {}
  if self.token_file then
    local tok, terr = self:token(true)
    items[#items + 1] = item("token file", tok ~= nil, tok and self.token_file or terr)
  end
  if self.ca_file then
    local ca, cerr = fs.read(self.ca_file)
    local pem = ca ~= nil and ca:find("BEGIN CERTIFICATE", 1, true) ~= nil
    items[#items + 1] = item("ca file", pem,
      ca and (pem and self.ca_file or self.ca_file .. " holds no PEM certificate") or cerr)
  end
  return items
end

M.Client = C
return M

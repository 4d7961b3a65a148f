-- rollout.k8s.kubeconfig: read a kubeconfig the way kubectl does, for a client.
--
--   local creds, err = require("rollout.k8s.kubeconfig").load{ path = nil, context = nil }
--
-- Files: opts.path, else $KUBECONFIG (a ':'-separated list, merged as kubectl merges: for
-- each cluster, user and context name and for current-context, the first file that sets it
-- wins), else ~/.kube/config. The context is opts.context, else current-context.
-- Supported: clusters[].cluster.server, certificate-authority(-data),
-- insecure-skip-tls-verify, tls-server-name (refused: not supported by this client);
-- users[].user.token, tokenFile, client-certificate(-data), client-key(-data);
-- contexts[].context.cluster, user, namespace. opts.paths (a list) stands for $KUBECONFIG. Relative file paths are relative
-- to the kubeconfig file that names them (kubectl's rule). exec and auth-provider
-- credential plugins, username/password (basic authentication left Kubernetes in 1.19) and
-- impersonation are refused with a clear error rather than ignored.
--
-- Returns creds = {api=, namespace=, ca_file=|ca_pem=, insecure=, token=|token_file=,
-- cert_file=|cert_pem=, key_file=|key_pem=, source="kubeconfig FILE context NAME"}, never
-- the secrets in an error message.
--
-- Error policy: every problem is nil, "FILE: key.path: message" (the key path names the
-- entry: `users[name=ci].user.exec`); nothing raises on bad input.
local codec = require("rollout.codec")
local fs = require("rollout.fs")
local yaml = require("rollout.yaml")

local M = {}

local function home_path(p)
  if p:sub(1, 2) == "~/" then return (os.getenv("HOME") or "") .. p:sub(2) end
  return p
end

--- The files kubectl would read, in order (a leading ~/ is $HOME).
function M.paths(opts)
  opts = opts or {}
  if opts.path then return { home_path(opts.path) } end
  if opts.paths then return opts.paths end
  local env = os.getenv("KUBECONFIG")
  if env and env ~= "" then
    local out = {}
    for p in env:gmatch("[^:]+") do out[#out + 1] = home_path(p) end
    return out
  end
  return { home_path("~/.kube/config") }
end

local function dir_of(path) return path:match("^(.*)/[^/]*$") or "." end

local function resolve(file, p)
  if p:sub(1, 1) == "/" or p:sub(1, 2) == "~/" then return home_path(p) end
  return dir_of(file) .. "/" .. p
end

local function is_null(v) return v == nil or v == yaml.null end

local function str(v) if type(v) == "string" and v ~= "" then return v end end

-- Merge one file's named lists into acc (first definition wins).
local function merge_file(acc, path, doc)
  if type(doc) ~= "table" then return nil, path .. ": not a kubeconfig (expected a mapping)" end
  for _, list in ipairs({ "clusters", "users", "contexts" }) do
    local l = doc[list]
    if not is_null(l) then
      if type(l) ~= "table" then return nil, path .. ": " .. list .. ": expected a list" end
      for i, e in ipairs(l) do
        if type(e) ~= "table" or not str(e.name) then
          return nil, string.format("%s: %s[%d].name: required", path, list, i)
        end
        acc[list][e.name] = acc[list][e.name] or { file = path, entry = e }
      end
    end
  end
  if acc.current == nil and str(doc["current-context"]) then acc.current = doc["current-context"]; acc.current_file = path end
  return true
end

local function b64(file, where, v)
  local s = codec.unbase64((v:gsub("%s+", "")))
  if not s then return nil, file .. ": " .. where .. ": not valid base64" end
  return s
end

--- Credentials for a client from the kubeconfig files. nil, err when there is none.
function M.load(opts)
  opts = opts or {}
  local acc = { clusters = {}, users = {}, contexts = {} }
  local files = M.paths(opts)
  local single = opts.path ~= nil or #files == 1
  local read_any = false
  for _, path in ipairs(files) do
    local text, rerr = fs.read(path)
    if text then
      read_any = true
      local doc, yerr = yaml.load(text, path)
      if doc == nil then return nil, yerr end
      local ok, merr = merge_file(acc, path, doc)
      if not ok then return nil, merr end
    elseif single then
      return nil, "kubeconfig: " .. rerr
    end
  end
  if not read_any then return nil, "kubeconfig: none of " .. table.concat(files, ":") .. " could be read" end
  local name = opts.context or acc.current
  if not name then return nil, files[1] .. ": current-context: not set (and no context given)" end
  local ctx = acc.contexts[name]
  if not ctx then
    return nil, string.format("%s: current-context: no context named %q", acc.current_file or files[1], name)
  end
  local cfile, c = ctx.file, ctx.entry.context
  local where = "contexts[name=" .. name .. "].context"
  if type(c) ~= "table" then return nil, cfile .. ": " .. where .. ": required mapping" end
  if not str(c.cluster) then return nil, cfile .. ": " .. where .. ".cluster: required" end
  local cl = acc.clusters[c.cluster]
  if not cl then return nil, string.format("%s: %s.cluster: no cluster named %q", cfile, where, c.cluster) end
  local creds = { namespace = str(c.namespace), source = "kubeconfig " .. cfile .. " context " .. name }
  -- the cluster
  local f, cc = cl.file, cl.entry.cluster
  local cw = "clusters[name=" .. c.cluster .. "].cluster"
  if type(cc) ~= "table" then return nil, f .. ": " .. cw .. ": required mapping" end
  if not str(cc.server) or not cc.server:match("^https?://") then
    return nil, f .. ": " .. cw .. ".server: required http(s) URL"
  end
  creds.api = cc.server:gsub("/+$", "")
  if str(cc["tls-server-name"]) then
    return nil, f .. ": " .. cw .. ".tls-server-name: not supported by rollout's client"
  end
  if not is_null(cc["proxy-url"]) then return nil, f .. ": " .. cw .. ".proxy-url: not supported by rollout's client" end
  if cc["insecure-skip-tls-verify"] == true then creds.insecure = true end
  if str(cc["certificate-authority-data"]) then
    local pem, err = b64(f, cw .. ".certificate-authority-data", cc["certificate-authority-data"])
    if not pem then return nil, err end
    creds.ca_pem = pem
  elseif str(cc["certificate-authority"]) then
    creds.ca_file = resolve(f, cc["certificate-authority"])
  end
  -- the user (a context may name none: anonymous)
  if str(c.user) then
    local u = acc.users[c.user]
    if not u then return nil, string.format("%s: %s.user: no user named %q", cfile, where, c.user) end
    local uf, uu = u.file, u.entry.user
    local uw = "users[name=" .. c.user .. "].user"
    if is_null(uu) then uu = {} end
    if type(uu) ~= "table" then return nil, uf .. ": " .. uw .. ": expected a mapping" end
    for _, k in ipairs({ "exec", "auth-provider" }) do
      if not is_null(uu[k]) then
        return nil, uf .. ": " .. uw .. "." .. k .. ": credential plugins are not supported; use a token, "
          .. "tokenFile or a client certificate (e.g. a ServiceAccount token from `kubectl create token`)"
      end
    end
    for _, k in ipairs({ "as", "as-groups", "impersonate", "impersonate-groups" }) do
      if not is_null(uu[k]) then return nil, uf .. ": " .. uw .. "." .. k .. ": impersonation is not supported" end
    end
    if str(uu.token) then creds.token = uu.token
    elseif str(uu.tokenFile) then creds.token_file = resolve(uf, uu.tokenFile) end
    if str(uu.username) or str(uu.password) then
      return nil, uf .. ": " .. uw .. ".username: basic authentication is not supported (Kubernetes removed it in 1.19)"
    end
    if str(uu["client-certificate-data"]) then
      local pem, err = b64(uf, uw .. ".client-certificate-data", uu["client-certificate-data"])
      if not pem then return nil, err end
      creds.cert_pem = pem
    elseif str(uu["client-certificate"]) then
      creds.cert_file = resolve(uf, uu["client-certificate"])
    end
    if str(uu["client-key-data"]) then
      local pem, err = b64(uf, uw .. ".client-key-data", uu["client-key-data"])
      if not pem then return nil, err end
      creds.key_pem = pem
    elseif str(uu["client-key"]) then
      creds.key_file = resolve(uf, uu["client-key"])
    end
    if (creds.cert_pem or creds.cert_file) and not (creds.key_pem or creds.key_file) then
      return nil, uf .. ": " .. uw .. ".client-key(-data): required with client-certificate"
    end
    if (creds.key_pem or creds.key_file) and not (creds.cert_pem or creds.cert_file) then
      return nil, uf .. ": " .. uw .. ".client-certificate(-data): required with client-key"
    end
  end
  return creds
end

return M

-- rollout.routers.istio: weights in an Istio VirtualService, over the Kubernetes API.
--
--   local r = require("rollout.routers.istio").new{
--     namespace = "production", virtualservice = "dwcp-v3",
--     baseline = "dwcp-v3-baseline", canary = "dwcp-v3-canary"}   -- destination hosts
--
-- Talks to the API server through rollout.k8s.client: `api` with a bearer token read from
-- `token_file` (re-read every `token_refresh`, 1m, and at once after a 401, so a rotated
-- service-account token is picked up) and the cluster CA in `ca_file`; else `kubeconfig`
-- (or `context`); else the in-cluster service account; else $KUBECONFIG or ~/.kube/config.
--
-- A shift GETs the VirtualService, rewrites the weights of the managed route (the one named
-- `route`, else the first http route without `match`), keeps every other route -- the
-- runbook's `canary: "true"` header-match route among them -- and PATCHes the complete
-- spec.http list as a JSON merge patch (application/merge-patch+json), carrying the
-- resourceVersion it read so a concurrent edit is refused (409) and retried rather than
-- overwritten. (The runbook's own `kubectl patch --type merge` with a one-element http list
-- drops the header route: a merge patch replaces lists whole.) Read back with GET.
--
-- Deployments: r:scale(name, replicas) PATCHes the `scale` subresource;
-- r:rollout_status(name, {timeout=}) waits the way `kubectl rollout status` decides
-- (both from rollout.k8s.deployments; r.client is the k8s client for anything else).
--
-- Error policy: bad config raises from new(); API failures return nil, err with the HTTP
-- status, the method, the path and the API's message.
local rollout = require("rollout")
local json = require("rollout.json")
local common = require("rollout.routers.common")
local client = require("rollout.k8s.client")
local deployments = require("rollout.k8s.deployments")
local resources = require("rollout.k8s.resources")

local M = {}

local DEST_FIELDS = {
  host = { kind = "string", nonempty = true, required = true }, subset = { kind = "string", nonempty = true }, port = { kind = "integer" },
}

local function name_check(v)
  if not (v:match("^[a-z0-9][-a-z0-9.]*$") and v:match("[a-z0-9]$") and #v <= 253) then
    return "must be a Kubernetes name (lower-case letters, digits, '-', '.')"
  end
end

local SCHEMA = {
  type = common.type_rule("istio"),
  name = { kind = "string", nonempty = true },
  api = { kind = "string", nonempty = true, check = function(v)
    if not v:match("^https?://") then return "expected an http(s) URL" end end },
  namespace = { kind = "string", nonempty = true, required = true, check = name_check },
  virtualservice = { kind = "string", nonempty = true, required = true, check = name_check },
  baseline = { kind = "table", required = true, what = "destination (host string or {host=, subset=, port=})" },
  canary = { kind = "table", required = true, what = "destination (host string or {host=, subset=, port=})" },
  route = { kind = "string", nonempty = true },
  token_file = { kind = "string", nonempty = true },
  ca_file = { kind = "string", nonempty = true },
  kubeconfig = { kind = "string", nonempty = true },
  context = { kind = "string", nonempty = true },
  token_refresh = { kind = "duration", zero = true },
  api_version = { kind = "string", nonempty = true, check = function(v) if not v:match("^networking%.istio%.io/v[%w]+$") then
    return "expected networking.istio.io/<version>" end end },
  timeout = { kind = "duration", zero = true },
  poll_interval = { kind = "duration", zero = true },
}

--- Problems with cfg as rollout.schema errors {path =, message =}; empty when fine.
function M.check(cfg)
  if type(cfg) ~= "table" then return common.check(cfg, SCHEMA) end
  local shallow, errs = {}, {}
  for k, v in pairs(cfg) do shallow[k] = v end
  for _, role in ipairs({ "baseline", "canary" }) do
    local v = cfg[role]
    if type(v) == "string" then
      shallow[role] = {}
      if v == "" then errs[#errs + 1] = { path = { role }, message = "must not be empty" } end
    elseif type(v) == "table" then
      shallow[role] = {}
      common.check(v, DEST_FIELDS, { role }, errs)
    end
  end
  common.check(shallow, SCHEMA, nil, errs)
  return errs
end

--- Problems with cfg as "key: message" strings; empty when fine. No side effects.
function M.validate(cfg) return common.strings(M.check(cfg)) end

local R = setmetatable({}, { __index = common.Router })
R.__index = R

local function dest(v)
  if type(v) == "string" then return { host = v } end
  return { host = v.host, subset = v.subset, port = v.port }
end

function M.new(cfg, opts)
  common.assert_valid("istio", M.validate(cfg), 2)
  local self = common.init(setmetatable({}, R), "istio", cfg, opts)
  -- Outside a cluster with no credentials: every call fails with a reason (check() shows it).
  self.client = client.new{ api = cfg.api, token_file = cfg.token_file, ca_file = cfg.ca_file,
    token_refresh = common.duration(cfg.token_refresh, 60), timeout = common.duration(cfg.timeout, 10),
    kubeconfig = cfg.kubeconfig, context = cfg.context, namespace = cfg.namespace }
  self.api = self.client.api
  self.ns = cfg.namespace
  self.poll_interval = common.duration(cfg.poll_interval, 1)
  self.dest = { baseline = dest(cfg.baseline), canary = dest(cfg.canary) }
  self.vs_path = string.format("/apis/%s/namespaces/%s/virtualservices/%s",
    cfg.api_version or "networking.istio.io/v1beta1", cfg.namespace, cfg.virtualservice)
  self.target = "virtualservice " .. cfg.namespace .. "/" .. cfg.virtualservice
  return self
end

-- ---- the API client ------------------------------------------------------------------

--- One API call through the k8s client: the decoded object and the response | nil, err, e.
--- Within a call's deadline (a rollback's max_rollback_time) each request gets only what is
--- left of it, so a hung API server cannot stretch the rollback past its bound.
function R:_call(method, path, body, ctype)
  local opts
  if self.io_until then
    local left = self.io_until - rollout.now()
    if left <= 0 then
      return nil, method .. " " .. path .. ": not sent: deadline reached", { kind = "transport", message = "deadline reached" }
    end
    opts = { timeout = math.min(self.client.timeout, left) }
  end
  return self.client:request(method, path, body, ctype, opts)
end

-- ---- the VirtualService --------------------------------------------------------------

local function same_dest(d, want)
  return type(d) == "table" and d.host == want.host and (want.subset == nil or d.subset == want.subset)
end

local function has_match(route)
  return type(route.match) == "table" and #route.match > 0
end

-- Index of the route whose weights we manage.
function R:_managed_index(http_routes)
  for i, route in ipairs(http_routes) do
    if self.cfg.route then
      if route.name == self.cfg.route then return i end
    elseif not has_match(route) then
      return i
    end
  end
end

-- A header-override route: one exact header match, everything to the canary.
function R:_override_of(route)
  if not has_match(route) or #route.match ~= 1 or type(route.route) ~= "table" or #route.route ~= 1 then return nil end
  local m = route.match[1]
  if type(m.headers) ~= "table" then return nil end
  for k in pairs(m) do if k ~= "headers" then return nil end end
  local name, cond, n = nil, nil, 0
  for k, v in pairs(m.headers) do name, cond, n = k, v, n + 1 end
  if n ~= 1 or type(cond) ~= "table" or type(cond.exact) ~= "string" then return nil end
  local d = route.route[1]
  if not same_dest(d.destination, self.dest.canary) then return nil end
  if d.weight ~= nil and d.weight ~= 100 then return nil end
  return { name = name, value = cond.exact }
end

function R:_get_vs()
  local vs, err = self:_call("GET", self.vs_path)
  if not vs then return nil, err end
  if type(vs.spec) ~= "table" then return nil, "GET " .. self.vs_path .. ": no spec" end
  if type(vs.spec.http) ~= "table" then vs.spec.http = json.array({}) end
  return vs
end

local function weights_of(route, dests)
  local list = route.route
  if type(list) ~= "table" or #list == 0 then return nil, "managed route has no destinations" end
  local got = { baseline = 0, canary = 0 }
  for _, d in ipairs(list) do
    local w = d.weight
    if w == nil or w == json.null then w = (#list == 1) and 100 or 0 end
    if same_dest(d.destination, dests.baseline) then got.baseline = got.baseline + w
    elseif same_dest(d.destination, dests.canary) then got.canary = got.canary + w
    else
      return nil, "managed route sends weight " .. tostring(w) .. " to "
        .. tostring(d.destination and d.destination.host) .. ", neither baseline nor canary"
    end
  end
  return common.shares(got.baseline, got.canary), got
end

function R:_read()
  local vs, err = self:_get_vs()
  if not vs then return nil, err end
  local i = self:_managed_index(vs.spec.http)
  if not i then
    return nil, self.target .. " has no "
      .. (self.cfg.route and ("route named " .. self.cfg.route) or "http route without match")
  end
  local w, raw = weights_of(vs.spec.http[i], self.dest)
  if not w then return nil, raw end
  return w, { weights = raw, resource_version = vs.metadata and vs.metadata.resourceVersion, routes = #vs.spec.http }
end

-- The destination entry for a role, keeping fields already there (port, headers...).
local function destination_entry(route, want, weight)
  for _, d in ipairs(type(route.route) == "table" and route.route or {}) do
    if same_dest(d.destination, want) then
      local e = common.copy(d)
      e.weight = weight
      if want.port then e.destination.port = { number = want.port } end
      return e
    end
  end
  local dst = { host = want.host, subset = want.subset }
  if want.port then dst.port = { number = want.port } end
  return { destination = dst, weight = weight }
end

local function patch_body(vs, http_routes)
  return { metadata = { resourceVersion = vs.metadata and vs.metadata.resourceVersion },
    spec = { http = json.array(http_routes) } }
end

function R:_patch_http(vs, http_routes, query)
  local obj, err = self:_call("PATCH", self.vs_path .. (query or ""), patch_body(vs, http_routes),
    "application/merge-patch+json")
  if not obj then return nil, err end
  return obj
end

function R:_apply(w)
  local vs, err = self:_get_vs()
  if not vs then return nil, err end
  local routes = {}
  for i, r in ipairs(vs.spec.http) do routes[i] = r end
  local i = self:_managed_index(routes)
  local route = i and common.copy(routes[i]) or {}
  local bw, cw = math.floor(w.baseline + 0.5), math.floor(w.canary + 0.5)
  if bw + cw ~= 100 then return nil, "Istio weights must be whole percents, got " .. common.fmt_weights(w) end
  route.route = json.array({ destination_entry(route, self.dest.baseline, bw),
    destination_entry(route, self.dest.canary, cw) })
  if self.cfg.route then route.name = self.cfg.route end
  if i then routes[i] = route else routes[#routes + 1] = route end
  local ok, perr = self:_patch_http(vs, routes)
  if not ok then return nil, perr end
  return true
end

function R:_apply_override(h)
  local vs, err = self:_get_vs()
  if not vs then return nil, err end
  local routes = {}
  for _, r in ipairs(vs.spec.http) do
    if not self:_override_of(r) then routes[#routes + 1] = r end
  end
  if h then
    local dst = { host = self.dest.canary.host, subset = self.dest.canary.subset }
    if self.dest.canary.port then dst.port = { number = self.dest.canary.port } end
    -- First, so it wins over the weighted route (Istio takes the first match).
    table.insert(routes, 1, {
      match = json.array({ { headers = { [h.name:lower()] = { exact = h.value } } } }),
      route = json.array({ { destination = dst, weight = 100 } }),
    })
  end
  local ok, perr = self:_patch_http(vs, routes)
  if not ok then return nil, perr end
  return true
end

function R:_read_override()
  local vs, err = self:_get_vs()
  if not vs then return nil, err end
  for _, r in ipairs(vs.spec.http) do
    local h = self:_override_of(r)
    if h then return h end
    if not has_match(r) then break end -- routes after the catch-all never match
  end
  return false
end

-- ---- deployments ---------------------------------------------------------------------

local function deploy_name(name)
  if type(name) ~= "string" or not resources.name_ok(name) then
    error("deployment name must be a Kubernetes name, got " .. tostring(name), 3)
  end
end

--- Set a Deployment's replicas through its scale subresource; confirmed by the returned
--- Scale. opts.namespace overrides the router's. true, scale | nil, err.
function R:scale(name, replicas, opts)
  if math.type(replicas) ~= "integer" or replicas < 0 then error("scale: replicas must be an integer >= 0", 2) end
  deploy_name(name)
  return deployments.scale(self.client, (opts or {}).namespace or self.ns, name, replicas)
end

--- One `kubectl rollout status` decision for a Deployment object (rollout.k8s.deployments).
M.rollout_state = deployments.rollout_state

--- Wait until the Deployment has rolled out (kubectl's rules), it exceeds its progress
--- deadline, or opts.timeout (default 5m) passes. Polls every opts.interval (poll_interval);
--- opts.progress(message) hears each new waiting message. true, message | nil, err.
function R:rollout_status(name, opts)
  opts = opts or {}
  deploy_name(name)
  return deployments.rollout_status(self.client, opts.namespace or self.ns, name, { timeout = common.duration(opts.timeout, 300),
    interval = common.duration(opts.interval, self.poll_interval), progress = opts.progress })
end

-- ---- checks --------------------------------------------------------------------------

function R:_checks()
  local item = common.item
  local items = self.client:checks(item)
  for _, i in ipairs(items) do if not i.ok and i.name == "token file" then return items end end
  local vs, err = self:_get_vs()
  items[#items + 1] = item("api " .. (self.api or "(none)"), vs ~= nil, vs and ("GET " .. self.vs_path .. " ok") or err)
  if not vs then return items end
  local i = self:_managed_index(vs.spec.http)
  local w, werr
  if i then w, werr = weights_of(vs.spec.http[i], self.dest) else werr = "no managed route" end
  items[#items + 1] = item("managed route", w ~= nil,
    w and ("route " .. i .. " serving " .. common.fmt_weights(w)) or werr)
  -- Server-side dry run: proves we may PATCH without changing anything.
  local ok, perr = self:_patch_http(vs, vs.spec.http, "?dryRun=All")
  items[#items + 1] = item("patch permission", ok ~= nil, ok and "dry-run PATCH accepted" or perr)
  return items
end

function R:_describe(out)
  out.api = self.api
  out.path = self.vs_path
  out.live_header_override = self:_read_override()
end

return M

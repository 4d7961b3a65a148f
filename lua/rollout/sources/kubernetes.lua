-- rollout.sources.kubernetes: pod restarts per version from the Kubernetes API, for the
-- runbook's "pod crash loop detected" trigger (`crash_loop = { restarts = 3, within = "5m" }`).
--
--   { type = "kubernetes", namespace = "production",
--     selectors = { baseline = { app = "dwcp-v3", version = "v2.9.0" }, canary = {...} } }
--
-- selectors default to {app = <service>, version = <the version's version>}. Credentials
-- are found as rollout.k8s.client finds them (api + token_file/ca_file, kubeconfig,
-- context, else in-cluster, else $KUBECONFIG or ~/.kube/config).
--
-- Each tick lists each version's pods (GET .../pods?labelSelector=...) and records every
-- pod's restartCount (the sum over its containers). signals(now, window) answers
-- `restarts`: the restarts in the window, per pod its count now minus its count at the last
-- tick at or before now - window (a pod first seen later counts from 0, so restarts from
-- before the rollout are not blamed on it); with history shorter than the window, since
-- the first tick. Only `restarts` is provided, so merged sources keep their own signals.
-- A pod list the API refuses is a source error of that interval, never 0 restarts.
--
-- Error policy: bad config raises from new() naming each key; API failures return nil, err.
local units = require("rollout.units")
local common = require("rollout.sources.common")
local schema = require("rollout.schema")
local client = require("rollout.k8s.client")
local res = require("rollout.k8s.resources")

local M = {}

local function check_name(v)
  if not res.name_ok(v) then return "must be a Kubernetes name (lower-case letters, digits, '-', '.')" end
end

local function check_selectors(v)
  for ver, sel in pairs(v) do
    if type(sel) ~= "table" then return schema.at(ver, "expected a table of label = value") end
    for k, x in pairs(sel) do
      if type(k) ~= "string" or type(x) ~= "string" then return schema.at(ver, "labels and values must be strings") end
    end
  end
end

local SCHEMA = common.base_schema("kubernetes")
for k, rule in pairs({
  namespace = { kind = "string", nonempty = true, required = true, check = check_name },
  selectors = { kind = "versions", check = check_selectors },
  api = { kind = "url" }, token_file = { kind = "string", nonempty = true }, ca_file = { kind = "string", nonempty = true },
  kubeconfig = { kind = "string", nonempty = true }, context = { kind = "string", nonempty = true },
  timeout = { kind = "duration" }, keep = { kind = "duration" },
}) do SCHEMA[k] = rule end

--- Problems with cfg as "key: message" strings; empty when fine. No side effects.
function M.check(cfg) return common.check(cfg, SCHEMA) end
function M.validate(cfg) return common.strings(M.check(cfg)) end

local S = {}
S.__index = S

function M.new(cfg, ctx)
  common.assert_valid("kubernetes", M.validate(cfg), 2)
  ctx = ctx or {}
  local self = setmetatable({ cfg = cfg, ctx = ctx, name = cfg.name or "kubernetes", provides = { restarts = true },
    history = {}, keep = units.duration(cfg.keep or "1h") }, S)
  self.client = client.new{ api = cfg.api, token_file = cfg.token_file, ca_file = cfg.ca_file, kubeconfig = cfg.kubeconfig,
    context = cfg.context, namespace = cfg.namespace, timeout = cfg.timeout and units.duration(cfg.timeout) or nil }
  self.selectors = {}
  for _, v in ipairs(common.VERSIONS) do
    local sel = cfg.selectors and cfg.selectors[v]
    if not sel then
      local info = common.version_info(ctx, v)
      sel = { app = ctx.service, version = info.version }
      if not sel.app or not sel.version then
        error("kubernetes source: selectors." .. v .. ": required (no service or version to select by)", 2)
      end
    end
    self.selectors[v] = sel
  end
  return self
end

--- tick(now) -> true | nil, err: record every pod's restart count of each version.
function S:tick(now)
  local rec = { t = now, counts = {} }
  for _, v in ipairs(common.VERSIONS) do
    local pods, err = res.pods(self.client, self.cfg.namespace, self.selectors[v])
    if not pods then return nil, "kubernetes: " .. err end
    local counts = {}
    for _, p in ipairs(pods) do
      local n = 0
      for _, cs in ipairs((p.status or {}).containerStatuses or {}) do n = n + (cs.restartCount or 0) end
      counts[p.metadata.name] = n
    end
    rec.counts[v] = counts
  end
  local h = self.history
  h[#h + 1] = rec
  while #h > 2 and h[2].t < now - self.keep do table.remove(h, 1) end
  return true
end

local function at_or_before(h, t)
  local found
  for _, r in ipairs(h) do
    if r.t <= t + 1e-9 then found = r else break end
  end
  return found
end

--- signals(now, window) -> {baseline = {restarts=}, canary = {restarts=}} | nil, err
function S:signals(now, window)
  local h = self.history
  local cur = at_or_before(h, now)
  if not cur then return { baseline = {}, canary = {} } end -- no tick yet: no data
  local base = at_or_before(h, now - window) or h[1]
  local out = {}
  for _, v in ipairs(common.VERSIONS) do
    local n = 0
    for pod, c in pairs(cur.counts[v]) do
      local before = base.counts[v][pod] or 0
      if c > before then n = n + (c - before) end
    end
    out[v] = { restarts = n, span = cur.t - base.t }
  end
  return out
end

function S.close() end

M.Source = S
return M

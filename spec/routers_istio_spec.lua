-- routers.istio against spec/support/k8s_contract.py: no Kubernetes API server can run
-- here, so a local HTTPS server (self-signed cert made with openssl at test time) checks
-- every request against the API's documented shapes and keeps the objects' state.
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local istio = require("rollout.routers.istio")
local routers = require("rollout.routers")
local support = require("spec.support.routers_support")

local HEADER_ROUTE = { match = { { headers = { canary = { exact = "true" } } } },
  route = { { destination = { host = "dwcp-v3-canary" }, weight = 100 } } }

describe("routers.istio", function()
  local k8s

  local function new(extra, opts)
    local cfg = { type = "istio", api = k8s.api, ca_file = k8s.ca, token_file = k8s.token_file,
      namespace = "production", virtualservice = "dwcp-v3",
      baseline = "dwcp-v3-baseline", canary = "dwcp-v3-canary", poll_interval = 0.05 }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return routers.new(cfg, opts)
  end

  -- Plain tables (drop json.array_mt) so assert.same compares content only.
  local function plain(v)
    return json.decode(json.encode(v))
  end

  setup(function() k8s = support.contract() end)
  teardown(function() support.cleanup(k8s) end)
  before_each(function()
    k8s:control("/_contract/state", support.runbook_state())
    fs.write_atomic(k8s.server_tokens, "token-1\n")
    fs.write_atomic(k8s.token_file, "token-1\n")
  end)
  after_each(function()
    local v = k8s:violations()
    assert.equals(0, #v, "contract violations: " .. json.encode(v))
  end)

  describe("validate", function()
    it("names each bad key by its path", function()
      local errs = istio.validate{ type = "istio", namespace = "Prod", baseline = 3, canary = { subset = "v2" }, bogus = 1 }
      assert.same({
        "baseline: expected a table, got integer",
        "bogus: unknown key",
        "canary.host: required string",
        "namespace: must be a Kubernetes name (lower-case letters, digits, '-', '.')",
        "virtualservice: required string",
      }, errs)
      assert.same({}, istio.validate{ namespace = "p", virtualservice = "v", baseline = "a", canary = { host = "b", subset = "v2" } })
    end)
  end)

  describe("weights", function()
    it("sets and reads back every stage, keeping the header-match route", function()
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      for _, p in ipairs({ 5, 25, 50, 75, 100, 0 }) do
        assert(r:set_weights{ baseline = 100 - p, canary = p })
        assert.same({ baseline = 100 - p, canary = p }, (r:get_weights()))
        local vs = k8s:vs()
        assert.equals(2, #vs.spec.http, "both routes kept")
        assert.same(HEADER_ROUTE, plain(vs.spec.http[1]), "the runbook's header route, untouched")
        assert.same({ { destination = { host = "dwcp-v3-baseline" }, weight = 100 - p },
                      { destination = { host = "dwcp-v3-canary" }, weight = p } }, plain(vs.spec.http[2].route))
      end
      assert.equals(6, rec.count("weight_confirmed"))
      assert.same({ baseline = 100, canary = 0 }, r:confirmed())
    end)

    it("sends merge patches with the complete http list, the resourceVersion and the token", function()
      local r = new()
      assert(r:set_weights{ baseline = 75, canary = 25 })
      local patches = {}
      for _, q in ipairs(k8s:requests()) do
        if q.method == "PATCH" then patches[#patches + 1] = q end
        if q.path:match("^/apis/") then assert.equals("Bearer token-1", q.authorization) end
      end
      assert.equals(1, #patches)
      local p = patches[#patches]
      assert.equals("/apis/networking.istio.io/v1beta1/namespaces/production/virtualservices/dwcp-v3", p.path)
      assert.equals("application/merge-patch+json", p.content_type)
      assert.is_string(p.body.metadata.resourceVersion)
      assert.equals(2, #p.body.spec.http)
      assert.same({ spec = true, metadata = true }, (function() local t = {} for k in pairs(p.body) do t[k] = true end return t end)())
    end)

    it("routes flagged requests with a header override, replaced or removed on request", function()
      local state = support.runbook_state()
      table.remove(state.virtualservices[1].spec.http, 1) -- no header route yet
      k8s:control("/_contract/state", state)
      local r = new()
      assert(r:set_weights{ baseline = 95, canary = 5 })
      assert(r:header_override{ name = "canary", value = "true" })
      local vs = k8s:vs()
      assert.same(HEADER_ROUTE, plain(vs.spec.http[1]))
      assert.same({ baseline = 95, canary = 5 }, (r:get_weights()))
      assert(r:header_override{ name = "X-Canary", value = "yes" })
      vs = k8s:vs()
      assert.equals(2, #vs.spec.http, "the old override route replaced, not added to")
      assert.same({ ["x-canary"] = { exact = "yes" } }, plain(vs.spec.http[1].match[1].headers))
      assert(r:header_override(false))
      assert.equals(1, #k8s:vs().spec.http)
      assert.same({ baseline = 95, canary = 5 }, (r:get_weights()))
    end)

    it("re-applies confirmed weights someone else changed (verify)", function()
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      assert(r:set_weights{ baseline = 50, canary = 50 })
      local other = new()
      assert(other:set_weights{ baseline = 100, canary = 0 })
      assert(r:verify())
      assert.equals(1, rec.count("weights_reapplied"))
      assert.same({ baseline = 100, canary = 0 }, rec.last("weights_reapplied").observed)
      assert.same({ baseline = 50, canary = 50 }, (r:get_weights()))
    end)

    it("keeps destination fields and names a missing managed route", function()
      local r = new{ baseline = { host = "dwcp-v3-baseline", port = 8080 } }
      local ok, err = new{ route = "missing" }:get_weights()
      assert.is_nil(ok)
      assert.matches("no route named missing", err)
      assert(r:set_weights{ baseline = 90, canary = 10 })
      assert.same({ number = 8080 }, plain(k8s:vs().spec.http[2].route[1].destination.port))
    end)
  end)

  describe("credentials", function()
    it("picks up a rotated token at once after a 401", function()
      local r = new{ token_refresh = "1h" }
      assert(r:set_weights{ baseline = 95, canary = 5 })
      fs.write_atomic(k8s.server_tokens, "token-2\n") -- the old token is revoked
      fs.write_atomic(k8s.token_file, "token-2\n")
      assert(r:set_weights{ baseline = 75, canary = 25 })
      local saw401, last
      for _, q in ipairs(k8s:requests()) do
        if q.path:match("^/apis/") then
          if q.status == 401 then saw401 = true end
          last = q
        end
      end
      assert.is_true(saw401, "the first request with the old token was refused")
      assert.equals("Bearer token-2", last.authorization)
    end)

    it("re-reads the token file every token_refresh", function()
      local r = new{ token_refresh = "200ms" }
      assert(r:get_weights())
      fs.write_atomic(k8s.server_tokens, "token-1\ntoken-2\n") -- both valid: no 401 to react to
      fs.write_atomic(k8s.token_file, "token-2\n")
      rollout.sleep(0.3)
      assert(r:get_weights())
      local reqs = k8s:requests()
      assert.equals("Bearer token-2", reqs[#reqs].authorization)
      for _, q in ipairs(reqs) do assert.truthy(q.status ~= 401, "no request was refused") end
    end)

    it("reports a wrong token as the API's 401", function()
      fs.write_atomic(k8s.token_file, "wrong\n")
      local rec = support.recorder()
      local r = new(nil, rec.opts)
      local ok, err = r:set_weights({ baseline = 95, canary = 5 }, { attempts = 2, backoff = 0.01 })
      assert.is_nil(ok)
      assert.matches("HTTP 401: Unauthorized", err)
      assert.matches("token from .*/token", err)
      assert.matches("2 attempts", err)
      assert.equals(2, rec.count("router_error"))
      assert.is_nil(r:confirmed())
      local items = r:check()
      local api
      for _, i in ipairs(items) do if i.name:match("^api") then api = i end end
      assert.is_false(api.ok)
      assert.matches("401", api.detail)
    end)

    it("refuses a server whose certificate is not signed by ca_file", function()
      local r = new{ ca_file = "/etc/ssl/certs/ca-certificates.crt" }
      local ok, err = r:get_weights()
      assert.is_nil(ok)
      assert.matches("GET /apis/networking.istio.io", err)
    end)
  end)

  describe("check", function()
    it("verifies token, CA, API, route and patch permission without changing anything", function()
      local r = new()
      local before = k8s:vs().metadata.resourceVersion
      local items = r:check()
      local names = {}
      for _, i in ipairs(items) do
        names[#names + 1] = i.name
        assert.is_true(i.ok, i.name .. ": " .. tostring(i.detail))
      end
      assert.same({ "token file", "ca file", "api " .. k8s.api, "managed route", "patch permission" }, names)
      assert.equals(before, k8s:vs().metadata.resourceVersion, "dry-run changed nothing")
      local dry = false
      for _, q in ipairs(k8s:requests()) do if q.query == "dryRun=All" then dry = true end end
      assert.is_true(dry)
    end)

    it("names a missing API outside a cluster", function()
      local r = routers.new{ type = "istio", namespace = "production", virtualservice = "dwcp-v3",
        baseline = "b", canary = "c", token_file = k8s.token_file, ca_file = k8s.ca }
      local ok, err = r:get_weights()
      assert.is_nil(ok)
      assert.matches("no Kubernetes API", err)
      local items = r:check()
      assert.is_false(items[3].ok)
      assert.equals("api (none)", items[3].name)
    end)

    it("names a missing VirtualService", function()
      local items = new{ virtualservice = "nope" }:check()
      assert.is_false(items[3].ok)
      assert.matches("404", items[3].detail)
      assert.matches('"nope" not found', items[3].detail)
    end)
  end)

  describe("deployments", function()
    it("scales through the scale subresource and waits like kubectl rollout status", function()
      local r = new()
      local ok, sc = r:scale("dwcp-v3-canary", 4)
      assert.is_true(ok)
      assert.equals("Scale", sc.kind)
      assert.equals(4, sc.spec.replicas)
      local t0 = rollout.now()
      local done, msg = r:rollout_status("dwcp-v3-canary", { timeout = 10 })
      assert.is_true(done, msg)
      assert.matches("successfully rolled out", msg)
      assert.gt(rollout.now() - t0, 0.1, "it waited for replicas to progress")
      local d
      for _, x in ipairs(k8s:control("/_contract/state").deployments) do if x.metadata.name == "dwcp-v3-canary" then d = x end end
      assert.equals(4, d.status.availableReplicas)
      local patch
      for _, q in ipairs(k8s:requests()) do if q.method == "PATCH" then patch = q end end
      assert.equals("/apis/apps/v1/namespaces/production/deployments/dwcp-v3-canary/scale", patch.path)
      assert.equals("application/merge-patch+json", patch.content_type)
      assert.same({ spec = { replicas = 4 } }, patch.body)
    end)

    it("waits out old replicas of a new template", function()
      local r = new()
      k8s:control("/_contract/deployment", { namespace = "production", name = "dwcp-v3-canary", bump = true })
      local seen = {}
      local done, msg = r:rollout_status("dwcp-v3-canary", { timeout = 10, interval = 0.02,
        progress = function(m) seen[#seen + 1] = m end })
      assert.is_true(done, msg)
      local text = table.concat(seen, "\n")
      assert.matches("new replicas have been updated", text)
      assert.matches("old replicas are pending termination", text)
    end)

    it("fails on ProgressDeadlineExceeded", function()
      local r = new()
      k8s:control("/_contract/deployment", { namespace = "production", name = "dwcp-v3-canary", stuck = true })
      assert(r:scale("dwcp-v3-canary", 5))
      local done, err = r:rollout_status("dwcp-v3-canary", { timeout = 10 })
      assert.is_nil(done)
      assert.matches('deployment "dwcp%-v3%-canary" exceeded its progress deadline', err)
    end)

    it("times out with kubectl's last message", function()
      local r = new()
      k8s:control("/_contract/deployment", { namespace = "production", name = "dwcp-v3-canary", stuck = true })
      assert(r:scale("dwcp-v3-canary", 3))
      local done, err = r:rollout_status("dwcp-v3-canary", { timeout = 0.3 })
      assert.is_nil(done)
      assert.matches("not rolled out after 0.3 s: .*replicas", err)
    end)

    it("decides rollout state exactly as kubectl does", function()
      local function d(gen, obs, spec, st, reason)
        return { metadata = { name = "x", generation = gen }, spec = { replicas = spec },
          status = { observedGeneration = obs, replicas = st[1], updatedReplicas = st[2], availableReplicas = st[3],
            conditions = reason and { { type = "Progressing", reason = reason } } or nil } }
      end
      assert.equals("waiting", (istio.rollout_state(d(2, 1, 3, { 3, 3, 3 }))))
      assert.equals("failed", (istio.rollout_state(d(2, 2, 3, { 3, 1, 1 }, "ProgressDeadlineExceeded"))))
      assert.same({ "waiting", "1 out of 3 new replicas have been updated" }, { istio.rollout_state(d(2, 2, 3, { 3, 1, 1 })) })
      assert.same({ "waiting", "2 old replicas are pending termination" }, { istio.rollout_state(d(2, 2, 3, { 5, 3, 3 })) })
      assert.same({ "waiting", "2 of 3 updated replicas are available" }, { istio.rollout_state(d(2, 2, 3, { 3, 3, 2 })) })
      assert.equals("done", (istio.rollout_state(d(2, 2, 3, { 3, 3, 3 }))))
      assert.equals("done", (istio.rollout_state(d(2, 3, 0, { 0, 0, 0 }))))
    end)
  end)

  describe("the contract server", function()
    -- A contract that accepts anything proves nothing: these are requests the API refuses.
    local function raw(method, body, ctype, token)
      return assert(http.request{ method = method, cafile = k8s.ca, bearer = token or "token-1",
        url = k8s.api .. "/apis/networking.istio.io/v1beta1/namespaces/production/virtualservices/dwcp-v3",
        body = body, headers = ctype and { ["Content-Type"] = ctype } or nil })
    end
    after_each(function() k8s:control("/_contract/state", support.runbook_state()) end)

    it("refuses what the API server refuses", function()
      local bad_weights = json.encode{ spec = { http = { { route = {
        { destination = { host = "a" }, weight = 60 }, { destination = { host = "b" }, weight = 30 } } } } } }
      assert.equals(415, raw("PATCH", bad_weights, "application/json").status)
      assert.equals(422, raw("PATCH", bad_weights, "application/merge-patch+json").status)
      assert.equals(409, raw("PATCH", json.encode{ metadata = { resourceVersion = "1" } }, "application/merge-patch+json").status)
      assert.equals(401, raw("GET", nil, nil, "nope").status)
      assert.equals(405, raw("PUT", "{}", "application/json").status)
      -- leave no violations behind for after_each: they were expected here
      local v = k8s:violations()
      assert.equals(3, #v) -- 415, 422, 405
      k8s:control("/_contract/state", support.runbook_state())
    end)
  end)
end)

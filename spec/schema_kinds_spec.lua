-- One set of base kinds (rollout.schema) for every module that declares options: the same
-- value means the same thing in a source, a router, a notifier and the playbook, and a
-- header with a line break is refused everywhere with its key path.
local playbook = require("rollout.playbook")
local prometheus = require("rollout.sources.prometheus")
local probe = require("rollout.sources.probe")
local routers = require("rollout.routers")
local schema = require("rollout.schema")

local function playbook_errors(extra)
  local raw = {
    name = "x", versions = { baseline = { version = "1" }, canary = { version = "2" } },
    stages = { { weight = 100, hold = "1m" } },
  }
  for k, v in pairs(extra) do raw[k] = v end
  local pb, errs = playbook.validate(raw, { file = "p.lua" })
  assert.is_nil(pb)
  local got = {}
  for _, e in ipairs(errs) do got[#got + 1] = e.path .. ": " .. e.msg end
  return table.concat(got, "\n")
end

describe("schema base kinds", function()
  it("refuses a source's header with a line break, naming the header's key path", function()
    assert.same({ 'headers["X-A"]: header value contains a line break (CR or LF)' },
      prometheus.validate({ type = "prometheus", url = "http://x:9090", headers = { ["X-A"] = "a\r\nEvil: 1" } }))
    assert.same({ 'headers["X-B\\nC"]: header name contains a line break (CR or LF)' },
      probe.validate({ type = "probe", urls = { baseline = "http://a/", canary = "http://b/" },
        headers = { ["X-B\nC"] = "v" } }))
    local text = playbook_errors({
      sources = { { type = "prometheus", url = "http://x:9090", headers = { Authorization = "Bearer t\r\nX-Evil: 1" } } },
    })
    assert.matches("sources%[1%]%.headers%.Authorization: header value contains a line break %(CR or LF%)", text)
  end)

  it("keeps well-formed headers and refuses non-string ones", function()
    assert.same({}, prometheus.validate({ type = "prometheus", url = "http://x:9090", headers = { ["X-A"] = "a b" } }))
    assert.same({ "headers.n: expected string header names and values, got string = integer" },
      prometheus.validate({ type = "prometheus", url = "http://x:9090", headers = { n = 1 } }))
  end)

  it("states each module's real difference as a rule option: zero durations, empty strings", function()
    -- a router's timeout may be 0 (no deadline); a source's may not
    assert.same({}, routers.validate({ type = "haproxy", socket = "/tmp/x.sock", backend = "b", baseline = "b1", canary = "c1", timeout = 0 }))
    assert.same({ "timeout: must be greater than 0" },
      prometheus.validate({ type = "prometheus", url = "http://x:9090", timeout = 0 }))
    assert.same({ "timeout: negative duration" },
      routers.validate({ type = "haproxy", socket = "/tmp/x.sock", backend = "b", baseline = "b1", canary = "c1", timeout = -1 }))
    -- strings: "" is an error only where the rule says nonempty
    assert.same({}, schema.check({ s = "" }, { s = { kind = "string" } }))
    assert.same({ "s: must not be empty" },
      schema.strings(schema.check({ s = "" }, { s = { kind = "string", nonempty = true } })))
    assert.same({ "s: must not be empty" }, schema.strings(schema.check({ s = "" }, { s = { kind = "nonempty" } })))
  end)

  it("refuses a notifier's header with a line break the same way", function()
    local text = playbook_errors({ notifications = { { type = "webhook", url = "http://x/", headers = { ["X-A"] = "a\nb" } } } })
    assert.matches('notifications%[1%]%.headers%["X%-A"%]: header value contains a line break %(CR or LF%)', text)
  end)
end)

-- rollout.schema: declarative option specs with structured {path, message} errors, and the
-- validators built on it (routers, sources) reporting full key paths the playbook maps to
-- file:line without reading its errors back from text.
local schema = require("rollout.schema")
local playbook = require("rollout.playbook")
local routers = require("rollout.routers")
local sources = require("rollout.sources")
local fs = require("rollout.fs")
local notify = require("rollout.notify")
local scenario = require("rollout.sim.scenario")
local judge = require("rollout.judge")

local function lines(errs) return schema.strings(errs) end

describe("rollout.schema", function()
  it("formats paths as the playbook writes keys", function()
    assert.equals("router.socket", schema.path_string({ "router", "socket" }))
    assert.equals("sources[2].url", schema.path_string({ "sources", 2, "url" }))
    assert.equals('env["A B"]', schema.path_string({ "env", "A B" }))
    assert.equals("", schema.path_string({}))
  end)

  it("checks types, required keys and unknown keys, each at its full path", function()
    local FIELDS = {
      socket = { kind = "string", required = true },
      timeout = { kind = "duration" },
      retries = { kind = "integer", min = 0 },
    }
    local errs = schema.check({ timeout = true, retries = -1, colour = "red" }, FIELDS, { path = { "router" } })
    assert.same({
      { path = { "router", "retries" }, message = "must be at least 0, got -1" },
      { path = { "router", "socket" }, message = "required string" },
      { path = { "router", "timeout" }, message = 'expected a duration (seconds or "250ms", "5m", "1h30m"), got boolean' },
      { path = { "router", "colour" }, message = "unknown key" },
    }, errs)
    assert.same({}, schema.check({ socket = "/run/h.sock", timeout = "5m", retries = 3 }, FIELDS))
  end)

  it("names the known keys when asked", function()
    local errs = schema.check({ colur = 1 }, { colour = { kind = "string" }, size = { kind = "integer" } }, { known = true })
    assert.same({ "colur: unknown key (known: colour, size)" }, lines(errs))
  end)

  it("parses units: durations, ratios and bytes", function()
    local FIELDS = { hold = { kind = "duration" }, max_error = { kind = "ratio" }, memory = { kind = "bytes" } }
    assert.same({}, schema.check({ hold = "5m", max_error = "1%", memory = "2Gi" }, FIELDS))
    local errs = lines(schema.check({ hold = "5 minutes", max_error = "150%", memory = 0 }, FIELDS))
    assert.equals(3, #errs)
    assert.matches("^hold: malformed duration", errs[1])
    assert.matches("^max_error: must be between 0 and 100%%, got 150%%", errs[2])
    assert.equals("memory: must be greater than 0", errs[3])
  end)

  it("checks enums, numbers in range and custom checks", function()
    local FIELDS = {
      mode = { kind = "string", enum = { "fast", "safe" } },
      weight = { kind = "number", min = 0, max = 100 },
      url = { kind = "string", check = function(v) if not v:match("^https?://") then return "must start with http://" end end },
    }
    assert.same({
      'mode: must be "fast" or "safe", got slow',
      "url: must start with http://",
      "weight: must be between 0 and 100, got 150",
    }, lines(schema.check({ mode = "slow", weight = 150, url = "ftp://x" }, FIELDS)))
  end)

  it("walks nested tables and lists, and stray keys of a list", function()
    local FIELDS = {
      limits = { kind = "table", fields = { memory = { kind = "bytes" }, cpu = { kind = "number" } } },
      targets = { kind = "list", item = { kind = "table", fields = { url = { kind = "url", required = true } } } },
    }
    local errs = schema.check({
      limits = { memory = "lots", gpu = 1 },
      targets = { { url = "http://a" }, { url = "b" }, {}, x = 1 },
    }, FIELDS, { path = { "sources", 2 } })
    assert.same({
      "sources[2].limits.memory: malformed size (want e.g. 512Mi, 2Gi, 1G): \"lots\"",
      "sources[2].limits.gpu: unknown key",
      "sources[2].targets.x: expected a list (1..n); this key does not belong",
      'sources[2].targets[2].url: expected an http:// or https:// URL, got "b"',
      "sources[2].targets[3].url: required url",
    }, lines(errs))
  end)

  it("lets a kind or check report a problem inside the value (schema.at)", function()
    local FIELDS = { argv = { kind = "table", check = function(v)
      for i, a in ipairs(v) do if type(a) ~= "string" then return schema.at(i, "expected a string") end end
    end } }
    assert.same({ { path = { "hook", "argv", 3 }, message = "expected a string" } },
      schema.check({ argv = { "kubectl", "scale", 3 } }, FIELDS, { path = { "hook" } }))
  end)

  it("keeps a module's wording with its own kinds", function()
    local kinds = schema.kinds({ string = function(v) if v == "" then return "must not be empty" end end })
    assert.same({ "name: must not be empty" }, lines(schema.check({ name = "" }, { name = { kind = "string" } }, { kinds = kinds })))
    assert.same({}, schema.check({ name = "" }, { name = { kind = "string" } }))
    assert.has_error(function() schema.check({ x = 1 }, { x = { kind = "colour" } }) end)
  end)

  it("normalises in the same walk: units parsed, defaults filled, parse hooks", function()
    local RULE = { kind = "table", fields = {
      hold = { kind = "duration", required = true },
      delay = { kind = "duration", zero = true, default = 30 },
      share = { kind = "ratio" },
      memory = { kind = "bytes" },
      level = { kind = "string", parse = function(v) return v:upper() end },
      mode = { kind = "string", enum = { "a", "b", "c" }, default = "a" },
    } }
    local out, errs = schema.normalise({ hold = "5m", delay = 0, share = "2%", memory = "1Ki", level = "x" }, RULE)
    assert.same({}, errs)
    assert.same({ hold = 300, delay = 0, share = 0.02, memory = 1024, level = "X", mode = "a" }, out)
    out, errs = schema.normalise({ hold = 0, delay = "soon", mode = "d" }, RULE, { path = { "stage" } })
    assert.same({
      "stage.delay: malformed duration (want e.g. 250ms, 10s, 5m, 1h30m): \"soon\"",
      "stage.hold: must be greater than 0",
      'stage.mode: must be one of "a", "b", "c", got d',
    }, lines(errs))
    assert.same({}, out, "what could not be read is left out")
    -- check() only reports: no parse hook, no default
    assert.same({}, schema.check({ hold = 1, level = "x" }, RULE.fields))
    -- a parse hook may refuse
    local _, perrs = schema.normalise("x", { kind = "string", parse = function() return nil, "not a colour" end })
    assert.same({ "not a colour" }, lines(perrs))
  end)

  it("one_of, map / keys, prepare and required as a function", function()
    local ITEM = { kind = "table", fields = { name = { kind = "string" }, n = { kind = "integer" } } }
    local RULE = { kind = "table", fields = {
      judge = { one_of = { { kind = "boolean" }, { kind = "table", fields = { on = { kind = "boolean" } } } },
        expected = "true, false or a table" },
      items = { one_of = {
        { when = function(v) return type(v) == "table" and #v > 0 end, kind = "list",
          item = { kind = "table", fields = ITEM.fields, check = function(v) if not v.name then return schema.at("name", "required in a list") end end } },
        { kind = "table", keys = { kind = "string" }, map = ITEM,
          parse = function(m) local l = {} for k, x in pairs(m) do x.name = x.name or k; l[#l + 1] = x end return l end },
      }, expected = "a list or a table" },
      sources = { prepare = function(v) if type(v) == "table" and v.type then return { v } end return v end,
        kind = "list", item = { kind = "table", fields = { type = { kind = "string", required = true } } } },
      stages = { kind = "list", required = function(parent) return parent.strategy ~= "other" end },
      strategy = { kind = "string" },
    } }
    local out, errs = schema.normalise({ judge = true, items = { a = { n = 1 } }, sources = { type = "probe" }, stages = {} }, RULE)
    assert.same({}, errs)
    assert.same({ { name = "a", n = 1 } }, out.items)
    assert.same({ { type = "probe" } }, out.sources)
    assert.is_true(out.judge)
    assert.same({
      "items[1].name: required in a list",
      "judge: expected true, false or a table, got string",
    }, lines(select(2, schema.normalise({ judge = "yes", items = { { n = 1 } }, stages = {} }, RULE))))
    assert.same({
      "items[2]: expected a string, got integer",
      "items.x.n: expected an integer, got string",
      "stages: required list",
    }, lines(select(2, schema.normalise({ items = { x = { n = "1" }, [2] = {} } }, RULE))))
    assert.same({}, select(2, schema.normalise({ strategy = "other" }, RULE)))
  end)

  it("puts unknown keys in opts.unknown, worded by the record, when asked", function()
    local unknown = {}
    local errs = schema.check({ a = 1, b = 2 }, { a = { kind = "integer" } },
      { unknown_keys = unknown, known = false })
    assert.same({}, errs)
    assert.same({ "b: unknown key" }, lines(unknown))
    unknown = {}
    schema.check_value({ x = { c = 1 } }, { kind = "table", fields = { x = { kind = "table", fields = {},
      unknown = "not used here" } } }, { unknown_keys = unknown })
    assert.same({ "x.c: not used here" }, lines(unknown))
  end)

  it("says what a non-table is", function()
    assert.same({ "sources[1]: expected a table, got string" }, lines(schema.check("x", {}, { path = { "sources", 1 } })))
  end)
end)

describe("routers and sources on rollout.schema", function()
  it("return structured errors with paths inside the table", function()
    assert.same({
      { path = { "backend" }, message = "required string" },
      { path = { "socket" }, message = "expected a string, got integer" },
      { path = { "bogus" }, message = "unknown key" },
    }, routers.check({ type = "haproxy", socket = 1, baseline = "a", canary = "b", bogus = true }))
    assert.same({ { path = { "set", 2 }, message = "unknown placeholder {colour}" } },
      routers.check({ type = "exec", set = { "echo", "{colour}" }, get = { "cat" } }))
    assert.same({ { path = { "type" }, message = "unknown router type 'f5' (one of exec, haproxy, istio, nginx)" } },
      routers.check({ type = "f5" }))
    assert.same({ { path = { "matchers", 2 }, message = "expected a string such as 'severity=\"critical\"'" } },
      sources.check({ type = "alertmanager", url = "http://x:9093", matchers = { 'severity="critical"', 42 } }))
    assert.same({ { path = { "targets", "canary", 2 }, message = 'expected an http:// or https:// URL, got "x"' } },
      sources.check({ type = "scrape", targets = { baseline = "http://a/metrics", canary = { "http://b/metrics", "x" } },
        version_label = nil }))
  end)

  it("notifiers: the same errors, with the known keys and what an enum got", function()
    local errs = notify.check({ { type = "webhook", url = "http://x/", method = "GET", retrys = 3 } })
    assert.same({
      { path = { 1, "method" }, message = 'must be "POST" or "PUT", got GET' },
      { path = { 1, "retrys" }, message = "unknown key (known: backoff, events, headers, max_backoff, method, name, "
        .. "queue_limit, retries, timeout, token, token_env, token_file, type, url, url_env, url_file)" },
    }, errs)
  end)

  it("the judge: key paths inside metric lists and maps, and the abTest", function()
    local errs = judge.check({ metrics = { { name = "latency", direction = "up", groups = { "a", 3 } } }, groups = { a = 100 } })
    assert.same({
      { path = { "metrics", 1, "direction" }, message = 'must be one of "increase", "decrease", "either", got up' },
      { path = { "metrics", 1, "groups", 2 }, message = "expected a string, got integer" },
    }, errs)
    assert.same({ "metrics.tail.colour: unknown key (known: allowed_decrease, allowed_increase, confidence, "
      .. "critical, critical_decrease, critical_increase, description, direction, effect, group, groups, "
      .. "min_samples, must_have_data, name, nan, outlier_factor, outliers, signal, significance, tolerance)" },
      judge.validate({ metrics = { tail = { signal = "p99", colour = "red" } } }))
    assert.same({ { path = { "gate", 2 }, message = "expected a stage name, got integer" } }, judge.check_ab_test({ gate = { "Half", 5 } }))
  end)

  it("reach the playbook's file:line mapping with their full key paths", function()
    local dir = assert(fs.mkdtemp("schema-spec"))
    finally(function() fs.rmtree(dir) end)
    local file = dir .. "/pb.lua"
    assert(fs.write_atomic(file, [[
return {
  versions = { baseline = { url = "http://a" }, canary = { url = "http://b" } },
  router = {
    type = "exec",
    set = { "echo", "{colour}" },
    get = { "cat" },
    bogus = 1,
  },
  sources = {
    { type = "probe" },
    { type = "alertmanager", url = "http://x:9093",
      matchers = { 'severity="critical"', 42 } },
  },
  stages = { { weight = 100, hold = "1s" } },
}
]]))
    local pb, errs = playbook.load(file)
    assert.is_nil(pb)
    local m = {}
    for _, e in ipairs(errs) do m[#m + 1] = playbook.format_error(e) end
    local text = table.concat(m, "\n")
    for _, want in ipairs({
      file .. ":5: router.set[2]: unknown placeholder {colour}",
      file .. ":7: router.bogus: unknown key",
      file .. ":12: sources[2].matchers[2]: expected a string such as 'severity=\"critical\"'",
    }) do
      assert.truthy(text:find(want, 1, true), "missing: " .. want .. "\ngot:\n" .. text)
    end
  end)

  it("scenarios: every problem at its key path and line, nothing normalised before", function()
    local dir = assert(fs.mkdtemp("schema-spec"))
    finally(function() fs.rmtree(dir) end)
    local file = dir .. "/sc.lua"
    assert(fs.write_atomic(file, [[
return {
  traffic = { rps = -5 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = "2 percent", latency = { p50 = "40ms", p99 = "20ms", p90 = "30ms" },
    changes = { { at = "10m", error_rate = 0.2 }, { error_rate = 0.3 } } },
  alerts = { { at = "31m", severity = "critical" } },
  colour = "red",
}
]]))
    local sc, errs = scenario.load(file)
    assert.is_nil(sc)
    local m = {}
    for _, e in ipairs(errs) do m[#m + 1] = scenario.format_error(e) end
    local text = table.concat(m, "\n")
    for _, want in ipairs({
      file .. ":2: traffic.rps: must be >= 0, got -5",
      file .. ":4: canary.error_rate: malformed ratio",
      file .. ":4: canary.latency.p90: unknown key (known: p50, p99)",
      file .. ":5: canary.changes[2].at: required time",
      file .. ":7: colour: unknown key",
    }) do
      assert.truthy(text:find(want, 1, true), "missing: " .. want .. "\ngot:\n" .. text)
    end
    -- p99 below p50 is found once the keys are right
    local _, e2 = scenario.check({ traffic = { rps = 1 }, baseline = { latency = { p50 = "40ms" } },
      canary = { latency = { p50 = "40ms", p99 = "20ms" } } })
    assert.same({ { path = "canary.latency.p99", keys = { "canary", "latency", "p99" }, msg = "must not be below p50" } }, e2)
    local ok = assert(scenario.check({ traffic = { rps = 1 }, baseline = { latency = { p50 = "40ms" } },
      canary = { latency = { p50 = "40ms" }, changes = { { at = "2m", error_rate = "5%" }, { at = 0, health = 0.5 } } } }))
    assert.same({ 0, 120 }, { ok.canary.changes[1].at, ok.canary.changes[2].at })
    assert.equals(0.05, ok.canary.changes[2].error_rate)
  end)
end)

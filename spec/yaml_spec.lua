local yaml = require("rollout.yaml")
local json = require("rollout.json")

local ROOT = debug.getinfo(1, "S").source:match("^@(.-)/?spec/[^/]*$") or "."
local FIXTURES = (ROOT == "" and "." or ROOT) .. "/spec/fixtures/yaml/"

local function value_of(text)
  local doc, err = yaml.load("v: " .. text)
  assert.is_nil(err, text)
  return doc.v
end

local function load_error(text, name)
  local v, err = yaml.load(text, name)
  assert.is_nil(v, text)
  assert.is_string(err, text)
  return err
end

describe("yaml.load typing (YAML 1.2 core schema)", function()
  it("types plain scalars", function()
    local null, nan = yaml.null, "nan"
    local cases = {
      { "~", null }, { "null", null }, { "Null", null }, { "NULL", null },
      { "true", true }, { "True", true }, { "TRUE", true },
      { "false", false }, { "False", false }, { "FALSE", false },
      { "yes", "yes" }, { "no", "no" }, { "on", "on" }, { "off", "off" }, { "y", "y" }, { "nULL", "nULL" },
      { "0", 0, "integer" }, { "42", 42, "integer" }, { "+12", 12, "integer" }, { "-12", -12, "integer" },
      { "012", 12, "integer" }, { "0o17", 15, "integer" }, { "0x1F", 31, "integer" }, { "0xff", 255, "integer" },
      { "9223372036854775807", math.maxinteger, "integer" }, { "-9223372036854775808", math.mininteger, "integer" },
      { "170000000000000001", 170000000000000001, "integer" },
      { "9007199254740993", 9007199254740993, "integer" },
      { "0x7FFFFFFFFFFFFFFF", math.maxinteger, "integer" },
      { "9223372036854775808", 2^63, "float" }, { "0x8000000000000000", 2^63, "float" },
      { "1.5", 1.5, "float" }, { "-1.5", -1.5, "float" }, { ".5", 0.5, "float" }, { "1.", 1.0, "float" },
      { "1e3", 1000.0, "float" }, { "1E-2", 0.01, "float" }, { "+2.5e+2", 250.0, "float" }, { "0.05", 0.05, "float" },
      { ".inf", math.huge }, { "+.Inf", math.huge }, { "-.INF", -math.huge }, { ".nan", nan }, { ".NaN", nan },
      { "-.nan", "-.nan" }, { "0o8", "0o8" }, { "0x", "0x" }, { "0b101", "0b101" }, { "1_000", "1_000" },
      { "--1", "--1" }, { "1e", "1e" }, { ".", "." }, { "1.2.3", "1.2.3" }, { "0X1F", "0X1F" },
      { "5m", "5m" }, { "80%", "80%" }, { "500ms", "500ms" }, { "v2.9.0", "v2.9.0" },
      { "${DEPLOY_ID}", "${DEPLOY_ID}" }, { "error_rate > 0.05", "error_rate > 0.05" }, { "2001-12-14", "2001-12-14" },
    }
    for _, c in ipairs(cases) do
      local v = value_of(c[1])
      if c[2] == nan then
        assert.is_true(v ~= v, c[1] .. " is NaN")
      else
        assert.equals(c[2], v, c[1])
      end
      if c[3] then assert.equals(c[3], math.type(v), c[1]) end
    end
    assert.equals(yaml.null, yaml.load("v:").v)
  end)

  it("keeps quoted and block scalars strings", function()
    assert.equals("1", value_of("'1'"))
    assert.equals("true", value_of('"true"'))
    assert.equals("~", value_of('"~"'))
    assert.equals("", value_of("''"))
    assert.equals("a\tb\0c", value_of('"a\\tb\\0c"'))
    assert.equals("123\n", yaml.load("v: |\n  123\n").v)
    assert.equals("1 2\n", yaml.load("v: >\n  1\n  2\n").v)
  end)

  it("honours tags", function()
    assert.equals("123", value_of("!!str 123"))
    assert.equals("true", value_of("!!str true"))
    assert.equals("12", value_of("! 12"))
    assert.equals(42, value_of('!!int "42"'))
    assert.equals("integer", math.type(value_of('!!int "0x10"')))
    assert.equals(1.0, value_of("!!float 1"))
    assert.equals("float", math.type(value_of("!!float 1")))
    assert.equals(-math.huge, value_of("!!float -.inf"))
    assert.is_true(value_of('!!bool "true"'))
    assert.equals(yaml.null, value_of('!!null ""'))
    assert.equals("2001-12-14", value_of("!!timestamp 2001-12-14"))
    assert.equals("2", value_of("!<tag:yaml.org,2002:str> 2"))
    assert.same({ 1 }, value_of("!!seq [1]"))
    assert.same({ a = 1 }, value_of("!!map {a: 1}"))
  end)

  it("rejects values that do not fit their tag, and unknown tags", function()
    assert.equals("<string>:1:4: invalid !!int value 'abc'", load_error("v: !!int abc"))
    assert.matches("invalid !!int value '1.5'", load_error("v: !!int 1.5"))
    assert.matches("invalid !!bool value 'yes'", load_error("v: !!bool yes"))
    assert.matches("invalid !!float value 'x'", load_error("v: !!float x"))
    assert.matches("invalid !!null value '0'", load_error("v: !!null 0"))
    assert.equals("<string>:1:4: unsupported tag !foo", load_error("v: !foo x"))
    assert.matches("unsupported tag !!binary", load_error("v: !!binary aGk="))
    assert.matches("unsupported tag !!map on a sequence", load_error("v: !!map [1]"))
    assert.matches("unsupported tag !Ref on a mapping", load_error("v: !Ref {a: 1}"))
  end)
end)

describe("yaml.load structure", function()
  it("builds mappings and sequences; sequences carry json.array_mt", function()
    local doc = yaml.load("name: web\nports: [80, 443]\nenv:\n  - {k: a, v: 1}\n  - k: b\n    v: 2\n"
      .. "empty: []\nnone: {}\n")
    assert.same({ name = "web", ports = { 80, 443 }, env = { { k = "a", v = 1 }, { k = "b", v = 2 } },
      empty = {}, none = {} }, doc)
    assert.equals(yaml.array_mt, getmetatable(doc.ports))
    assert.equals(json.array_mt, getmetatable(doc.empty))
    assert.is_nil(getmetatable(doc.none))
    assert.is_nil(getmetatable(doc))
    assert.equals('{"empty":[],"env":[{"k":"a","v":1},{"k":"b","v":2}],"name":"web","none":{},"ports":[80,443]}',
      json.encode(doc, { sort = true }))
  end)

  it("keeps null values as yaml.null (== json.null), so keys and sequence slots survive", function()
    local doc = yaml.load("a:\nb: ~\nc: [~, 1, null]\n")
    assert.equals(json.null, yaml.null)
    assert.equals(yaml.null, doc.a)
    assert.equals(yaml.null, doc.b)
    assert.equals(3, #doc.c)
    assert.equals('{"a":null,"b":null,"c":[null,1,null]}', json.encode(doc, { sort = true }))
  end)

  it("makes every mapping key a string", function()
    local doc = yaml.load("200: ok\ntrue: yes\n1.50: x\n~: n\n'q': 1\n")
    assert.same({ ["200"] = "ok", ["true"] = "yes", ["1.50"] = "x", ["~"] = "n", q = 1 }, doc)
  end)

  it("rejects duplicate and non-scalar keys with their position", function()
    assert.equals("<string>:2:1: duplicate key 'a'", load_error("a: 1\na: 2\n"))
    assert.equals("<string>:1:9: duplicate key 'x'", load_error("{x: 1,  x: 2}"))
    assert.equals("<string>:1:3: mapping keys must be scalars", load_error("? [a]\n: 1\n"))
    assert.matches("mapping keys must be scalars", load_error("{[1]: 2}"))
  end)

  it("shares anchored values through aliases", function()
    local doc = yaml.load("base: &b {x: 1}\nuse: *b\nn: &n 5\nm: *n\ns: &s [1, 2]\nt: [*s, *s]\n")
    assert.is_true(rawequal(doc.base, doc.use))
    assert.equals(5, doc.m)
    assert.is_true(rawequal(doc.t[1], doc.s))
    assert.is_true(rawequal(doc.t[2], doc.s))
    local redefined = yaml.load("a: &x 1\nb: *x\nc: &x 2\nd: *x\n")
    assert.same({ a = 1, b = 1, c = 2, d = 2 }, redefined)
    assert.same({ x = "key", key = "v" }, yaml.load("x: &k key\n*k : v\n")) -- an alias as a key
  end)

  it("reports undefined and self-referencing aliases", function()
    assert.equals("<string>:2:4: undefined alias *nope", load_error("a: 1\nb: *nope\n"))
    assert.matches("undefined alias %*a", load_error("&a [*a]"))
    local v, err = yaml.load_all("---\na: &d 1\n---\nb: *d\n") -- anchors do not cross documents
    assert.is_nil(v)
    assert.equals("<string>:4:4: undefined alias *d", err)
  end)

  it("merges << keys: explicit keys win, then earlier merges", function()
    local doc = yaml.load([[
defaults: &d {timeout: 5s, retries: 3, verbose: false}
more: &m {retries: 9, extra: true}
one:
  <<: *d
  retries: 1
many:
  timeout: 1s
  <<: [*m, *d]
]])
    assert.same({ timeout = "5s", retries = 1, verbose = false }, doc.one)
    assert.same({ timeout = "1s", retries = 9, extra = true, verbose = false }, doc.many)
    assert.equals("<string>:1:1: << must be followed by a mapping or a list of mappings", load_error("<<: 5\n"))
    assert.matches("<< must be followed by", load_error("<<: [{a: 1}, 2]\n"))
    assert.matches("<< must be followed by", load_error("<<: [1, 2]\n"))
  end)

  it("stops alias bombs by counting expanded nodes", function()
    local t0 = os.clock()
    local v, err = yaml.load_file(FIXTURES .. "billion-laughs.yaml")
    assert.is_nil(v)
    assert.matches("billion%-laughs%.yaml:%d+:%d+: more than 1000000 nodes with aliases expanded %(alias bomb%?", err)
    assert.lt(os.clock() - t0, 1)
    v, err = yaml.load("[1, 2, 3, 4, 5]", { max_nodes = 5 })
    assert.is_nil(v)
    assert.matches("more than 5 nodes", err)
    assert.same({ 1, 2, 3, 4, 5 }, yaml.load("[1, 2, 3, 4, 5]", { max_nodes = 6 }))
    assert.same({ { 1, 2 }, { 1, 2 } }, yaml.load("- &a [1, 2]\n- *a\n", { max_nodes = 7 }))
    v, err = yaml.load("- &a [1, 2]\n- *a\n", { max_nodes = 6 })
    assert.is_nil(v)
    assert.matches("<string>:2:3: more than 6 nodes", err)
  end)

  it("caps nesting at 512 levels", function()
    assert.is_table(yaml.load(string.rep("[", 512) .. string.rep("]", 512)))
    assert.equals("<string>:1:513: nesting deeper than 512 levels",
      load_error(string.rep("[", 513) .. string.rep("]", 513)))
    assert.matches("nesting deeper than 512", load_error(string.rep("{a: ", 600) .. string.rep("}", 600)))
  end)
end)

describe("yaml documents", function()
  it("yaml.load returns the first document, yaml.load_all every one", function()
    local text = "---\na: 1\n---\nb: 2\n...\n--- 3\n"
    assert.same({ a = 1 }, yaml.load(text))
    local docs = yaml.load_all(text)
    assert.same({ { a = 1 }, { b = 2 }, 3 }, docs)
    assert.equals(json.array_mt, getmetatable(docs))
    local f = assert(io.open(FIXTURES .. "multi.yaml"))
    local all = yaml.load_all(f:read("a"))
    f:close()
    assert.equals(2, #all)
    assert.equals("v3.0.0", all[2].version)
  end)

  it("gives yaml.null for an empty stream or document and {} from load_all", function()
    assert.equals(yaml.null, yaml.load(""))
    assert.equals(yaml.null, yaml.load("# only a comment\n"))
    assert.equals(yaml.null, yaml.load("---\n"))
    assert.same({}, yaml.load_all(""))
    assert.same({ yaml.null, 1 }, yaml.load_all("---\n---\n1\n"))
  end)

  it("yaml.load does not read past the first document; load_all does", function()
    local text = "a: 1\n---\nb: [\n"
    assert.same({ a = 1 }, yaml.load(text))
    local v, err = yaml.load_all(text, "two.yaml")
    assert.is_nil(v)
    assert.matches("^two%.yaml:4:1: ", err)
  end)
end)

describe("yaml errors", function()
  it("carry name:line:col", function()
    assert.equals("conf.yaml:2:3: mapping values are not allowed in this context",
      load_error("a: 1\n b: 2\n", "conf.yaml"))
    assert.equals("<string>:2:1: found character that cannot start any token"
      .. " (while scanning for the next token at line 2)", load_error("a:\n\tb: 1\n"))
    assert.equals("<string>:2:2: did not find expected ',' or ']' (while parsing a flow sequence at line 1)",
      load_error("a: [1, 2\nb: 3"))
    assert.equals("<string>:2:1: did not find expected '-' indicator (while parsing a block collection at line 1)",
      load_error("- a\nb: c\n"))
    assert.matches("^<string>:1:6: found unexpected end of stream", load_error("a: 'x"))
    assert.equals("<string>:1:11: mapping values are not allowed in this context", load_error("key: value: x"))
    assert.equals("x.yaml:2:4: invalid leading UTF-8 octet", load_error("a: 1\nb: \xff\n", "x.yaml"))
  end)

  it("raise on wrong argument types and unknown options", function()
    assert.has_error(function() yaml.load(5) end, "string expected")
    assert.has_error(function() yaml.load("a: 1", nil, { bogus = true }) end, "yaml.load: unknown option 'bogus'")
    assert.has_error(function() yaml.load("a: 1", { max_nodes = 0 }) end, "option max_nodes must be a positive integer")
    assert.has_error(function() yaml.load_all("a: 1", "n", 5) end, "table expected")
    assert.has_error(function() yaml.load_file() end, "string expected")
  end)
end)

describe("yaml line positions", function()
  local text = table.concat({
    "name: checkout",  -- 1
    "spec:",           -- 2
    "  # stages",      -- 3
    "  stages:",       -- 4
    "    - name: a",   -- 5
    "      pct: 5",    -- 6
    "    - name: b",   -- 7
    "      pct: 25",   -- 8
    "  base: &b {x: 1,",  -- 9
    "    y: 2}",       -- 10
    "  merged:",       -- 11
    "    <<: *b",      -- 12
    "    z: 3",        -- 13
  }, "\n") .. "\n"

  it("maps each decoded table to {key -> line}", function()
    local doc, lines = yaml.load(text, "conf.yaml", { lines = true })
    assert.equals(1, lines[doc].name)
    assert.equals(2, lines[doc].spec)
    assert.equals(4, lines[doc.spec].stages)
    assert.equals(5, lines[doc.spec.stages][1])
    assert.equals(7, lines[doc.spec.stages][2])
    assert.equals(7, lines[doc.spec.stages[2]].name)
    assert.equals(8, lines[doc.spec.stages[2]].pct)
    assert.equals(10, lines[doc.spec.base].y)
    assert.equals(13, lines[doc.spec.merged].z)
    assert.equals(10, lines[doc.spec.merged].y) -- merged keys keep the line that wrote them
    assert.is_nil(lines[doc.spec.merged]["<<"])
  end)

  it("accepts opts in place of the name, and returns one value without lines", function()
    local doc, lines = yaml.load(text, { lines = true })
    assert.equals(6, lines[doc.spec.stages[1]].pct)
    assert.equals(1, select("#", yaml.load(text)))
    local docs, all_lines = yaml.load_all("a: 1\n---\nb: 2\n", { lines = true })
    assert.equals(3, all_lines[docs[2]].b)
  end)
end)

describe("yaml.load_file", function()
  it("returns nil, err for a missing file or a directory", function()
    local v, err = yaml.load_file("/nonexistent/rollout.yaml")
    assert.is_nil(v)
    assert.equals("/nonexistent/rollout.yaml: No such file or directory", err)
    v, err = yaml.load_file(FIXTURES)
    assert.is_nil(v)
    assert.matches("Is a directory", err)
  end)

  it("names the file in errors: file:line for a bad key", function()
    local v, err = yaml.load_file(FIXTURES .. "duplicate-key.yaml")
    assert.is_nil(v)
    assert.matches("duplicate%-key%.yaml:6:5: duplicate key 'hold'$", err)
  end)

  it("loads the runbook's canary-config.yaml", function()
    local cfg, lines = yaml.load_file(FIXTURES .. "canary-config.yaml", { lines = true })
    assert.is_table(cfg, lines)
    assert.equals("CanaryDeployment", cfg.kind)
    assert.equals("${DEPLOY_ID}", cfg.metadata.labels["deployment-id"])
    local spec = cfg.spec
    assert.equals(5, #spec.stages)
    assert.equals(5, spec.stages[1].trafficPercent)
    assert.equals("integer", math.type(spec.stages[1].trafficPercent))
    assert.equals("5m", spec.stages[1].duration)
    assert.equals(0.99, spec.stages[1].validation.healthThreshold)
    assert.equals("500ms", spec.stages[1].validation.latencyP99Max)
    assert.same({ 5, 25, 50, 75, 100 }, { spec.stages[1].trafficPercent, spec.stages[2].trafficPercent,
      spec.stages[3].trafficPercent, spec.stages[4].trafficPercent, spec.stages[5].trafficPercent })
    assert.equals("latency_p99 > 1s", spec.rollback.triggers[2].condition)
    assert.is_true(spec.rollback.autoRollback)
    assert.equals(0.05, spec.abTest.significanceLevel)
    assert.equals(10000, spec.abTest.minimumSampleSize)
    assert.equals("80%", spec.goldenSignals.saturation.cpuMax)
    assert.is_true(spec.featureFlags.dwcp_v3_protocol)
    assert.equals("novacron/dwcp:v3.0.0", spec.canary.image)
    assert.equals(96, lines[spec.abTest].significanceLevel)
    assert.equals(19, lines[spec].stages)
    assert.equals(29, lines[spec.stages][2])
    assert.equals(82, lines[spec.rollback.triggers[2]].condition)
  end)
end)

local json = require("rollout.json")
local yaml = require("rollout.yaml")

local ROOT = debug.getinfo(1, "S").source:match("^@(.-)/?spec/[^/]*$") or "."
local FIXTURES = (ROOT == "" and "." or ROOT) .. "/spec/fixtures/json/"

local function read(name)
  local f = assert(io.open(FIXTURES .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function nested(open, close, n) return string.rep(open, n) .. string.rep(close, n) end

describe("json.decode", function()
  it("keeps integers integers and floats floats", function()
    local cases = {
      { "1", 1, "integer" }, { "-0", 0, "integer" }, { "0", 0, "integer" }, { "-17", -17, "integer" },
      { "1.0", 1.0, "float" }, { "1e3", 1000.0, "float" }, { "1E+3", 1000.0, "float" },
      { "0.5", 0.5, "float" }, { "-1.5e-3", -0.0015, "float" }, { "2.5E2", 250.0, "float" },
    }
    for _, c in ipairs(cases) do
      local v = json.decode(c[1])
      assert.equals(c[2], v, c[1])
      assert.equals(c[3], math.type(v), c[1])
    end
  end)

  it("keeps integers beyond 2^53 exact", function()
    assert.equals(9007199254740993, json.decode("9007199254740993")) -- 2^53 + 1
    assert.equals(170000000000000001, json.decode("170000000000000001"))
    assert.equals(math.maxinteger, json.decode("9223372036854775807"))
    assert.equals(math.mininteger, json.decode("-9223372036854775808"))
    assert.equals("integer", math.type(json.decode("-9223372036854775808")))
    local t = json.decode("[9007199254740993, 9007199254740992]")
    assert.is_true(t[1] ~= t[2])
  end)

  it("turns integers beyond int64 into floats, or strings with bigint = 'string'", function()
    local big = json.decode("9223372036854775808")
    assert.equals("float", math.type(big))
    assert.equals(2^63, big)
    assert.equals("float", math.type(json.decode("-9223372036854775809")))
    assert.equals("9223372036854775808", json.decode("9223372036854775808", { bigint = "string" }))
    assert.equals(5, json.decode("5", { bigint = "string" }))
    assert.equals(1.5, json.decode("1.5", { bigint = "string" }))
    assert.equals(math.huge, json.decode("1e400"))
  end)

  it("decodes etcd's lease ids exactly and its uint64 cluster ids as strings on request", function()
    local text = read("etcd-lease-grant.json")
    local lease = json.decode(text)
    assert.equals(7587869395420563220, lease.ID)
    assert.equals("integer", math.type(lease.ID))
    assert.equals(60, lease.TTL)
    assert.equals("float", math.type(lease.cluster_id))
    lease = json.decode(text, { bigint = "string" })
    assert.equals("14841639068965178418", lease.cluster_id)
    assert.equals(7587869395420563220, lease.ID)
  end)

  it("decodes a Prometheus API response", function()
    local r = json.decode(read("prometheus-vector.json"))
    assert.equals("success", r.status)
    assert.equals(2, #r.data.result)
    assert.equals("canary", r.data.result[1].metric.version)
    assert.equals(1712345678.123, r.data.result[1].value[1])
    assert.equals("0.0421", r.data.result[1].value[2])
  end)

  it("decodes escapes, \\u escapes and surrogate pairs to UTF-8", function()
    assert.equals("\"\\/\b\f\n\r\t", json.decode([["\"\\\/\b\f\n\r\t"]]))
    assert.equals("é€", json.decode([["\u00e9\u20AC"]]))
    assert.equals("\u{1F600}", json.decode([["\ud83d\ude00"]]))
    assert.equals("\u{10FFFF}", json.decode([["\uDBFF\uDFFF"]]))
    assert.equals("a\0b", json.decode([["a\u0000b"]]))
    assert.equals("x\u{7FF}y", json.decode([["x\u07ffy"]]))
    assert.equals("raw é€😀 \127", json.decode('"raw é€😀 \127"'))
    assert.equals("", json.decode('""'))
  end)

  it("decodes null to the json.null sentinel, shared with yaml", function()
    assert.equals(json.null, json.decode("null"))
    assert.equals("null", tostring(json.null))
    assert.equals(yaml.null, json.null)
    local t = json.decode('{"a": null, "b": [null, 1, null]}')
    assert.equals(json.null, t.a)
    assert.equals(3, #t.b)
    assert.equals(json.null, t.b[3])
    assert.is_false(json.decode("false"))
    assert.is_true(json.decode(" true "))
  end)

  it("marks arrays with json.array_mt and leaves objects plain", function()
    local t = json.decode('{"list": [], "obj": {}, "xs": [1, [2]]}')
    assert.equals(json.array_mt, getmetatable(t.list))
    assert.equals(json.array_mt, getmetatable(t.xs[2]))
    assert.is_nil(getmetatable(t.obj))
    assert.is_nil(getmetatable(t))
    assert.same({ 1, { 2 } }, t.xs)
  end)

  it("takes the last of repeated keys, skips a BOM and accepts all JSON whitespace", function()
    assert.equals(2, json.decode('{"a": 1, "a": 2}').a)
    assert.equals(1, json.decode("\xEF\xBB\xBF[1]")[1])
    assert.same({ a = { 1, 2 } }, json.decode(' \t\r\n{ "a" :\n[ 1 ,\t2 ] }\r\n '))
  end)

  it("reports every malformed input with its line and column", function()
    local cases = {
      { "", 1, 1, "expected a value, found end of input" },
      { "   ", 1, 4, "expected a value, found end of input" },
      { "[1,]", 1, 3, "trailing comma before ']'" },
      { '{"a":1,}', 1, 7, "trailing comma before '}'" },
      { "{'a':1}", 1, 2, "expected a string key, found '''" },
      { "{a:1}", 1, 2, "expected a string key, found 'a'" },
      { '{"a" 1}', 1, 6, "expected ':' after an object key, found '1'" },
      { '{"a":1 "b":2}', 1, 8, "expected ',' or '}' after an object member" },
      { "[1 2]", 1, 4, "expected ',' or ']' after an array element, found '2'" },
      { "[1, 2", 1, 6, "found end of input" },
      { '{"a": 1', 1, 8, "found end of input" },
      { "[", 1, 2, "expected a value, found end of input" },
      { "01", 1, 1, "leading zeros are not allowed" },
      { "-01", 1, 2, "leading zeros are not allowed" },
      { "-", 1, 2, "expected a digit, found end of input" },
      { "-a", 1, 2, "expected a digit, found 'a'" },
      { "1.", 1, 3, "expected a digit after '.'" },
      { "1.e5", 1, 3, "expected a digit after '.'" },
      { ".5", 1, 1, "expected a value, found '.'" },
      { "+1", 1, 1, "expected a value, found '+'" },
      { "1e", 1, 3, "expected a digit in the exponent" },
      { "1e+", 1, 4, "expected a digit in the exponent" },
      { "0x10", 1, 2, "unexpected 'x' after the JSON value" },
      { "tru", 1, 1, "invalid literal" },
      { "nul", 1, 1, "invalid literal" },
      { "True", 1, 1, "expected a value, found 'T'" },
      { "[NaN]", 1, 2, "expected a value, found 'N'" },
      { "[Infinity]", 1, 2, "expected a value, found 'I'" },
      { "[-Infinity]", 1, 3, "expected a digit, found 'I'" },
      { '"abc', 1, 1, "unterminated string" },
      { '"abc\\', 1, 5, "unterminated string" },
      { '"a\tb"', 1, 3, "unescaped control character (byte 0x09) in a string" },
      { '"a\nb"', 1, 3, "unescaped control character (byte 0x0A)" },
      { '"a\0b"', 1, 3, "unescaped control character (byte 0x00)" },
      { '"\\x"', 1, 2, "invalid escape: '\\' followed by 'x'" },
      { '"\\U0041"', 1, 2, "invalid escape" },
      { '"\\u12"', 1, 6, "\\u must be followed by four hex digits" },
      { '"\\u12G4"', 1, 6, "\\u must be followed by four hex digits" },
      { '"\\ud83d"', 1, 2, "high surrogate \\ud83d is not followed by a low surrogate" },
      { '"\\ud83dx"', 1, 2, "is not followed by a low surrogate" },
      { '"\\ud83d\\u0041"', 1, 8, "high surrogate is not followed by a low surrogate" },
      { '"\\ude00"', 1, 2, "lone low surrogate \\ude00" },
      { '"\xff"', 1, 2, "invalid UTF-8 in a string" },
      { '"ok\xc3"', 1, 4, "invalid UTF-8" },           -- truncated sequence
      { '"\xc0\xaf"', 1, 2, "invalid UTF-8" },         -- overlong '/'
      { '"\xed\xa0\x80"', 1, 2, "invalid UTF-8" },     -- UTF-16 surrogate in UTF-8
      { '"\xf4\x90\x80\x80"', 1, 2, "invalid UTF-8" }, -- beyond U+10FFFF
      { "[1] x", 1, 5, "unexpected 'x' after the JSON value" },
      { "{} {}", 1, 4, "unexpected '{' after the JSON value" },
      { "1 2", 1, 3, "unexpected '2' after the JSON value" },
      { "// comment\n1", 1, 1, "expected a value, found '/'" },
      { "[1] /* c */", 1, 5, "unexpected '/'" },
      { "\n\n  [1,\n   2,,3]", 4, 6, "expected a value, found ','" },
      { '{"a":\r\n  @}', 2, 3, "expected a value, found '@'" },
      { "[\"\n\"]", 1, 3, "unescaped control character" },
      { "\1", 1, 1, "expected a value, found byte 0x01" },
    }
    for _, c in ipairs(cases) do
      local v, err = json.decode(c[1])
      assert.is_nil(v, c[1])
      assert.is_string(err, c[1])
      local prefix = ("line %d column %d: "):format(c[2], c[3])
      assert.equals(prefix, err:sub(1, #prefix), ("%q gave %q"):format(c[1], err))
      assert.truthy(err:find(c[4], 1, true), ("%q gave %q, wanted %q"):format(c[1], err, c[4]))
    end
    assert.equals("line 1 column 3: trailing comma before ']'", select(2, json.decode("[1,]")))
  end)

  it("caps nesting at 512 levels, as an input error", function()
    assert.equals(json.array_mt, getmetatable(json.decode(nested("[", "]", 512))))
    local v, err = json.decode(nested("[", "]", 513))
    assert.is_nil(v)
    assert.equals("line 1 column 513: nesting deeper than 512 levels", err)
    v, err = json.decode(string.rep('{"a":', 513) .. "1" .. string.rep("}", 513))
    assert.is_nil(v)
    assert.matches("nesting deeper than 512", err)
    v, err = json.decode(string.rep("[", 1000000)) -- no C stack overflow
    assert.is_nil(v)
    assert.matches("nesting deeper than 512", err)
  end)

  it("raises on wrong argument types and unknown options", function()
    assert.has_error(function() json.decode(5) end, "string expected")
    assert.has_error(function() json.decode() end, "string expected")
    assert.has_error(function() json.decode("1", { bogus = 1 }) end, "json.decode: unknown option 'bogus'")
    assert.has_error(function() json.decode("1", { bigint = "int" }) end, "option bigint must be")
  end)
end)

describe("json.encode", function()
  it("encodes scalars", function()
    assert.equals("null", json.encode(nil))
    assert.equals("null", json.encode(json.null))
    assert.equals("true", json.encode(true))
    assert.equals("false", json.encode(false))
    assert.equals("42", json.encode(42))
    assert.equals("-7", json.encode(-7))
    assert.equals('"hi"', json.encode("hi"))
  end)

  it("prints int64 integers exactly", function()
    assert.equals("9223372036854775807", json.encode(math.maxinteger))
    assert.equals("-9223372036854775808", json.encode(math.mininteger))
    assert.equals("170000000000000001", json.encode(170000000000000001))
    assert.equals("9007199254740993", json.encode(9007199254740993))
  end)

  it("prints floats with the fewest digits (15-17) that round-trip, always as floats", function()
    local cases = {
      { 1.0, "1.0" }, { -0.0, "-0.0" }, { 0.1, "0.1" }, { 0.5, "0.5" }, { 1 / 3, "0.3333333333333333" },
      { 1e300, "1e+300" }, { 2^53, "9007199254740992.0" }, { 2^63, "9.223372036854776e+18" },
      { 5e-324, "4.94065645841247e-324" }, { 1712345678.123, "1712345678.123" }, { 100.0, "100.0" },
    }
    for _, c in ipairs(cases) do assert.equals(c[2], json.encode(c[1])) end
  end)

  it("round-trips floats bit for bit and keeps their type", function()
    for _, x in ipairs({ 0.1, 1 / 3, -2.5e-8, 1e21, 123456789.0, 2^-1074, 1.7976931348623157e308, 0.0, 3.0 }) do
      local back = json.decode(json.encode(x))
      assert.equals(x, back)
      assert.equals("float", math.type(back))
    end
    math.randomseed(7)
    for _ = 1, 1000 do
      local x = (math.random() - 0.5) * 10 ^ math.random(-300, 300)
      assert.equals(x, json.decode(json.encode(x)))
    end
  end)

  it("escapes quotes, backslashes and control characters and passes UTF-8 through", function()
    assert.equals([["a\"b\\c/"]], json.encode('a"b\\c/'))
    assert.equals([["\b\f\n\r\t\u0000\u001f"]], json.encode("\b\f\n\r\t\0\31"))
    assert.equals('"é€😀\127"', json.encode("é€😀\127"))
    assert.equals('"\\u0001x"', json.encode("\1x"))
  end)

  it("rejects invalid UTF-8, or replaces it with U+FFFD on request", function()
    assert.has_error(function() json.encode({ name = "a\xffb" }) end,
      'json.encode: invalid UTF-8 in a string (use invalid_utf8 = "replace") at $.name')
    assert.equals('"a\u{FFFD}b\u{FFFD}"', json.encode("a\xffb\xc3", { invalid_utf8 = "replace" }))
    assert.has_error(function() json.encode({ ["k\xff"] = 1 }) end, "invalid UTF-8")
  end)

  it("tells arrays from objects", function()
    assert.equals("[1,2,3]", json.encode({ 1, 2, 3 }))
    assert.equals("{}", json.encode({}))
    assert.equals("[]", json.encode(json.array()))
    assert.equals("[]", json.encode(setmetatable({}, json.array_mt)))
    assert.equals('{"a":1}', json.encode({ a = 1 }))
    assert.equals('[[],{}]', json.encode(json.decode("[[],{}]")))
    assert.equals('[{"a":[null]}]', json.encode({ { a = { json.null } } }))
  end)

  it("sorts keys with sort = true", function()
    assert.equals('{"a":2,"b":1,"c":{"y":2,"z":1},"é":0}',
      json.encode({ b = 1, ["é"] = 0, a = 2, c = { z = 1, y = 2 } }, { sort = true }))
    assert.equals('{"a":1,"ab":2,"b":3}', json.encode({ b = 3, ab = 2, a = 1 }, { sort = true }))
  end)

  it("pretty-prints with indent", function()
    local v = {
      list = { 1, 2.5, "three", json.null, true },
      nested = { a = { b = { { c = false } } }, z = math.mininteger },
      empty_array = json.array(), empty_object = {},
    }
    assert.equals(read("pretty-sorted.json"), json.encode(v, { sort = true, indent = true }) .. "\n")
    assert.equals('[\n    1,\n    {\n        "a": []\n    }\n]',
      json.encode({ 1, { a = json.array() } }, { indent = 4 }))
    assert.equals("[1,2]", json.encode({ 1, 2 }, { indent = false }))
  end)

  it("names the path of a value it cannot encode", function()
    assert.has_error(function() json.encode({ a = { 1, 2, { b = print } } }) end,
      "json.encode: cannot encode a function at $.a[3].b")
    assert.has_error(function() json.encode({ x = { ["my key"] = { io.stdout } } }) end,
      'cannot encode a userdata at $.x["my key"][1]')
    assert.has_error(function() json.encode(coroutine.create(print)) end, "cannot encode a thread at $")
    local err = assert.has_error(function() json.encode({ f = print }) end)
    assert.matches("^.-json_spec%.lua:%d+: json%.encode: ", err) -- the caller's file:line
  end)

  it("rejects mixed, sparse and odd keys, naming the key", function()
    assert.has_error(function() json.encode({ cfg = { 1, 2, x = 3 } }) end,
      'string key "x" in a table with integer keys (mixed keys) at $.cfg')
    assert.has_error(function() json.encode({ x = 1, [7] = 2 }) end, "mixed keys")
    assert.has_error(function() json.encode({ 1, nil, 3 }) end,
      "sparse array: index 2 is missing (highest index 3) at $")
    assert.has_error(function() json.encode({ [2] = "b" }) end, "index 1 is missing")
    assert.has_error(function() json.encode({ [true] = 1 }) end, "key true (boolean)")
    assert.has_error(function() json.encode({ [1.5] = 1 }) end, "key 1.5 (number)")
    assert.has_error(function() json.encode({ [0] = 1 }) end, "key 0 (number)")
    assert.has_error(function() json.encode({ [{}] = 1 }) end, "(table) cannot be encoded")
    assert.has_error(function() json.encode(setmetatable({ x = 1 }, json.array_mt)) end,
      'string key "x" in a json.array')
  end)

  it("rejects cycles but not shared tables", function()
    local t = {}
    t.self = t
    assert.has_error(function() json.encode(t) end, "cycle: the table contains itself at $.self")
    local a = { b = { {} } }
    a.b[1].up = a
    assert.has_error(function() json.encode(a) end, "at $.b[1].up")
    local shared = { 1 }
    assert.equals('{"x":[1],"y":[1]}', json.encode({ x = shared, y = shared }, { sort = true }))
  end)

  it("rejects NaN and infinities, or writes null on request", function()
    assert.has_error(function() json.encode({ v = 0 / 0 }) end, 'cannot encode NaN (use non_finite = "null") at $.v')
    assert.has_error(function() json.encode(math.huge) end, "cannot encode inf")
    assert.has_error(function() json.encode(-math.huge) end, "cannot encode -inf")
    assert.equals("[null,null,1.5]", json.encode({ 0 / 0, -math.huge, 1.5 }, { non_finite = "null" }))
  end)

  it("caps nesting at 512 levels", function()
    local deep = {}
    local t = deep
    for _ = 2, 512 do t[1] = {}; t = t[1] end
    assert.equals(string.rep("[", 511) .. "{}" .. string.rep("]", 511), json.encode(deep))
    t[1] = {}
    assert.has_error(function() json.encode(deep) end, "nesting deeper than 512 levels")
  end)

  it("checks its options", function()
    assert.has_error(function() json.encode(1, { pretty = true }) end, "json.encode: unknown option 'pretty'")
    assert.has_error(function() json.encode(1, { indent = "  " }) end, "option indent must be")
    assert.has_error(function() json.encode(1, { non_finite = "zero" }) end, "option non_finite must be")
    assert.has_error(function() json.encode(1, 5) end, "table expected")
    assert.has_error(function() json.encode() end, "value expected")
  end)

  it("json.array marks a table and refuses one with another metatable", function()
    local t = { 1 }
    assert.equals(t, json.array(t))
    assert.equals(json.array_mt, getmetatable(t))
    assert.equals(t, json.array(t))
    assert.has_error(function() json.array(setmetatable({}, {})) end, "already has a metatable")
  end)
end)

describe("json round trips", function()
  it("decode . encode is the identity on canonical text", function()
    local texts = {
      '{"a":[1,2.5,"x",null,true,false],"b":{},"c":[],"d":{"e":[[],[{}]]}}',
      "[9007199254740993,170000000000000001,-9223372036854775808,9223372036854775807]",
      '["\\u0000\\u001f\\"\\\\","é😀",1e+300,0.1,-0.0]',
      "[]", "{}", "null", '""', "0", "1.0",
    }
    for _, text in ipairs(texts) do
      assert.equals(text, json.encode(json.decode(text), { sort = true }))
    end
  end)

  it("encode . decode is the identity on values", function()
    local v = { name = "canary", weights = { 5, 25, 50, 75, 100 }, ok = true, lease = 7587869395420563220,
      ratio = 0.05, tags = json.array(), meta = {}, none = json.null, s = "tab\tquote\"" }
    assert.same(v, json.decode(json.encode(v)))
    assert.same(v, json.decode(json.encode(v, { indent = true, sort = true })))
  end)

  it("the fixtures survive a round trip", function()
    for _, name in ipairs({ "etcd-lease-grant.json", "prometheus-vector.json", "pretty-sorted.json" }) do
      local v = json.decode(read(name), { bigint = "string" })
      assert.same(v, json.decode(json.encode(v), { bigint = "string" }), name)
    end
  end)
end)

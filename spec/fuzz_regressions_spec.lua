-- What the fuzz targets (fuzz/, `make fuzz`) found, replayed through the Lua API: every input
-- in fuzz/regressions/<target>/ goes through the same layers its target drives, and each bug
-- found has a test of its own saying what was wrong.
local fs = require("rollout.fs")
local json = require("rollout.json")
local yaml = require("rollout.yaml")
local units = require("rollout.units")
local promtext = require("rollout.promtext")
local playbook = require("rollout.playbook")

local function inputs(target)
  local dir = "fuzz/regressions/" .. target
  local out = {}
  for _, name in ipairs(fs.list(dir) or {}) do
    out[#out + 1] = { name = dir .. "/" .. name, data = assert(fs.read(dir .. "/" .. name)) }
  end
  return out
end

local function finite_or_error(kind, s)
  local v, err = units.parse(kind, s)
  if v == nil then
    assert.is_string(err, kind)
  else
    assert.is_number(v, kind)
    assert.truthy(v == v and v > -math.huge and v < math.huge, kind .. " of " .. ("%q"):format(s) .. " gave " .. tostring(v))
  end
end

local function minimal(extra)
  local raw = { name = "fuzz", versions = { baseline = {}, canary = {} }, stages = { { weight = 10, hold = "1m" }, { weight = 100, hold = "1m" } } }
  for k, v in pairs(extra) do raw[k] = v end
  return raw
end

describe("fuzz regressions: units", function()
  it("0e3010 (zero with a huge exponent) is 0, never NaN; huge values are errors, not inf", function()
    -- src/units.c scan_number multiplied 0 by pow(10, 400) = inf: NaN, which passed every
    -- range check (NaN < 0 and NaN > 1 are both false), so a threshold "0e999" never failed
    for _, kind in ipairs({ "duration", "ratio", "bytes", "value" }) do
      assert.equals(0, units.parse(kind, "0e3010"), kind)
      finite_or_error(kind, "1e400")
      finite_or_error(kind, "9e307Ti")
    end
    assert.is_nil(units.parse("bytes", "1e400"))
    assert.is_nil(units.parse("value", "1e400"))
    local pb, errs = playbook.validate(minimal({ thresholds = { error_rate = "0e999%", p99 = "1e400" } }), { file = "f" })
    assert.truthy(pb or errs)
    if pb then
      assert.equals(0, pb.thresholds.error_rate.value)
    end
  end)

  it("replays fuzz/regressions/units", function()
    for _, input in ipairs(inputs("units")) do
      for _, kind in ipairs({ "duration", "ratio", "bytes", "value" }) do finite_or_error(kind, input.data) end
      local ok, res = pcall(units.parse, "value", input.data)
      assert.is_true(ok, input.name)
      local vok, pb, errs = pcall(playbook.validate, minimal({ thresholds = { error_rate = input.data, p99 = input.data },
        triggers = { t = { condition = input.data } } }), { file = "f" })
      assert.is_true(vok, input.name .. ": validation raised " .. tostring(pb))
      assert.truthy(pb or errs)
      local _ = res
    end
  end)
end)

describe("fuzz regressions: promtext", function()
  it("select refuses a selected bucket without a numeric le, which parse accepts as a label", function()
    local text = '# TYPE h histogram\nh_bucket{version="canary",le="\217\2090.5"} 1\nh_bucket{version="canary",le="+Inf"} 4\n'
    assert.is_table(promtext.parse(text))
    local res, err = promtext.select(text, { { histogram = "h", labels = { version = "canary" } } })
    assert.is_nil(res)
    assert.matches("line 2: .* without a valid le label", err)
  end)

  it("replays fuzz/regressions/promtext", function()
    for _, input in ipairs(inputs("promtext")) do
      local ok, res, err = pcall(promtext.parse, input.data)
      assert.is_true(ok, input.name .. ": parse raised " .. tostring(res))
      assert.truthy(res or err)
      ok, res = pcall(promtext.select, input.data, { { name = "http_requests_total", group_by = "code" },
        { histogram = "http_request_duration_seconds", labels = { version = { re = "can.*" } } } })
      assert.is_true(ok, input.name .. ": select raised " .. tostring(res))
    end
  end)
end)

describe("fuzz regressions: json", function()
  it("a UTF-8 BOM before a one-byte document decodes, as it does before a longer one", function()
    -- cJSON skips a BOM only when at least two bytes follow it, so src/json.c handed it
    -- "\xEF\xBB\xBF4" BOM and all, cJSON failed, and the decoder raised "not enough memory"
    -- (found by fuzz_json once it compared src/json.c with the reference decoder)
    for d = 0, 9 do
      assert.equals(d, json.decode("\xEF\xBB\xBF" .. d))
      assert.equals(d, json.decode("\xEF\xBB\xBF" .. d .. " "))
    end
    local v, err = json.decode("\xEF\xBB\xBF")
    assert.is_nil(v)
    assert.matches("^line 1 column %d+: expected a value", err)
  end)

  it("replays fuzz/regressions/json", function()
    for _, input in ipairs(inputs("json")) do
      local ok, v, err = pcall(json.decode, input.data)
      assert.is_true(ok, input.name .. ": decode raised " .. tostring(v))
      if v ~= nil then
        local eok, text = pcall(json.encode, v, { sort = true, non_finite = "null" })
        assert.is_true(eok, input.name .. ": a decoded value did not encode: " .. tostring(text))
        assert.is_not_nil(json.decode(text))
      else
        assert.matches("^line %d+ column %d+: ", err)
      end
    end
  end)
end)

describe("fuzz regressions: yaml and --config", function()
  local dir
  setup(function() dir = assert(fs.mkdtemp("fuzzreg")) end)
  teardown(function() fs.rmtree(dir) end)

  local function apply(text)
    local p = dir .. "/c.yaml"
    assert(fs.write_atomic(p, text))
    local raw = minimal({})
    return pcall(require("rollout.config").apply, raw, p)
  end

  it("replays fuzz/regressions/yaml", function()
    for _, input in ipairs(inputs("yaml")) do
      local ok, v, err = pcall(yaml.load, input.data)
      assert.is_true(ok, input.name .. ": yaml.load raised " .. tostring(v))
      assert.truthy(v ~= nil or err)
      local aok, aerr = apply(input.data)
      assert.is_true(aok, input.name .. ": config.apply raised " .. tostring(aerr))
    end
  end)

  -- config-*.yaml, found by fuzz_yaml in rollout.config: a value of the wrong shape raised a
  -- Lua error (exit 3 and a traceback) instead of a configuration error naming the key.
  it("a --config value of the wrong shape is a configuration error naming the key and line", function()
    local function errors_of(name)
      local ok, merged, errs = apply(assert(fs.read("fuzz/regressions/yaml/" .. name)))
      assert.is_true(ok, name .. ": config.apply raised " .. tostring(merged))
      return merged, errs
    end
    local merged, errs = errors_of("config-metadata-number.yaml")
    assert.is_nil(merged)
    assert.equals("metadata", errs[1].path)
    assert.equals(3, errs[1].line)
    assert.matches("expected a mapping", errs[1].msg)
    merged, errs = errors_of("config-stage-string.yaml")
    assert.is_nil(merged)
    assert.equals("spec.stages[1]", errs[1].path)
    assert.equals(4, errs[1].line)
    -- an empty `metadata:` or `labels:` is no metadata, not an error
    assert.is_table(errors_of("config-metadata-null.yaml"))
    assert.is_table(errors_of("config-labels-null.yaml"))
  end)
end)

-- The eval's generated scenarios: deterministic (one seeded generator), labelled by
-- tools/eval_scenarios/labels.lua from their parameters. Each family draws parameters
-- until the label is the one the family is meant to produce (never grey), so the label
-- is a property of the numbers, not of the family's name.
--
--   generate() -> list of {name=, family=, label=, fault_at=, why=, scenario = raw table}
--   rollout tools/eval_scenarios/generate.lua DIR   writes them as scenario files
--
-- Families (count):
--   good_noise (30)      canary within +-5 % latency and +-15 % errors of its baseline
--   good_identical (40)  canary exactly like its baseline: the false-alarm rate
--   good_better (5)      canary faster or with fewer errors
--   bad_errors (10)      +0.25 to +0.7 pp errors, below every static limit (< 0.95 %)
--   bad_latency (10)     p50 and p99 x1.2 to x1.8, below the static limits
--   bad_tail (8)         p99 x1.25 to x2.2 with the same median, below the static limits
--   bad_over (12)        over a static limit (errors 1.2-4 %, p99 550-900 ms, p50 210-300 ms),
--                        under the triggers
--   bad_late (12)        a good canary that turns bad (either kind) between 7 m and 43 m
--   env_degraded (12)    baseline and canary degrade together, above the static limits
--                        (errors 2.2-3.5 %, p99 620-900 ms or p50 210-260 ms), from 0 or later
--   low_traffic (10)     15-90 req/s in total, a good canary
local rng = require("rollout.rng")
local fs = require("rollout.fs")
local labels = require("tools.eval_scenarios.labels")

local M = {}
M.SEED = 20240601

local RPS = { 200, 300, 400, 600, 800 }

local function gen(seed)
  local r = rng.new(seed)
  local g = {}
  function g.u(a, b) return a + (b - a) * r:uniform() end
  function g.pick(t) return t[math.floor(r:uniform() * #t) + 1] end
  function g.int(a, b) return a + math.floor(r:uniform() * (b - a + 1)) end
  return g
end

local function round(x, q) return math.floor(x / q + 0.5) * q end
local function ms(x) return round(x, 0.0001) end

local function baseline(g)
  local p50 = g.u(0.025, 0.070)
  return { error_rate = round(g.u(0.0005, 0.004), 0.00001), latency = { p50 = ms(p50), p99 = ms(p50 * g.u(3, 4.3)) } }
end

local function copy(s)
  return { error_rate = s.error_rate, latency = { p50 = s.latency.p50, p99 = s.latency.p99 } }
end

local function scale(s, f50, f99, ferr, plus_err)
  local c = copy(s)
  c.latency.p50 = ms(s.latency.p50 * f50)
  c.latency.p99 = ms(math.max(c.latency.p50, s.latency.p99 * f99))
  c.error_rate = round(s.error_rate * (ferr or 1) + (plus_err or 0), 0.00001)
  return c
end

-- p95 of the simulator's log-normal with this p50 and p99
local function p95(lat)
  local mu = math.log(lat.p50)
  local sigma = (math.log(lat.p99) - mu) / 2.3263478740408408
  return math.exp(mu + 1.6448536269514722 * sigma)
end

-- under every static gate limit of playbooks/canary.lua at every stage
local function under_limits(s)
  return s.error_rate < 0.0095 and s.latency.p99 < 0.475 and s.latency.p50 < 0.19 and p95(s.latency) < 0.38
end

local function scenario_of(seed, rps, b, c, extra)
  local sc = {
    seed = seed, traffic = { rps = rps },
    baseline = { error_rate = b.error_rate, latency = { p50 = b.latency.p50, p99 = b.latency.p99 } },
    canary = { error_rate = c.error_rate, latency = { p50 = c.latency.p50, p99 = c.latency.p99 } },
  }
  for k, v in pairs(extra or {}) do sc[k] = v end
  return sc
end

local function change(at, s)
  return { at = at, error_rate = s.error_rate, latency = { p50 = s.latency.p50, p99 = s.latency.p99 } }
end

-- Each family: a function(g, seed) -> raw scenario, wanted label.
local FAMILIES = {
  { "good_noise", 30, function(g, seed)
    local b = baseline(g)
    local c = scale(b, g.u(0.95, 1.05), g.u(0.95, 1.05), g.u(0.85, 1.15))
    return scenario_of(seed, g.pick(RPS), b, c), "good"
  end },
  { "good_identical", 40, function(g, seed)
    local b = baseline(g)
    return scenario_of(seed, g.pick(RPS), b, copy(b)), "good"
  end },
  { "good_better", 5, function(g, seed)
    local b = baseline(g)
    local c = scale(b, g.u(0.75, 0.95), g.u(0.7, 0.95), g.u(0.3, 0.9))
    return scenario_of(seed, g.pick(RPS), b, c), "good"
  end },
  { "bad_errors", 10, function(g, seed)
    local b = baseline(g)
    local c = scale(b, g.u(0.98, 1.03), g.u(0.98, 1.03), 1, g.u(0.0025, 0.007))
    if not under_limits(c) then return nil end
    return scenario_of(seed, g.pick(RPS), b, c), "bad"
  end },
  { "bad_latency", 10, function(g, seed)
    local b = baseline(g)
    local f = g.u(1.2, 1.8)
    local c = scale(b, f, f * g.u(0.95, 1.05), g.u(0.9, 1.1))
    if not under_limits(c) then return nil end
    return scenario_of(seed, g.pick(RPS), b, c), "bad"
  end },
  { "bad_tail", 8, function(g, seed)
    local b = baseline(g)
    local c = scale(b, g.u(0.98, 1.02), g.u(1.25, 2.2), g.u(0.9, 1.1))
    if not under_limits(c) then return nil end
    return scenario_of(seed, g.pick(RPS), b, c), "bad"
  end },
  { "bad_over", 12, function(g, seed)
    local b = baseline(g)
    local kind = g.pick({ "errors", "p99", "p50" })
    local c
    if kind == "errors" then c = scale(b, 1, 1, 0, g.u(0.012, 0.04))
    elseif kind == "p99" then c = copy(b); c.latency.p99 = ms(g.u(0.55, 0.9))
    else
      c = copy(b); c.latency.p50 = ms(g.u(0.21, 0.30)); c.latency.p99 = ms(math.min(0.95, c.latency.p50 * g.u(2.5, 3.2)))
    end
    return scenario_of(seed, g.pick(RPS), b, c), "bad"
  end },
  { "bad_late", 12, function(g, seed)
    local b = baseline(g)
    local c0 = scale(b, g.u(0.98, 1.03), g.u(0.98, 1.03), g.u(0.9, 1.1))
    local kind = g.pick({ "errors", "latency", "tail", "over_errors", "over_p99" })
    local c1
    if kind == "errors" then c1 = scale(b, 1, 1, 1, g.u(0.003, 0.007))
    elseif kind == "latency" then local f = g.u(1.3, 1.8); c1 = scale(b, f, f, 1)
    elseif kind == "tail" then c1 = scale(b, 1, g.u(1.45, 2.2), 1)
    elseif kind == "over_errors" then c1 = scale(b, 1, 1, 0, g.u(0.015, 0.04))
    else c1 = copy(b); c1.latency.p99 = ms(g.u(0.62, 0.9)) end
    if kind ~= "over_errors" and kind ~= "over_p99" and not under_limits(c1) then return nil end
    local at = round(g.u(7 * 60, 43 * 60), 10)
    local sc = scenario_of(seed, g.pick(RPS), b, c0)
    sc.canary.changes = { change(at, c1) }
    return sc, "bad"
  end },
  { "env_degraded", 12, function(g, seed)
    local b = baseline(g)
    local c = scale(b, g.u(0.98, 1.03), g.u(0.98, 1.03), g.u(0.9, 1.1))
    local kind = g.pick({ "errors", "p99", "p50" })
    local b1, c1 = copy(b), copy(c)
    if kind == "errors" then
      local e = g.u(0.022, 0.035)
      b1.error_rate, c1.error_rate = round(e, 0.00001), round(e * g.u(0.95, 1.05), 0.00001)
    elseif kind == "p99" then
      local p = g.u(0.62, 0.9)
      b1.latency.p99, c1.latency.p99 = ms(p), ms(p * g.u(0.98, 1.03))
    else
      local p = g.u(0.21, 0.26)
      b1.latency.p50, c1.latency.p50 = ms(p), ms(p * g.u(0.98, 1.03))
      b1.latency.p99 = ms(math.min(0.9, p * 3.2)); c1.latency.p99 = b1.latency.p99
    end
    local at = g.pick({ 0, 0, round(g.u(8 * 60, 40 * 60), 10) })
    local sc
    if at == 0 then sc = scenario_of(seed, g.pick(RPS), b1, c1)
    else
      sc = scenario_of(seed, g.pick(RPS), b, c)
      sc.baseline.changes = { change(at, b1) }
      sc.canary.changes = { change(at, c1) }
    end
    return sc, "good"
  end },
  { "low_traffic", 10, function(g, seed)
    local b = baseline(g)
    local c = scale(b, g.u(0.98, 1.03), g.u(0.98, 1.03), g.u(0.9, 1.1))
    return scenario_of(seed, g.int(15, 90), b, c), "inconclusive"
  end },
}

--- generate() -> the labelled scenarios, always the same.
function M.generate()
  local out = {}
  local g = gen(M.SEED)
  local seed = 1000
  for _, fam in ipairs(FAMILIES) do
    local name, count, make = fam[1], fam[2], fam[3]
    for i = 1, count do
      local tries = 0
      while true do
        tries = tries + 1
        assert(tries < 1000, name .. ": no parameters with the wanted label")
        seed = seed + 1
        local sc, want = make(g, seed)
        if sc then
          local label, fault_at, why = labels.label(sc)
          if label == want then
            sc.description = string.format("%s #%d: %s%s", name, i, label, why and (" (" .. why .. ")") or "")
            out[#out + 1] = { name = string.format("%s-%02d", name, i), family = name, label = label,
              fault_at = fault_at, why = why, scenario = sc }
            break
          end
        end
      end
    end
  end
  return out
end

-- ---- writing them out -------------------------------------------------------------------------

local function literal(v, indent)
  indent = indent or ""
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) then return a < b end
      return type(a) == "number"
    end)
    local parts = {}
    for _, k in ipairs(keys) do
      local key = type(k) == "number" and "" or (k .. " = ")
      parts[#parts + 1] = indent .. "  " .. key .. literal(v[k], indent .. "  ")
    end
    return "{\n" .. table.concat(parts, ",\n") .. ",\n" .. indent .. "}"
  end
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "integer" then return tostring(v) end
  return string.format("%.17g", v)
end
M.literal = literal

function M.write(dir)
  assert(fs.mkdir(dir, 493, true))
  for _, c in ipairs(M.generate()) do
    local text = "-- " .. c.scenario.description .. (c.fault_at and string.format("; fault at %gs", c.fault_at) or "") ..
      "\n-- generated by tools/eval_scenarios/generate.lua; labels: tools/eval_scenarios/labels.lua\nreturn " ..
      literal(c.scenario) .. "\n"
    assert(fs.write_atomic(dir .. "/" .. c.name .. ".lua", text))
  end
end

if arg and arg[0] and arg[0]:match("generate%.lua$") and arg[1] then
  M.write(arg[1])
  print("wrote " .. #M.generate() .. " scenarios to " .. arg[1])
end

return M

-- rollout.safety: what keeps the engine from acting on evidence it does not have, and
-- from leaving users on a canary it has given up on. The engine calls these at fixed
-- points; each is one concern:
--
--   evidence   traffic signals come from real requests: a synthetic source (the probe)
--              adds evidence where a real source has some, never stands in for a real
--              source that saw no requests (signal_source); a gate does not pass while
--              the canary's observed share of requests is far below its weight
--              (share_shortfall, the rule below).
--   read-back  every evaluation reads the proxy's weights back and re-applies the last
--              confirmed ones when the proxy lost them (readback), journaled as
--              `weights_reapplied` with what was read (`got`) and what was set (`want`).
--   sources    before the first shift every configured source must have answered once
--              (await_sources); `rollout check` and the `monitoring` pre-flight check ask
--              every source the same way (check_source).
--   override   a rollback, abort or failure removes the header override and confirms the
--              removal by read-back; so does a promotion once finalize has run
--              (remove_override).
--
-- The share rule. In the gate's window the real sources counted n requests, c of them to
-- the canary, whose confirmed weight is w (0 < w < 1). Under the weight the canary's count
-- is Binomial(n, w): mean n*w, standard deviation sqrt(n*w*(1-w)). The share is far below
-- the weight when all of these hold:
--   n*w >= 10                      enough expected canary requests to judge at all
--   c < n*w / 2                    less than half of what the weight should bring
--   (n*w - c) > 3 * sqrt(n*w*(1-w))  and more than three standard deviations short
--                                  (one-sided, p < 0.0014: never noise)
-- Then the gate's shortfall is "canary_share": the hold is extended one interval at a time,
-- then the gate is inconclusive (policy.inconclusive). Fewer expected requests than 10 is
-- left to min_samples and min_rps.
--
-- Error policy: nothing here raises on operational failures; router and source failures
-- are returned (nil, err) and journaled by the caller or here as events.
local rollout = require("rollout")

local M = {}

-- Signals that count or describe real requests: a synthetic source never supplies them for
-- a version a real source watches.
M.TRAFFIC = { requests = true, rps = true, error_rate = true, p50 = true, p95 = true, p99 = true }

M.SHARE = { min_expected = 10, fraction = 0.5, sigmas = 3 }

-- ---- evidence ---------------------------------------------------------------------------

--- real_traffic(sources) -> {signal = true} for the traffic signals some non-synthetic
--- source measures (empty: none does), or false when no source measures any.
function M.real_traffic(sources)
  local real, any = {}, false
  for _, src in ipairs(sources) do
    if src.signals and not src.synthetic then
      for k in pairs(M.TRAFFIC) do
        if not src.provides or src.provides[k] then real[k], any = true, true end
      end
    end
  end
  return any and real
end

--- signal_source(src, key, real) -> whether the engine may take signal `key` from src
--- when merging sources (real = real_traffic(sources)): a synthetic source supplies a
--- traffic signal only where no real source measures it (it adds what they cannot see,
--- never stands in for a real source that saw no requests).
function M.signal_source(src, key, real)
  return not (real and src.synthetic and real[key])
end

--- share_shortfall(weight_percent, baseline_requests, canary_requests) -> nil (enough
--- evidence, or too little traffic to judge) | "canary_share", fields for the gate event.
function M.share_shortfall(weight, b, c)
  if not (weight and b and c) or weight <= 0 or weight >= 100 then return nil end
  local w, n = weight / 100, b + c
  local expected = n * w
  local sd = math.sqrt(n * w * (1 - w))
  local fields = { weight = weight, requests = n, canary_requests = c, expected = expected,
    share = n > 0 and c / n * 100 or nil }
  if expected < M.SHARE.min_expected then return nil, fields end
  if c < expected * M.SHARE.fraction and expected - c > M.SHARE.sigmas * sd then
    fields.far_below = true
    return "canary_share", fields
  end
  return nil, fields
end

--- gate_evidence(engine, sig) -> shortfall | nil, fields: the share rule on the gate
--- window's signals, with the engine's confirmed canary weight.
function M.gate_evidence(engine, sig)
  local real = M.real_traffic(engine.sources)
  if not (real and real.requests) then return nil end
  return M.share_shortfall(engine.weights.canary, sig.baseline.requests, sig.canary.requests)
end

-- ---- read-back --------------------------------------------------------------------------

local function same(a, b)
  return a and b and math.abs(a.baseline - b.baseline) < 1e-6 and math.abs(a.canary - b.canary) < 1e-6
end

--- readback(engine): one evaluation's read-back. Reads the proxy's weights (bounded by
--- the evaluation interval); when they differ from the last confirmed ones, journals
--- `weights_reapplied` {want, got, by = "evaluation"} and sets them again, confirmed by
--- read-back (`weight_confirmed` or `weight_failed`). A failed read is journaled once
--- per run of failures (`weights_read_back` with `error`). The header override, while
--- one is set, is verified the same way (the router re-applies it).
function M.readback(engine)
  local router = engine.router
  if engine.env.simulate or engine.observe or not router or not router.get_weights or engine.journal_error then
    return -- an observe-only run never writes weights (rollout.observe)
  end
  local budget = math.max(0.2, engine.pb.interval * 0.9)
  local want = { baseline = engine.weights.baseline, canary = engine.weights.canary }
  local got, err = router:get_weights({ deadline = budget })
  if not got then
    if not engine.readback_failing then
      engine:emit("weights_read_back", { want = want, error = err, by = "evaluation" })
    end
    engine.readback_failing = true
    return
  end
  engine.readback_failing = nil
  if not same(got, want) then
    engine:emit("weights_reapplied", { want = want, got = { baseline = got.baseline, canary = got.canary },
      by = "evaluation" })
    if engine.journal_error then return end
    local ok, serr = router:set_weights(want, { attempts = 1, deadline = budget })
    if ok then engine:emit("weight_confirmed", { baseline = want.baseline, canary = want.canary })
    else engine:emit("weight_failed", { baseline = want.baseline, canary = want.canary, error = serr }) end
  end
  if engine.override_on and router.verify then router:verify({ attempts = 1, deadline = budget }) end
end

--- last_read(engine) -> {weights=, at=} the router's last successful read-back, or nil.
function M.last_read(engine)
  local o = engine.router and engine.router.observed
  if type(o) == "table" and o.weights then return o end
end

-- ---- sources ----------------------------------------------------------------------------

--- check_source(src, now, window) -> ok, detail: ask a source once, the way an evaluation
--- does (tick, then signals or alerts). ok is false when it cannot answer.
function M.check_source(src, now, win)
  local what = src.name or "source"
  if src.check_targets then
    local ok, err = src:check_targets()
    if not ok then return false, what .. ": " .. tostring(err) end
  end
  if src.tick then
    local ok, err = src:tick(now)
    if not ok then return false, what .. ": " .. tostring(err or "tick failed") end
  end
  if src.signals then
    local s, err = src:signals(now, win)
    if not s then return false, what .. ": " .. tostring(err or "no signals") end
    return true, what .. " answered"
  end
  if src.alerts then
    local list, err = src:alerts(now)
    if not list then return false, what .. ": " .. tostring(err or "no answer") end
    return true, string.format("%s answered (%d active alert%s)", what, #list, #list == 1 and "" or "s")
  end
  return true, what .. " has nothing to ask"
end

--- check_sources(sources, now, window) -> {{name=, ok=, detail=}, ...} for the sources
--- with signals (the `monitoring` pre-flight check's view; hooks get it as ctx.check_sources).
function M.check_sources(sources, now, win)
  local out = {}
  for _, src in ipairs(sources) do
    if src.signals then
      local ok, detail = M.check_source(src, now, win)
      out[#out + 1] = { name = src.name, ok = ok and true or false, detail = detail }
    end
  end
  return out
end

--- await_sources(engine) -> nil | err: before the first shift, every configured source
--- must answer once; each is asked up to three times, an interval apart. Journals one
--- `sources_checked` {status = "pass" | "fail", sources = n, detail}.
function M.await_sources(engine)
  if engine.env.simulate or #engine.sources == 0 then return nil end
  local pending = {}
  for i, src in ipairs(engine.sources) do pending[i] = src end
  local failures = {}
  for attempt = 1, 3 do
    failures = {}
    local now = rollout.now()
    for i, src in pairs(pending) do
      local ok, detail = M.check_source(src, now, engine.pb.trigger_window)
      if ok then pending[i] = nil else failures[#failures + 1] = detail end
    end
    if next(pending) == nil then break end
    if attempt < 3 then rollout.sleep(engine.pb.interval) end
  end
  if next(pending) == nil then
    engine:emit("sources_checked", { status = "pass", sources = #engine.sources,
      detail = #engine.sources .. " source(s) answered" })
    return nil
  end
  local err = table.concat(failures, "; ")
  engine:emit("sources_checked", { status = "fail", sources = #engine.sources, detail = err })
  return err
end

-- ---- the header override ----------------------------------------------------------------

--- remove_override(engine, deadline) -> true | nil, err: remove the header override the
--- engine set (nothing to do otherwise), confirmed by read-back, within `deadline`
--- (rollout.now() seconds; nil: the router's usual retries). Journals `header_override`
--- {removed = true, ok, error}.
function M.remove_override(engine, deadline)
  if not engine.override_on or not engine.router or not engine.router.header_override then return true end
  local o = { attempts = 3 }
  if deadline then
    local left = deadline - rollout.now()
    if left <= 0 then
      local err = "max_rollback_time spent before the header override was removed"
      engine:emit("header_override", { removed = true, ok = false, error = err })
      return nil, err
    end
    o = { deadline = left }
  end
  local ok, err = engine.router:header_override(false, o)
  engine:emit("header_override", { removed = true, ok = ok and true or false, error = err,
    name = engine.pb.header_override and engine.pb.header_override.name })
  if ok then engine.override_on = false; return true end
  return nil, err
end

return M

-- rollout.engine.triggers: the triggers that watch a stage (docs/semantics.md "Triggers"):
-- each evaluation decides every trigger's condition (threshold, alert, restarts, check), holds
-- it for its `for`, and fires a rollback. Part of the engine class (rollout.engine installs
-- M.methods on it).
--
-- Error policy: raises nothing. Missing data (a failed source or alert query, a signal not
-- measured) is `nodata`, never "ok": the trigger's pending time resets (`trigger_reset`). A
-- `check` function that raises or overruns CHECK_BUDGET is journaled (`trigger_error`) and is
-- no data; TRIGGER_ERROR_LIMIT in a row keep every gate from passing (rollout.engine.gate).
-- A firing trigger is an interrupt (`rollback`) for the state machine, not a return value.
local observe = require("rollout.observe")
local hooks = require("rollout.engine.hooks")

local M = {}
local E = {}
M.methods = E

-- A trigger's `check` function runs inside every evaluation: it gets a small budget, so a
-- runaway check is a trigger error (no data), never a frozen engine.
M.CHECK_BUDGET = { instructions = 1e7, time = 1, memory = 64 * 1024 * 1024 }
-- A trigger whose check raised at this many evaluations in a row is broken: no gate passes
-- while it is (docs/semantics.md "Triggers"), it is no data, not health
M.TRIGGER_ERROR_LIMIT = 3

function E:reset_triggers(why)
  for _, tr in ipairs(self.pb.triggers) do
    local st = self.trig[tr.name]
    if st.since then self:emit("trigger_reset", { trigger = tr.name, why = why }) end
    st.since = nil
  end
end

--- compare(v, op, x): whether `v op x` holds for a trigger condition's operator
--- (">", ">=", "<", "<=", "==", "~="). rollout.backtest decides with it too.
local function compare(v, op, x)
  if op == ">" then return v > x elseif op == ">=" then return v >= x
  elseif op == "<" then return v < x elseif op == "<=" then return v <= x
  elseif op == "==" then return v == x else return v ~= x end
end
M.compare = compare

local function alert_matches(alert, matchers)
  for k, want in pairs(matchers) do
    local have = alert.labels and alert.labels[k] or alert[k]
    if have ~= want then return false end
  end
  return true
end

function E:collect_alerts(now)
  local alerts, err = {}, nil
  for _, src in ipairs(self.sources) do
    if src.alerts then
      local list, e = src:alerts(now)
      if list then for _, a in ipairs(list) do alerts[#alerts + 1] = a end else err = e end
    end
  end
  return alerts, err
end

-- One trigger's condition at this evaluation: true, false, or nil (no data) with the value.
function E:trigger_value(tr, now, cache, alerts)
  if tr.kind == "alert" then
    if not alerts then return nil end
    for _, a in ipairs(alerts) do
      if alert_matches(a, tr.alert) then return true, a.name end
    end
    return false, nil
  end
  local win = tr.window
  if not cache[win] then cache[win] = self:signals(now, win) or false end
  local sig = cache[win]
  if not sig then return nil end
  if tr.kind == "restarts" then
    local n = sig.canary.restarts
    if n == nil then return nil end
    return n >= tr.restarts, n
  elseif tr.kind == "check" then
    local ok, res, value = hooks.budgeted(M.CHECK_BUDGET, tr.check, sig, observe.view(self))
    local st = self.trig[tr.name]
    if not ok then
      st.errors = (st.errors or 0) + 1
      self:emit("trigger_error", { trigger = tr.name, error = tostring(res), consecutive = st.errors,
        limit = M.TRIGGER_ERROR_LIMIT })
      return nil
    end
    st.errors = nil
    if res == nil then return nil end
    return res and true or false, value
  end
  local c = tr.condition
  local v = sig[c.version][c.signal]
  if v == nil then return nil end
  return compare(v, c.op, c.value), v
end

--- A trigger's condition as text, for every kind: "error_rate > 5%", "alert severity=critical",
--- "restarts >= 3 within 300s", "check".
function M.trigger_text(tr)
  if tr.condition then return tr.condition.text end
  if tr.kind == "alert" then
    local m = {}
    for k, v in pairs(tr.alert or {}) do m[#m + 1] = tostring(k) .. "=" .. tostring(v) end
    table.sort(m)
    return "alert " .. (#m > 0 and table.concat(m, ",") or "(any)")
  end
  if tr.kind == "restarts" then return string.format("restarts >= %s within %gs", tostring(tr.restarts), tr.within or 0) end
  return tr.description or "check"
end

function E:evaluate_triggers(now, cache, only_kind)
  local alerts, aerr = self:collect_alerts(now)
  if aerr then alerts = nil end -- a failed alert query is no data, never "no alerts"
  for _, tr in ipairs(self.pb.triggers) do
    if only_kind and tr.kind ~= only_kind then goto next_trigger end
    local st = self.trig[tr.name]
    local cond, value = self:trigger_value(tr, now, cache, alerts)
    if cond == nil then
      if st.since then self:emit("trigger_reset", { trigger = tr.name, why = "no data" }) end
      st.since, st.state = nil, "nodata"
    elseif cond then
      if not st.since then
        st.since = now
        self:emit("trigger_pending", { trigger = tr.name, value = value, condition = M.trigger_text(tr), ["for"] = tr.duration,
          signal = tr.condition and tr.condition.signal })
      end
      st.state, st.value = "pending", value
      if now - st.since >= tr.duration - 1e-9 then
        st.state = "firing"
        self:emit("trigger_fired", { trigger = tr.name, value = value, held = now - st.since, ["for"] = tr.duration,
          condition = M.trigger_text(tr), signal = tr.condition and tr.condition.signal })
        self:interrupt({ action = "rollback", reason = "trigger:" .. tr.name, value = value })
        return
      end
    else
      if st.since then self:emit("trigger_resolved", { trigger = tr.name, value = value }) end
      st.since, st.state, st.value = nil, "ok", value
    end
    ::next_trigger::
  end
end

return M

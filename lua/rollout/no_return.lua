-- rollout.no_return: the promotion's point of no return (docs/semantics.md).
--
-- The hooks that remove the baseline (canary `finalize`; blue-green `scale_down`, then
-- `finalize`) run only when the router reads back canary 100 % right before each one
-- (require_full: else `promotion_refused` and a pause for a person, the hook not run). Once
-- one of them has started, sending users back to the baseline would send them to what is
-- being removed: the hook runs to its end (final_hook: an interrupt does not cancel it) and
-- a rollback, abort, pause or signal that came meanwhile (or comes later in the promotion)
-- is journaled as `no_return_interrupt` and turns into a pause with the canary kept at
-- 100 % (a signal's run ends `paused`, exit 3; `run --resume` finishes the promotion).
--
-- Error policy: nothing here raises; the engine's own functions report into events.
local M = {}

--- require_full(e, hook) -> nil to run the hook | outcome: read back canary 100 % now;
--- otherwise promotion_refused and pause (resume checks again, promote --full shifts to
--- 100 % first, abort rolls back: nothing was removed yet).
function M.require_full(e, hook)
  if e.observe then return nil end -- observe-only: no hook runs anyway
  while true do
    local full, why = e:confirm_full()
    if full then return nil end
    e:emit("promotion_refused", { why = why, hook = hook,
      weights = { baseline = e.weights.baseline, canary = e.weights.canary } })
    local intr = e:pause("promotion_unconfirmed: " .. why)
    if intr then
      local out = e:handle(intr)
      if out then return out end
    end
  end
end

-- The interrupt that came while past the point of no return, if any (deferred or pending).
local function take(e)
  local intr = e.deferred or e:take_interrupt()
  e.deferred = nil
  return intr
end

--- hold(e, hook) -> nil to go on | outcome: an interrupt past the point of no return
--- becomes a pause with the canary kept at 100 %.
function M.hold(e, hook)
  local intr, first = take(e), true
  while intr and intr.action ~= "resume" and intr.action ~= "promote" and intr.action ~= "promote_full" do
    if first or intr.action ~= "stop_paused" then
      e:emit("no_return_interrupt", { hook = hook, action = intr.action, reason = intr.reason, detail = intr.detail,
        who = intr.who, weights = { baseline = e.weights.baseline, canary = e.weights.canary } })
    end
    first = false
    if intr.action == "stop_paused" then return e:finish("paused", "point_of_no_return: " .. hook) end
    intr = e:pause("point_of_no_return: " .. hook .. " started; the canary keeps 100 % (" .. tostring(intr.reason) .. ")")
  end
  return nil
end

--- final_hook(e, name, extra) -> true | false, err | nil, outcome: the hook run to its end
--- whatever interrupt comes, then hold().
function M.final_hook(e, name, extra)
  e.no_return = e.no_return or name
  local ok, err = e:run_hook(name, extra, { no_cancel = true })
  if ok == false then return false, err end
  local out = M.hold(e, name)
  if out then return nil, out end
  return true
end

return M

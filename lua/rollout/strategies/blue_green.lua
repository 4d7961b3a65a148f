-- rollout.strategies.blue_green: the blue-green strategy (`strategy = "blue_green"`).
--
--   preview   the new version (green, the playbook's `canary`) gets no users' traffic, only
--             the preview traffic that the playbook's header_override sends it, while the
--             pre-promotion analysis runs: a stage at weight 0 with its own hold, thresholds
--             and min_samples (blue_green.pre_promotion); triggers are armed;
--   switch    one router call moves all traffic to green (weights 0 / 100, read back);
--   active    post-promotion analysis at 100 % with the triggers armed
--             (blue_green.post_promotion); a trigger or a failed gate switches all traffic
--             back to blue at once (the engine's rollback: one call, 100 / 0);
--   promote   on_promote, then blue stays up for blue_green.scale_down_delay (default 30 s)
--             with the triggers still armed, so a late failure still switches back; then,
--             only if the router reads back green at 100 % right then (else
--             promotion_refused and a pause), the `scale_down` hook retires blue, then
--             `finalize`: the point of no return (rollout.no_return: run to their end, an
--             interrupt then pauses with green kept at 100 %).
--
-- The two phases are ordinary engine stages (named "preview" and "active"), so holds,
-- gates, "too little evidence extends a hold", pauses, operator commands, the journal and
-- resume work as for a canary. rollout.playbook builds those stages from the playbook's
-- blue_green section; this module runs the promotion (rollout.engine dispatches to
-- promote() when the strategy is blue_green).
--
-- Error policy: promote() returns an outcome like the engine's own promote and raises
-- nothing for an operational failure.
local rollout = require("rollout")
local no_return = require("rollout.no_return")
local safety = require("rollout.safety")

local M = {}

M.SCALE_DOWN_DELAY = 30

--- promote(e) -> outcome: on_promote, the scale-down delay (triggers armed: a failure switches
--- back), the scale_down hook, finalize.
function M.promote(e)
  local bg = e.pb.blue_green or {}
  e.state = "promoting"
  e:emit("promoting", {})
  local ok, intr = e:run_hook_pausable("on_promote")
  if ok == nil then return e:handle(intr) end
  if ok == false then return e:finish("failed", "error:hook:on_promote") end
  local delay = bg.scale_down_delay or M.SCALE_DOWN_DELAY
  e:emit("scale_down_waiting", { delay = delay, version = e.pb.versions.baseline.version })
  local deadline = rollout.now() + delay
  while rollout.now() < deadline do
    local got = e:wait_until(deadline)
    if got and got.action == "rollback" then return e:rollback(got) end
    if got and got.action == "pause" then
      local after = e:pause(got.reason)
      if after then return e:handle(after) end
      e.state = "promoting"
    end
    -- promote / promote_full: end the wait now
    if got and (got.action == "promote" or got.action == "promote_full") then break end
  end
  -- blue is retired only while green serves 100 %, read back now (a proxy reloaded during
  -- the delay serves blue again): else promotion_refused and a pause (rollout.no_return)
  local held = no_return.require_full(e, "scale_down")
  if held then return held end
  e.ticking = false
  -- past the point of no return: scale_down and finalize run to their end; an interrupt
  -- pauses with green kept at 100 %
  ok, intr = no_return.final_hook(e, "scale_down", { version = e.pb.versions.baseline.version })
  if ok == nil then return intr end
  if ok == false then return e:finish("failed", "error:hook:scale_down") end
  held = no_return.require_full(e, "finalize")
  if held then return held end
  ok, intr = no_return.final_hook(e, "finalize")
  if ok == nil then return intr end
  if ok == false then return e:finish("failed", "error:hook:finalize") end
  e.ticking = false
  if not safety.remove_override(e) then return e:finish("failed", "error:header_override") end -- as a canary's promotion
  return e:finish("promoted", nil)
end

return M

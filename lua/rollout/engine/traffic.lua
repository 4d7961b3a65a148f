-- rollout.engine.traffic: moving traffic and checking it went where it was sent — a
-- stage's shift, an operator's `set weight`, the read-back after a restart, the share of
-- requests the canary gets, and the read-back of 100 % before finalize. Part of the engine
-- class (rollout.engine installs M.methods on it).
--
-- Error policy: raises nothing. Every change is journaled before (`weight_requested`, and
-- only once the journal is writable) and after (`weight_confirmed`, or `weight_failed` after
-- the router's retries). E:shift and E:reverify return true | nil, err [, interrupt]; the
-- state machine rolls back on a failure. E:set_weight returns true | nil, err to the
-- operator (a bad weight is an error return). A share off its weight is only a
-- `share_warning`. E:confirm_full returns true | false, why.
local rollout = require("rollout")
local observe = require("rollout.observe")

local M = {}
local E = {}
M.methods = E

--- shift(weight, extra): the canary to `weight` %, journaled and confirmed by the router.
function E:shift(weight, extra)
  if self.observe then return observe.shift(self, weight, extra) end
  -- a rollback that is already asked for (a signal, an abort) comes before any shift
  if self.pending and self.pending.action == "rollback" then
    return nil, "a rollback is pending", self:take_interrupt()
  end
  local w = { baseline = 100 - weight, canary = weight }
  self:emit("weight_requested", { baseline = w.baseline, canary = w.canary, by = extra and extra.by })
  local intr = self:await_record()
  if intr then return nil, "interrupted while the journal was unwritable", intr end
  local ok, err = self.router:set_weights(w, { attempts = 3 })
  if not ok then
    self:emit("weight_failed", { baseline = w.baseline, canary = w.canary, error = err })
    return nil, err
  end
  self.weights = w
  self:emit("weight_confirmed", { baseline = w.baseline, canary = w.canary })
  return true
end

--- After a restart: read the router's weights back; re-apply the last confirmed ones if
--- they differ (a proxy restarted with its config weights meanwhile).
function E:reverify(weight)
  if self.observe then observe.read(self, "resume"); return true end
  local want = { baseline = 100 - weight, canary = weight }
  local got, err = self.router:get_weights()
  self:emit("weights_read_back", { want = want, got = got, error = err })
  if got and got.baseline == want.baseline and got.canary == want.canary then
    self.weights = want
    return true
  end
  self:emit("weights_reapplied", { want = want, got = got })
  local intr = self:await_record()
  if intr then return nil, "interrupted while the journal was unwritable", intr end
  local ok, serr = self.router:set_weights(want, { attempts = 3 })
  if not ok then
    self:emit("weight_failed", { baseline = want.baseline, canary = want.canary, error = serr })
    return nil, serr
  end
  self.weights = want
  self:emit("weight_confirmed", { baseline = want.baseline, canary = want.canary })
  return true
end

--- set weight N (the control socket): an operator's canary weight, applied by the engine's
--- task like any shift (requested, confirmed, journaled); it holds until the next stage's
--- shift or a rollback. Waits up to 30 s for the confirmation: true | nil, err.
function E:set_weight(arg, who)
  local w = tonumber(arg)
  if not w or w < 0 or w > 100 then return nil, "set weight: expected a canary weight 0..100, got " .. tostring(arg) end
  if self.observe then return nil, "set weight: this rollout is observe-only; it never changes weights" end
  if self.state ~= "stage" and self.state ~= "paused" then
    return nil, "set weight: the rollout is " .. tostring(self.state) .. "; a weight can be set during a stage or a pause"
  end
  self:emit("command", { command = "set_weight", arg = w, who = who or "operator" })
  local me = rollout.current()
  self.override = { weight = w, who = who or "operator", reply = me ~= self.task and me or nil }
  if me == self.task then return self:apply_override() end
  rollout.wake(self.task)
  local ok, err = rollout.suspend(30)
  if ok == nil and err == "timeout" then return nil, "set weight: queued, not applied within 30 s (a hook is running?)" end
  return ok, err
end

function E:apply_override()
  local o = self.override
  self.override = nil
  local ok, err, intr = self:shift(o.weight, { by = o.who })
  if intr then self:interrupt(intr) end
  if o.reply then rollout.wake(o.reply, ok, err) end
  return ok, err
end

-- The canary's share of requests against its weight: `share_warning` past policy.share_tolerance.
function E:check_share(sig)
  local w = self.weights.canary
  local b, c = sig.baseline.rps, sig.canary.rps
  if not (b and c) or b + c <= 0 or w <= 0 or w >= 100 then return end
  -- right after a shift the window still holds traffic of the previous weight
  if not self.stage_start or rollout.now() - self.stage_start < self.pb.trigger_window then return end
  local want = w / 100
  -- too few requests to tell a share from noise: expect at least 100 canary requests
  if (b + c) * self.pb.trigger_window * want < 100 then return end
  local share = c / (b + c)
  if math.abs(share - want) / want > self.pb.policy.share_tolerance then
    self:emit("share_warning", { weight = w, share = share * 100 })
  end
end

--- Finalize removes the baseline: it never runs unless the router confirms, by reading the
--- weights back, that the canary has 100 %. true | false, why
function E:confirm_full()
  if self.weights.canary ~= 100 then
    return false, string.format("the last confirmed weights are baseline %s%% / canary %s%%, not 100 %% canary",
      tostring(self.weights.baseline), tostring(self.weights.canary))
  end
  local got, err = self.router:get_weights()
  if not got then return false, "read-back failed: " .. tostring(err) end
  if got.canary ~= 100 or got.baseline ~= 0 then
    return false, string.format("the router serves baseline %s%% / canary %s%%", tostring(got.baseline), tostring(got.canary))
  end
  return true
end

return M

-- rollout.observe: observe-only runs (`rollout run --observe`, or `observe = true` in a
-- playbook). The engine runs its stages, holds, gates and triggers against the traffic
-- split the router already has (another tool drives the release), and never acts on
-- traffic: a stage's shift reads the router's weights instead of setting them, hooks do not
-- run, and a rollback becomes a `would_roll_back` event ("would roll back:
-- trigger:error_rate at 14m20s") that ends the run with the verdict. Pre-flight checks run
-- and are recorded, but a failing one does not end the run (the release is already under
-- way: "canary already receives 20%" is expected). The journal's
-- rollout_started and outcome events carry observe = true.
--
-- Error policy: nothing here raises for an operational failure; a router that cannot be
-- read is recorded (observed_weights with error) and the analysis goes on, because no
-- traffic depends on it.
local M = {}

--- read(e) -> weights | nil: the router's current split, recorded as observed_weights
function M.read(e, why)
  local got, err
  if e.router and e.router.get_weights then
    local detail
    got, detail = e.router:get_weights() -- weights, detail | nil, err
    if not got then err = tostring(detail) end
  else
    err = "the router cannot read weights"
  end
  e:emit("observed_weights", { baseline = got and got.baseline, canary = got and got.canary, error = err, why = why })
  if got then e.weights = { baseline = got.baseline, canary = got.canary } end
  return got
end

--- shift(e, weight, extra): what E:shift does, observe-only: record the weight the playbook
--- would set, and read the one the router has. Always succeeds (true).
function M.shift(e, weight, extra)
  e:emit("would_set_weights", { baseline = 100 - weight, canary = weight, by = extra and extra.by })
  M.read(e, "stage")
  return true
end

--- rollback(e, intr) -> outcome: the verdict, without touching traffic
function M.rollback(e, intr)
  e.ticking = false
  local at = e:elapsed()
  e:emit("would_roll_back", { reason = intr.reason, detail = intr.detail, value = intr.value, at = at })
  return e:finish("rolled_back", intr.reason, at)
end

return M

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
-- Playbook code that still runs in an observe-only run (trigger check functions, pre-flight
-- checks) sees the engine through view(e): its router reads (get_weights) but refuses to
-- act (set_weights, header_override return nil, "observe-only ..."), so a check cannot move
-- traffic behind the observe-only promise.
--
-- Error policy: nothing here raises for an operational failure; a router that cannot be
-- read is recorded (observed_weights with error) and the analysis goes on, because no
-- traffic depends on it.
local M = {}

local REFUSED = { set_weights = true, header_override = true }

-- The router, reading only: its acting methods refuse, the rest are the router's.
local function read_only(router)
  if not router then return router end
  local ro = {}
  return setmetatable(ro, { __index = function(_, k)
    if REFUSED[k] then
      return function() return nil, "observe-only: the router is read-only here (" .. k .. " refused)" end
    end
    local v = router[k]
    if type(v) == "function" then
      return function(self, ...) if self == ro then self = router end return v(self, ...) end
    end
    return v
  end })
end

--- view(e) -> e, or (observe-only) a view of e whose router reads but never acts
function M.view(e)
  if not e.observe then return e end
  if not e._observe_view then
    local view = { router = read_only(e.router) }
    e._observe_view = setmetatable(view, { __index = function(_, k) -- methods act on the engine itself
      local v = e[k]
      if type(v) == "function" then
        return function(self, ...) if self == view then self = e end return v(self, ...) end
      end
      return v
    end })
  end
  return e._observe_view
end

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

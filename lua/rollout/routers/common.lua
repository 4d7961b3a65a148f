-- rollout.routers.common: what every router shares. Config validation that names the key
-- path (rollout.schema with the routers' kinds), the weights type, and the Router base: set_weights with read-back confirmation,
-- retries with backoff and events; verify (re-apply after a proxy lost our weights);
-- header_override with the same confirmation; a lock so two calls never interleave.
--
-- A backend supplies four methods and inherits the rest:
--   self:_apply(w)          w = {baseline=, canary=} percent; true | nil, err
--   self:_read()            -> weights, detail | nil, err   (what the proxy serves now)
--   self:_apply_override(h) h = {name=, value=} or false (remove); true | nil, err
--   self:_read_override()   -> h | false | nil, err
-- plus self:_checks() (list of check items) and self:_describe(out).
--
-- Error policy: a malformed argument (weights not summing to 100, a bad header) raises;
-- everything the proxy or the network does wrong returns nil, err.
local rollout = require("rollout")
local units = require("rollout.units")
local schema = require("rollout.schema")

local M = {}

-- ---- config validation ---------------------------------------------------------------
-- rollout.schema walks the tables with its base kinds (strings here are `nonempty`,
-- durations may be 0: `zero = true`); argv and hostport are the routers' own kinds.

local type_name = schema.type_name

local KINDS = schema.kinds()
function KINDS.argv(v) -- a command as a list of strings, never a shell line
  if type(v) ~= "table" then return "expected a list of strings (argv), got " .. type_name(v) end
  if #v == 0 then return "must not be empty" end
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then
      return "expected a list of strings (argv), got a key " .. tostring(k)
    end
  end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then return schema.at(i, "expected a string, got " .. type_name(s)) end
  end
end
function KINDS.hostport(v)
  local e = KINDS.nonempty(v)
  if e then return e end
  local host, port = M.split_hostport(v)
  if not host then return "expected \"host:port\", got \"" .. v .. "\"" end
  if port < 1 or port > 65535 then return "port out of range in \"" .. v .. "\"" end
end
M.KINDS = KINDS

--- check(cfg, fields [, path [, errs]]) -> errs {{path = {...}, message =}, ...}: cfg
--- against a rollout.schema spec {key = {kind=, required=, what=, check=fn(v, cfg), fields=}}
--- with the routers' kinds. Unknown keys are errors.
function M.check(cfg, fields, path, errs)
  errs = errs or {}
  if type(cfg) ~= "table" and not (path and #path > 0) then
    errs[#errs + 1] = { path = {}, message = "router: expected a table, got " .. type_name(cfg) }
    return errs
  end
  return schema.check(cfg, fields, { path = path or {}, kinds = KINDS, errs = errs })
end

--- strings(errs) -> the sorted "key: message" lines validate() returns.
function M.strings(errs) return schema.strings(errs, true) end

--- The `type` key every router accepts: absent, or its own name.
function M.type_rule(name)
  return { kind = "string", nonempty = true, check = function(v)
    if v ~= name then return "expected \"" .. name .. "\", got \"" .. v .. "\"" end
  end }
end

--- Raise a config error listing every problem (the constructors' policy).
function M.assert_valid(name, errs, level)
  if #errs > 0 then
    error("routers." .. name .. ": invalid config:\n  " .. table.concat(errs, "\n  "), (level or 1) + 1)
  end
end

function M.split_hostport(s)
  local host, port = s:match("^%[([^%]]+)%]:(%d+)$")
  if not host then host, port = s:match("^([^:]+):(%d+)$") end
  if not host then return nil end
  return host, tonumber(port)
end

function M.duration(v, default)
  if v == nil then return default end
  return units.duration(v)
end

-- ---- weights -------------------------------------------------------------------------

--- Normalize {baseline=, canary=} percent. Either may be omitted (the other makes up
--- 100). Returns weights | nil, err.
function M.normalize_weights(w)
  if type(w) ~= "table" then return nil, "weights: expected a table {baseline=, canary=}, got " .. type_name(w) end
  for k in pairs(w) do
    if k ~= "baseline" and k ~= "canary" then return nil, "weights: unknown key " .. tostring(k) end
  end
  local b, c = w.baseline, w.canary
  if b == nil and c == nil then return nil, "weights: baseline or canary required" end
  for name, v in pairs({ baseline = b, canary = c }) do
    if type(v) ~= "number" or v ~= v or v < 0 or v > 100 then
      return nil, "weights: " .. name .. " must be a number in 0..100, got " .. tostring(v)
    end
  end
  b = b or 100 - c
  c = c or 100 - b
  if math.abs(b + c - 100) > 1e-9 then
    return nil, string.format("weights: baseline %s + canary %s must be 100", M.num(b), M.num(c))
  end
  return { baseline = math.tointeger(b) or b, canary = math.tointeger(c) or c }
end

function M.num(x)
  if math.type(x) == "float" and x == math.floor(x) and math.abs(x) < 2^53 then return tostring(math.tointeger(x)) end
  if math.type(x) == "float" then return string.format("%.4g", x) end
  return tostring(x)
end

function M.same_weights(a, b)
  return a ~= nil and b ~= nil and math.abs(a.baseline - b.baseline) < 1e-6 and math.abs(a.canary - b.canary) < 1e-6
end

function M.fmt_weights(w)
  if not w then return "unknown" end
  return "baseline " .. M.num(w.baseline) .. " % / canary " .. M.num(w.canary) .. " %"
end

--- Shares in percent from absolute weights (both 0 → 0/0: nothing is served).
function M.shares(wb, wc)
  local total = wb + wc
  if total == 0 then return { baseline = 0, canary = 0 } end
  local c = wc * 100 / total
  local r = math.floor(c * 1e6 + 0.5) / 1e6
  c = math.tointeger(r) or r
  local b = 100 - c
  return { baseline = math.tointeger(b) or b, canary = c }
end

local function copy(t)
  if type(t) ~= "table" then return t end
  local o = {}
  for k, v in pairs(t) do o[k] = copy(v) end
  return setmetatable(o, getmetatable(t)) -- keeps json.array_mt: [] stays []
end
M.copy = copy

-- ---- header overrides ----------------------------------------------------------------

--- A header override is {name=, value=}: an HTTP header name (token characters) and an
--- exact value without whitespace or quotes (it is written into proxy configs). false
--- removes it. Raises on anything else: it is a programming error, not an outage.
function M.check_override(h, level)
  if h == false or h == nil then return false end
  if type(h) ~= "table" then
    error("header_override: expected {name=, value=} or false, got " .. type_name(h), level + 1)
  end
  for k in pairs(h) do
    if k ~= "name" and k ~= "value" then error("header_override: unknown key " .. tostring(k), level + 1) end
  end
  if type(h.name) ~= "string" or not h.name:match("^[%w!#$%%&'*+.^_`|~-]+$") then
    error("header_override: name must be an HTTP header name, got " .. tostring(h.name), level + 1)
  end
  if type(h.value) ~= "string" or h.value == "" or h.value:find("[%s\"'\\;{}%c]") then
    error("header_override: value must be a non-empty string without spaces, quotes, ';', braces or '\\', got "
      .. tostring(h.value), level + 1)
  end
  return { name = h.name, value = h.value }
end

local function same_override(a, b)
  if not a or not b then return not a and not b end
  return a.name:lower() == b.name:lower() and a.value == b.value
end
M.same_override = same_override

-- ---- the Router base -----------------------------------------------------------------

local Router = {}
Router.__index = Router
M.Router = Router

--- Fill the fields every router has. opts.emit(kind, fields) receives events.
function M.init(self, kind, cfg, opts)
  opts = opts or {}
  if opts.emit ~= nil and type(opts.emit) ~= "function" then error("routers: opts.emit must be a function", 3) end
  self.type = kind
  self.cfg = cfg
  self.emit_fn = opts.emit
  self.name = cfg.name or kind
  self.timeout = M.duration(cfg.timeout, 2)
  self.last = nil          -- the last confirmed weights
  self.confirmed_at = nil  -- rollout.time() of that confirmation
  self.override = false    -- the confirmed header override
  self.observed = nil      -- the last weights read back: {weights=, at = rollout.time()}
  self.io_until = nil      -- while a call has a deadline: rollout.now() it must end by
  self.queue = {}
  return self
end

--- The timeout for one proxy exchange: the router's timeout, cut to what is left of the
--- current call's deadline (set_weights/header_override opts.deadline). nil, err when
--- nothing is left: a backend then sends nothing, so no command reaches the proxy after
--- the caller has given up.
function Router:io_timeout()
  if not self.io_until then return self.timeout end
  local left = self.io_until - rollout.now()
  if left <= 0 then return nil, "deadline reached" end
  return math.min(self.timeout, left)
end

-- Every successful read-back is remembered: on giving up, the engine journals it.
function Router:_observe(got, ...)
  if got then self.observed = { weights = copy(got), at = rollout.time() } end
  return got, ...
end

function Router:_emit(kind, fields)
  if not self.emit_fn then return end
  fields = fields or {}
  fields.router = self.type
  fields.target = self.target
  local ok, err = pcall(self.emit_fn, kind, fields)
  if not ok then io.stderr:write("rollout: router event handler failed: ", tostring(err), "\n") end
end

-- One caller at a time: a rollback that starts while a stage's shift is retrying waits
-- for it rather than interleaving writes to the proxy.
function Router:_locked(fn, ...)
  while self.holder do
    self.queue[#self.queue + 1] = rollout.current()
    rollout.suspend()
  end
  self.holder = true
  local r = table.pack(pcall(fn, ...))
  self.holder = nil
  local waiting = self.queue
  self.queue = {}
  for _, t in ipairs(waiting) do pcall(rollout.wake, t) end -- each re-checks the lock
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- Retry `step(attempt, t0)` until it returns true. opts.attempts (default 3, or unlimited
-- when only a deadline is given), opts.deadline (seconds overall), opts.backoff (first
-- pause, 0.1 s, doubling) and opts.backoff_max (2 s).
local function retry(opts, step)
  local t0 = rollout.now()
  local deadline = opts.deadline and t0 + units.duration(opts.deadline)
  if deadline and opts.router then opts.router.io_until = deadline end
  local attempts = opts.attempts or (deadline and math.huge or 3)
  local pause = opts.backoff and units.duration(opts.backoff) or 0.1
  local cap = opts.backoff_max and units.duration(opts.backoff_max) or 2
  local attempt, ok, err = 0
  while true do
    attempt = attempt + 1
    ok, err = step(attempt, t0)
    if ok then
      if opts.router then opts.router.io_until = nil end
      return true, attempt
    end
    if attempt >= attempts then break end
    local now = rollout.now()
    if deadline and now >= deadline then break end
    local p = math.min(pause, cap)
    if deadline then p = math.min(p, deadline - now) end
    rollout.sleep(p)
    pause = pause * 2
  end
  if opts.router then opts.router.io_until = nil end
  return nil, string.format("not confirmed after %d attempt%s in %.2f s: %s", attempt,
    attempt == 1 and "" or "s", rollout.now() - t0, tostring(err))
end

local function check_set_opts(o)
  if o == nil then return {} end
  if type(o) ~= "table" then error("set_weights: opts must be a table", 3) end
  for k in pairs(o) do
    if k ~= "attempts" and k ~= "deadline" and k ~= "backoff" and k ~= "backoff_max" and k ~= "rollback"
      and k ~= "router" then
      error("set_weights: unknown option " .. tostring(k), 3)
    end
  end
  if o.attempts ~= nil and (math.type(o.attempts) ~= "integer" or o.attempts < 1) then
    error("set_weights: opts.attempts must be an integer >= 1", 3)
  end
  return o
end

function Router:_set(want, o)
  local function emit(kind, fields)
    fields.rollback = o.rollback and true or nil -- the engine marks a rollback's attempts
    self:_emit(kind, fields)
  end
  emit("weight_requested", { requested = copy(want) })
  o.router = self
  local ok, err = retry(o, function(attempt, t0)
    local function failed(e)
      emit("router_error", { requested = copy(want), attempt = attempt, elapsed = rollout.now() - t0, error = e })
      return nil, e
    end
    local done, aerr = self:_apply(want)
    if not done then return failed(aerr) end
    local got, rerr = self:_observe(self:_read())
    if not got then return failed(rerr) end
    if not M.same_weights(got, want) then
      local msg = "read back " .. M.fmt_weights(got) .. ", requested " .. M.fmt_weights(want)
      emit("weight_mismatch", { requested = copy(want), observed = got, attempt = attempt,
        elapsed = rollout.now() - t0, error = msg })
      return nil, msg
    end
    self.last, self.confirmed_at = copy(want), rollout.time()
    emit("weight_confirmed", { requested = copy(want), observed = got, attempt = attempt,
      elapsed = rollout.now() - t0 })
    return true
  end)
  if ok then return true end
  return nil, self.type .. " " .. self.target .. ": " .. M.fmt_weights(want) .. " " .. err
end

--- Shift traffic and confirm it by reading back. true | nil, err.
function Router:set_weights(w, o)
  local want, err = M.normalize_weights(w)
  if not want then error("set_weights: " .. err, 2) end
  o = check_set_opts(o)
  return self:_locked(self._set, self, want, o)
end

--- Everything to the baseline, retried until confirmed or `deadline` (default 300 s, the
--- runbook's maxRollbackTime) is spent; every attempt is an event. true | nil, err.
function Router:rollback(deadline)
  return self:set_weights({ baseline = 100, canary = 0 }, { deadline = deadline or 300 })
end

--- The weights the proxy serves now, in percent, and backend details. weights | nil, err.
--- opts.deadline (seconds) bounds the read (io_timeout).
function Router:get_weights(o)
  local d = o and o.deadline and units.duration(o.deadline)
  return self:_locked(function()
    if d then self.io_until = rollout.now() + d end
    local r = table.pack(pcall(self._read, self))
    self.io_until = nil
    if not r[1] then error(r[2], 0) end
    return self:_observe(table.unpack(r, 2, r.n))
  end)
end

--- The last confirmed weights (nil before the first confirmation).
function Router:confirmed()
  return copy(self.last)
end

function Router:_override(h, o)
  o.router = self
  local ok, err = retry(o, function(attempt, t0)
    local done, aerr = self:_apply_override(h)
    local got
    if done then got, aerr = self:_read_override() end
    if done and got ~= nil and same_override(got, h) then
      self.override = copy(h)
      self:_emit("header_override", { header = copy(h) or false, attempt = attempt, elapsed = rollout.now() - t0 })
      return true
    end
    if done and got ~= nil then
      aerr = "read back header override " .. (got and (got.name .. ": " .. got.value) or "none")
    end
    self:_emit("router_error", { header = copy(h) or false, attempt = attempt, elapsed = rollout.now() - t0,
      error = aerr })
    return nil, aerr
  end)
  if ok then return true end
  return nil, self.type .. " " .. self.target .. ": header override " .. err
end

--- Route requests carrying header `name: value` to the canary at every weight (false
--- removes the rule). Confirmed by reading back like weights. true | nil, err.
function Router:header_override(h, o)
  h = M.check_override(h, 2)
  o = check_set_opts(o)
  return self:_locked(self._override, self, h, o)
end

function Router:_verify(o)
  local got, err = self:_read()
  if not got then
    self:_emit("router_error", { requested = copy(self.last), error = err })
    return nil, self.type .. " " .. self.target .. ": " .. err
  end
  local ok, rerr = true, nil
  if self.last and not M.same_weights(got, self.last) then
    ok, rerr = self:_set(self.last, o)
    self:_emit("weights_reapplied", { requested = copy(self.last), observed = got, ok = ok and true or false,
      error = rerr })
  end
  if ok and self.override and self._read_override then
    local h, herr = self:_read_override()
    if h == nil then return nil, self.type .. " " .. self.target .. ": " .. herr end
    if not same_override(h, self.override) then ok, rerr = self:_override(self.override, o) end
  end
  return ok, rerr
end

--- Compare what the proxy serves with the last confirmed weights (and header override);
--- re-apply them when the proxy lost them (a restart or reload). true | nil, err.
function Router:verify(o)
  o = check_set_opts(o)
  return self:_locked(self._verify, self, o)
end

--- What `rollout check` shows: a list of {name=, ok=, detail=}; moves no traffic.
function Router:check()
  return self:_locked(self._checks, self)
end

--- Status: type, target, last confirmed weights, what the proxy reports now.
function Router:describe()
  return self:_locked(function()
    local out = { type = self.type, name = self.name, target = self.target, confirmed = copy(self.last),
      confirmed_at = self.confirmed_at, header_override = copy(self.override) }
    local now, err = self:_read()
    out.live, out.error = now, err
    if self._describe then self:_describe(out) end
    return out
  end)
end

function M.item(name, ok, detail)
  return { name = name, ok = ok and true or false, detail = detail }
end

return M

-- rollout.sandbox: the environment a playbook's code runs in, at load time and in its hooks.
--
-- A playbook is configuration that may hold functions (hooks, checks, triggers). Its code
-- sees no `_G`; it gets:
--   the pure base functions (assert, error, ipairs, pairs, next, pcall, xpcall, select,
--   tonumber, tostring, type, raw*, setmetatable, getmetatable (not on strings), _VERSION),
--   private copies of string, table, math, utf8 and coroutine,
--   os.time / os.clock / os.date / os.difftime / os.getenv (no execute, exit, remove, rename,
--   tmpname, setlocale), no `io`, no `debug`, no `dofile`/`loadfile`, load() of text only,
--   include(relpath), PLAYBOOK_DIR, playbook{...},
--   the host API: rollout, http, proc, fs, net, json, yaml, units, stats, histogram, promtext,
--   k8s (rollout.k8s: none of its functions while loading) (read-only views; require("rollout.json") etc. gives the same views, other modules are
--   not available). The modules themselves come from the caller (new's `host`: rollout.playbook's
--   HOST), so this foundation module requires nothing above it.
-- Nothing in it blocks the engine's loop: commands run through proc (asynchronous, argv,
-- never a shell), HTTP through http, files through fs. There is no os.execute, io.popen,
-- io.open or os.exit to freeze or end the engine.
--
-- While the playbook loads (env:loading(true)) it may compute, read files (fs.read, fs.stat,
-- fs.list, fs.realpath, include) and ask the clock; every other host call (proc.*, http.*,
-- net.*, writing fs calls, rollout.spawn/sleep/every/...) raises "not available while a
-- playbook loads", so loading (and `check --offline`) has no side effects. Once loaded, its
-- hooks and checks use the whole API.
--
-- Error policy: new() raises only on programming errors; a forbidden call raises in the
-- playbook's code, naming the function.
local M = {}

local BASE = { "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select", "tonumber",
  "tostring", "type", "rawequal", "rawget", "rawset", "rawlen", "setmetatable", "_VERSION" }
local LIBS = { "string", "table", "math", "utf8", "coroutine" }
local OS = { "time", "clock", "date", "difftime", "getenv" }

-- What a loading playbook may call in each host module (pure or read-only).
local AT_LOAD = {
  rollout = { now = true, time = true, duration = true, clock = true, current = true },
  fs = { read = true, stat = true, list = true, realpath = true, getuid = true, getpid = true, isatty = true },
  json = true, yaml = true, units = true, stats = true, histogram = true, promtext = true,
  http = {}, proc = {}, net = {}, k8s = {},
}
M.MODULES = { "rollout", "http", "proc", "fs", "net", "json", "yaml", "units", "stats", "histogram", "promtext", "k8s" }

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function readonly(name)
  return function() error(name .. " is read-only in a playbook", 2) end
end

-- A read-only view of host module `name`; its functions are gated while loading.
local function view(name, mod, state)
  local allowed = AT_LOAD[name]
  local wrappers = {}
  return setmetatable({}, {
    __index = function(_, k)
      local v = mod[k]
      if type(v) ~= "function" or allowed == true or (allowed and allowed[k]) then
        if name == "rollout" and k == "clock" then
          return function(c)
            if c ~= nil then error("rollout.clock: a playbook cannot switch the clock", 2) end
            return v()
          end
        end
        return v
      end
      local w = wrappers[k]
      if not w then
        w = function(...)
          if state.loading then
            error(string.format("%s.%s: not available while a playbook loads (hooks and checks may use it)", name, k), 2)
          end
          return v(...)
        end
        wrappers[k] = w
      end
      return w
    end,
    __newindex = readonly(name),
    __metatable = false,
  })
end

--- new(dir, host) -> env, state   env: the playbook's _ENV; state.loading gates side effects.
--- host = {rollout = module, http = module, ...}: the host API modules of M.MODULES (one
--- missing from it is left out of the environment).
function M.new(dir, host)
  local state = { loading = false }
  local env = {}
  for _, k in ipairs(BASE) do env[k] = _G[k] end
  for _, k in ipairs(LIBS) do env[k] = copy(_G[k] or require(k)) end -- lazy: a standard library by name
  env.os = {}
  for _, k in ipairs(OS) do env.os[k] = os[k] end
  env.getmetatable = function(v)
    if type(v) == "string" then return nil end -- the shared string metatable stays the host's
    return getmetatable(v)
  end
  local views = {}
  for _, name in ipairs(M.MODULES) do
    local mod = (host or {})[name]
    if mod then
      views[name] = view(name, mod, state)
      env[name] = views[name]
    end
  end
  env.require = function(name)
    local short = name == "rollout" and "rollout" or (type(name) == "string" and name:match("^rollout%.(%w+)$"))
    if short and views[short] then return views[short] end
    error("require '" .. tostring(name) .. "': not available in a playbook (the host API is: "
      .. table.concat(M.MODULES, ", ") .. ")", 2)
  end
  env.load = function(chunk, name, _, e)
    return load(chunk, name, "t", e == nil and env or e)
  end
  env.PLAYBOOK_DIR = dir
  env.playbook = function(t) return t end
  --- include(relpath): run another Lua file, relative to the file that includes it, and
  --- return its value (same environment, same budget).
  env.include = function(rel)
    if type(rel) ~= "string" then error("include: expected a path", 2) end
    local info = debug.getinfo(2, "S")
    local caller = info and info.source or ""
    local cdir = caller:sub(1, 1) == "@" and caller:sub(2):match("^(.*)/[^/]*$") or dir
    local p = rel:sub(1, 1) == "/" and rel or (cdir .. "/" .. rel)
    local chunk, err = loadfile(p, "t", env)
    if not chunk then error(err, 2) end
    return chunk()
  end
  return env, state
end

--- A plain copy of what a playbook returned: tables copied with rawget/next (no metamethod
--- of the playbook runs later inside the engine, nor while it is validated), sharing and
--- cycles kept, functions as they are.
function M.plain(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  local k, x = next(v)
  while k ~= nil do
    rawset(out, M.plain(k, seen), M.plain(x, seen))
    k, x = next(v, k)
  end
  return out
end

return M

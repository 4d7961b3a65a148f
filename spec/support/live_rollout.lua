-- spec/support/live_rollout.lua: real `rollout run`s of spec/fixtures/playbooks/fast-haproxy.lua
-- against a real HAProxy and two sample-service backends, for the journal, resume and
-- control specs. Each run is a child process (the binary running the specs), so it can be
-- killed with SIGKILL, sent SIGTERM/SIGINT, and resumed.
--
--   local live = require("spec.support.live_rollout")
--   local env = live.env{canary_args = {"--error-rate", "0.5"}}   -- backends + HAProxy + temp dirs
--   local run = live.start(env, {"--json"})                        -- rollout run ... (a child)
--   live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed") end)
--   run:kill(9); live.start(env, {"--resume"}):wait()
--   live.confirmed(live.events(env))  --> {10, 50, 100}
--   env.stop()
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local journal = require("rollout.journal")
local routers = require("rollout.routers")
local control = require("rollout.control")
local support = require("spec.support.routers_support")
local servers = require("spec.support.servers")

local M = {}

M.PLAYBOOK = fs.realpath("spec/fixtures/playbooks/fast-haproxy.lua")

local function backends(canary_args)
  if not canary_args then return support.backends() end
  local svc = assert(fs.realpath("sample-service"), "sample-service is not built (make)")
  local out, list = {}, {}
  for _, v in ipairs({ "v1", "v2" }) do
    local argv = { svc, "--version", v, "--listen", "127.0.0.1:{port}" }
    if v == "v2" then for _, a in ipairs(canary_args) do argv[#argv + 1] = a end end
    local s = assert(servers.start{ name = "sample-service " .. v, argv = argv, ready_url = "http://127.0.0.1:{port}/health" })
    out[v] = "127.0.0.1:" .. s.port
    list[#list + 1] = s
  end
  out.stop = function() for _, s in ipairs(list) do s:stop() end end
  return out
end

--- env{canary_args=} -> {hx=, b=, dir=, journal_dir=, run_dir=, socket=, sets=, stop=}
function M.env(opts)
  opts = opts or {}
  local b = backends(opts.canary_args)
  local hx = support.haproxy(b)
  local dir = assert(fs.mkdtemp("rollout-live"))
  local env = {
    b = b, hx = hx, dir = dir, journal_dir = dir .. "/journal", run_dir = dir .. "/run",
    sets = { "--set", "router.socket=" .. hx.socket, "--set", "versions.baseline.url=http://" .. b.v1,
      "--set", "versions.canary.url=http://" .. b.v2 },
    runs = {},
  }
  env.socket = env.run_dir .. "/fast.sock"
  env.playbook = M.PLAYBOOK
  function env.stop()
    for _, r in ipairs(env.runs) do if r.child:running() then r.child:kill("KILL"); r.child:wait(5) end end
    support.cleanup(hx)
    b.stop()
    fs.rmtree(dir)
  end
  return env
end

--- The router as the specs see it (its weights in percent).
function M.router(env)
  return routers.new{ type = "haproxy", socket = env.hx.socket, backend = "be",
    baseline = "baseline", canary = "canary" }
end

--- variant(env, name, body) -> path: fast-haproxy.lua changed by `body` (Lua on `pb`).
function M.variant(env, name, body)
  local p = env.dir .. "/" .. name .. ".lua"
  assert(fs.write_atomic(p, 'local pb = include("' .. M.PLAYBOOK .. '")\n' .. body .. '\nreturn pb\n'))
  return p
end

local Run = {}
Run.__index = Run

--- start(env, extra_args [, playbook]) -> run: `rollout run PLAYBOOK --journal .. --run-dir ..`
function M.start(env, extra, pb)
  local n = #env.runs + 1
  local argv = { rollout.exe, "run", pb or env.playbook, "--journal", env.journal_dir, "--run-dir", env.run_dir }
  for _, a in ipairs(env.sets) do argv[#argv + 1] = a end
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local run = setmetatable({ out = env.dir .. "/run" .. n .. ".out", err = env.dir .. "/run" .. n .. ".err" }, Run)
  run.child = assert(proc.spawn{ argv = argv, stdout = run.out, stderr = run.err, cwd = env.dir })
  run.pid = run.child:pid()
  env.runs[n] = run
  return run
end

--- wait([timeout=60]) -> exit code (nil when killed by a signal), signal name
function Run:wait(timeout)
  return self.child:wait(timeout or 60)
end

function Run:kill(sig) return self.child:kill(sig or "KILL") end
function Run:stdout() return fs.read(self.out) or "" end
function Run:stderr() return fs.read(self.err) or "" end

--- Every event of every journal in env's journal dir, oldest file first (torn tails skipped).
function M.events(env)
  local all = {}
  for _, path in ipairs(journal.list(env.journal_dir)) do
    local evs = journal.read(path) or {}
    for _, ev in ipairs(evs) do all[#all + 1] = ev end
  end
  return all
end

function M.find(events, kind, pred)
  for _, ev in ipairs(events) do
    if ev.event == kind and (not pred or pred(ev)) then return ev end
  end
end

function M.count(events, kind, pred)
  local n = 0
  for _, ev in ipairs(events) do if ev.event == kind and (not pred or pred(ev)) then n = n + 1 end end
  return n
end

function M.last(events, kind)
  for i = #events, 1, -1 do if events[i].event == kind then return events[i] end end
end

--- Poll the journal until pred(events) is truthy; returns its value (and the events) or raises.
function M.wait_for(env, pred, timeout, what)
  local deadline = rollout.now() + (timeout or 30)
  while rollout.now() < deadline do
    local evs = M.events(env)
    local v = pred(evs)
    if v then return v, evs end
    rollout.sleep(0.01)
  end
  error("timed out waiting for " .. (what or "a journal condition"), 2)
end

--- The canary weights the journal confirmed, consecutive repeats folded (a re-apply after
--- a restart confirms the same weight again).
function M.confirmed(events)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.event == "weight_confirmed" and out[#out] ~= ev.canary then out[#out + 1] = ev.canary end
  end
  return out
end

--- The last outcome event.
function M.outcome(events)
  return M.last(events, "outcome")
end

--- Wait until the control socket answers.
function M.wait_socket(env, timeout)
  local deadline = rollout.now() + (timeout or 15)
  while rollout.now() < deadline do
    local c = control.connect(env.socket, 1)
    if c then
      local r = c:request("status", 5)
      c:close()
      if r then return true end
    end
    rollout.sleep(0.02)
  end
  error("the control socket " .. env.socket .. " did not answer", 2)
end

--- One command over the control socket (machine mode): the response table.
function M.ctl(env, line, timeout)
  local c = assert(control.connect(env.socket, 5))
  local r, err = c:request(line, timeout or 30)
  c:close()
  return assert(r, err)
end

return M

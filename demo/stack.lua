-- demo/stack.lua: a real canary on loopback, the parts `make demo` (demo/run.lua), the
-- end-to-end specs (spec/e2e_spec.lua and others) and bench/blast_radius_bench.lua share.
--
--   local stack = require("demo.stack")
--   local s = assert(stack.start{prometheus = true, alertmanager = true, rps = 200})
--   s:on_weight(25, function() s.canary:fault{error_rate = 0.2} end)   -- stage 2
--   local run = s:run{sets = {...}, inherit = true}      -- rollout run playbooks/demo.lua
--   ... run.code, run.events, run.outcome, s.load:read() ...
--   s:stop()                                             -- everything it started, always
--
-- What it starts, each in a private temp dir, bound to 127.0.0.1 only:
--   two sample-service processes (baseline v2.9.0, canary v3.0.0) on ports they pick
--   themselves (--listen 127.0.0.1:0 --port-file), so no port race;
--   HAProxy in front of them (backend `dwcp`, servers baseline/canary at 100/0, the
--   runbook's `canary: true` header rule as an ACL file the router fills, the runtime API on
--   a Unix socket, its Prometheus exporter on a second port);
--   ./loadgen at a steady rate through HAProxy, one JSON line per second;
--   optionally Prometheus (1 s scrapes, honor_labels, the versions as target labels, and the
--   runbook's criticalErrorRate as an alerting rule) and Alertmanager (no gossip port).
-- The servers whose port we must choose (HAProxy, Prometheus, Alertmanager) are started by
-- spec/support/servers.lua, the one server starter of the repository: its port picker
-- (free ports, $ROLLOUT_TEST_PORTS under `rollout test -j`), its wait helper, its retry on
-- another port when a server dies before it is ready, and its HAProxy configuration (the
-- same backend and header rule the router specs use). The demo requires spec/support
-- rather than the product requiring a test module: the demo is a development tool that
-- runs from a checkout, as the specs do, and nothing under lua/ depends on either.
-- The sample services and loadgen start here with proc.spawn (argv, never a shell; own
-- process group; they get SIGTERM if we die), as they pick their own ports (--port-file)
-- and a crash-looping service is restarted on its port; all stop with TERM, then KILL
-- after a grace period.
--
-- Error policy: start() and the starters return nil, err (with the log's tail) when a
-- component cannot be brought up; misuse raises.
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local net = require("rollout.net")
local proc = require("rollout.proc")
local servers = require("spec.support.servers")

local M = { live = {} }

local function here()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/[^/]*$") or "demo"
end
M.ROOT = fs.realpath(here() .. "/..") or "."

M.SERVICE = "dwcp-v3"
M.BASELINE, M.CANARY = "v2.9.0", "v3.0.0"
M.BACKEND = "dwcp"

-- ---- processes -------------------------------------------------------------------------

local P = {}
P.__index = P

local function tail(path, n)
  local data = fs.read(path) or ""
  local lines = {}
  for l in data:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 8) + 1))
end

function P:running() return self.child:running() end
function P:tail(n) return tail(self.log, n) end
function P:kill() self.child:kill("KILL") end

--- Stop: TERM, then KILL after `grace` seconds (default 5). Idempotent.
function P:stop(grace)
  if self.stopped then return end
  self.stopped = true
  if self.child:running() then
    self.child:kill("TERM")
    local _, e = self.child:wait(grace or 5)
    if e == "timeout" then
      self.child:kill("KILL")
      self.child:wait(5)
    end
  end
end

local S = {}
S.__index = S

--- Start argv as a named process of this stack; output to DIR/NAME.log (or opts.stdout).
function S:spawn(name, argv, opts)
  opts = opts or {}
  local log = self.dir .. "/" .. name .. ".log"
  local child, err = proc.spawn({ argv = argv, stdout = opts.stdout or log, stderr = opts.stderr or log,
    env = opts.env, cwd = opts.cwd })
  if not child then return nil, name .. ": " .. tostring(err) end
  local p = setmetatable({ name = name, child = child, pid = child:pid(), log = log }, P)
  self.procs[#self.procs + 1] = p
  return p
end

local wait_for = servers.wait_for
M.wait_for = wait_for
M.free_port = servers.free_port

-- A server from spec/support/servers.lua (HAProxy, Prometheus, Alertmanager), stopped with
-- the stack's processes; its log is DIR/NAME.log.
function S:server(opts)
  opts.dir = opts.dir or self.dir
  opts.log = self.dir .. "/" .. opts.name .. ".log"
  local start = opts.start or servers.start
  opts.start = nil
  local srv, err = start(opts)
  if not srv then return nil, err end
  self.procs[#self.procs + 1] = srv
  return srv
end

local function answers(url, want)
  local r = http.get(url, { timeout = 1 })
  if not r then return false end
  if want then return r.status == want end
  return r.status < 500
end

-- ---- the sample service --------------------------------------------------------------

local Svc = {}
Svc.__index = Svc

--- POST /admin/fault with the given settings ({error_rate = 0.2}); returns the new
--- settings (decoded) | nil, err.
function Svc:fault(settings)
  local r, err = http.request({ method = "POST", url = self.url .. "/admin/fault?" .. http.encode_query(settings),
    timeout = 5 })
  if not r then return nil, err end
  if r.status ~= 200 then return nil, "POST /admin/fault: HTTP " .. r.status .. ": " .. r.body end
  self.fault_at = rollout.time()
  return json.decode(r.body)
end

local function sample_argv(role, svc_version, port, port_file, extra)
  local argv = { M.ROOT .. "/sample-service", "--version", svc_version, "--listen", "127.0.0.1:" .. port,
    "--port-file", port_file, "--seed", role == "baseline" and "1" or "2" }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  return argv
end

--- sample(role, version, extra_args) -> service {role, version, port, url, metrics, health,
--- fault(), proc} | nil, err. The service picks its port; a restart (supervise) keeps it.
function S:sample(role, svc_version, extra)
  local port_file = self.dir .. "/" .. role .. ".port"
  os.remove(port_file)
  local p, err = self:spawn("sample-" .. role, sample_argv(role, svc_version, 0, port_file, extra))
  if not p then return nil, err end
  local port = wait_for(function()
    if not p:running() then return "dead" end
    local s = fs.read(port_file)
    return s and tonumber(s:match("%d+"))
  end, 10)
  if not port or port == "dead" then return nil, "sample-service " .. role .. " did not start:\n" .. p:tail() end
  local svc = setmetatable({ role = role, version = svc_version, port = port, url = "http://127.0.0.1:" .. port,
    proc = p, stack = self, extra = extra, restarts = 0 }, Svc)
  svc.metrics, svc.health, svc.ready = svc.url .. "/metrics", svc.url .. "/health", svc.url .. "/ready"
  if not wait_for(function() return answers(svc.health, 200) end, 10) then
    return nil, "sample-service " .. role .. " not healthy:\n" .. p:tail()
  end
  return svc
end

--- Restart the service on the same port whenever it exits (what a kubelet does to a
--- crashing pod), after `delay` seconds, until the stack stops. Counts svc.restarts.
function Svc:supervise(delay)
  local stack = self.stack
  self.supervisor = rollout.spawn(function()
    while not stack.stopping do
      self.proc.child:wait()
      if stack.stopping then return end
      rollout.sleep(delay or 0.1)
      if stack.stopping then return end
      local pf = stack.dir .. "/" .. self.role .. ".port"
      local p = stack:spawn("sample-" .. self.role, sample_argv(self.role, self.version, self.port, pf, self.extra))
      if not p then return end
      self.proc = p
      self.restarts = self.restarts + 1
    end
  end)
  stack.tasks[#stack.tasks + 1] = self.supervisor
end

--- crash_loop(after): from now on the service exits `after` seconds after every start and
--- is restarted on its port (a crash-looping pod). The first crash is now.
function Svc:crash_loop(after, delay)
  local extra = {}
  for _, a in ipairs(self.extra or {}) do extra[#extra + 1] = a end
  extra[#extra + 1] = "--crash-after-seconds"
  extra[#extra + 1] = tostring(after)
  self.extra = extra
  if not self.supervisor then self:supervise(delay) end
  self.crash_loop_at = rollout.time()
  self.proc.child:kill("KILL")
end

-- ---- HAProxy ---------------------------------------------------------------------------

-- HAProxy with backend `dwcp` (baseline 100, canary 0), the runbook's VirtualService header
-- match (`canary: true` always reaches the canary) as an ACL file the router fills, the
-- runtime API in the stack's dir and the Prometheus exporter: spec/support's HAProxy.
function S:haproxy(baseline, canary)
  return self:server({ name = "haproxy", start = servers.haproxy, backend = M.BACKEND, acl = true, exporter = true,
    baseline = "127.0.0.1:" .. baseline.port, canary = "127.0.0.1:" .. canary.port })
end

--- The canary's absolute HAProxy weight (= its percent, as the router sets baseline
--- 100 - p and canary p) | nil, err.
function S:canary_weight()
  local conn, err = net.connect_unix(self.haproxy_proc.socket, 1)
  if not conn then return nil, err end
  conn:send("get weight " .. M.BACKEND .. "/canary\n")
  local reply = conn:receive("a", 1)
  conn:close()
  local w = reply and tonumber(reply:match("^(%d+)"))
  if not w then return nil, "get weight: " .. tostring(reply) end
  return w
end

--- Watch the canary's weight every `step` seconds (default 20 ms) in a task; records
--- {t = epoch, canary = w} on each change in self.weights, and runs the on_weight hooks.
function S:watch(step)
  if self.watcher then return end
  self.weights = {}
  self.watcher = rollout.spawn(function()
    local last
    while not self.stopping do
      local w = self:canary_weight()
      if w and w ~= last then
        last = w
        local t = rollout.time()
        self.weights[#self.weights + 1] = { t = t, canary = w }
        for _, h in ipairs(self.hooks) do
          if not h.done and w >= h.at and w > 0 then
            h.done = true
            rollout.spawn(h.fn, w, t)
          end
        end
      end
      rollout.sleep(step or 0.02)
    end
  end)
  self.tasks[#self.tasks + 1] = self.watcher
end

--- on_weight(p, fn): call fn(weight, epoch) once, when HAProxy first gives the canary at
--- least p % (p = 25: the start of stage 2).
function S:on_weight(at, fn)
  self.hooks[#self.hooks + 1] = { at = at, fn = fn }
  self:watch()
end

--- Back to the start for another rollout on the same stack: canary without faults,
--- HAProxy at baseline 100 / canary 0, no weight hooks, the header ACL empty.
function S:reset()
  self.hooks = {}
  self.canary.fault_at = nil
  assert(self.canary:fault({ error_rate = 0 }))
  local conn = assert(net.connect_unix(self.haproxy_proc.socket, 2))
  conn:send("set weight " .. M.BACKEND .. "/baseline 100; set weight " .. M.BACKEND .. "/canary 0; clear acl "
    .. self.haproxy_proc.acl .. "\n")
  conn:receive("a", 2)
  conn:close()
  assert(wait_for(function() return self:canary_weight() == 0 end, 5), "HAProxy did not go back to canary 0")
end

--- The first time (epoch) after `since` at which HAProxy read back canary 0 %.
function S:zero_at(since)
  for _, w in ipairs(self.weights or {}) do
    if w.t >= since and w.canary == 0 then return w.t end
  end
end

-- ---- Prometheus and Alertmanager -------------------------------------------------------

local PROM_CFG = [[
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: dwcp
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:%d']
        labels: {service: %s, version: %s, role: baseline}
      - targets: ['127.0.0.1:%d']
        labels: {service: %s, version: %s, role: canary}
]]

-- The runbook's goldenSignals.errors.criticalErrorRate (5 %) as an alert: what an
-- on-call's Prometheus would page on, and what the critical_alert trigger listens for.
local PROM_RULES = [[
groups:
  - name: dwcp
    interval: 1s
    rules:
      - alert: DWCPCanaryCriticalErrorRate
        expr: |
          sum(rate(http_requests_total{service="%s",version="%s",code=~"5.."}[5s]))
            / sum(rate(http_requests_total{service="%s",version="%s"}[5s])) > 0.05
        labels: {severity: critical, service: %s}
        annotations: {summary: "canary %s answers more than 5%% errors (criticalErrorRate)"}
]]

function S:prometheus(opts)
  local dir = self.dir .. "/prometheus"
  assert(fs.mkdir(dir))
  local cfg = string.format(PROM_CFG, self.baseline.port, M.SERVICE, M.BASELINE, self.canary.port, M.SERVICE, M.CANARY)
  if opts.rules then
    assert(fs.write_atomic(dir .. "/rules.yml", string.format(PROM_RULES, M.SERVICE, M.CANARY, M.SERVICE, M.CANARY,
      M.SERVICE, M.CANARY)))
    cfg = cfg .. "rule_files: ['" .. dir .. "/rules.yml']\n"
  end
  if opts.alertmanager then
    cfg = cfg .. "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:" .. opts.alertmanager.port .. "']\n"
  end
  assert(fs.write_atomic(dir .. "/prometheus.yml", cfg))
  local p, err = self:server({ name = "prometheus", dir = dir, timeout = 30, ready_url = "http://127.0.0.1:{port}/-/ready",
    argv = function(port)
      return { "prometheus", "--config.file=" .. dir .. "/prometheus.yml", "--storage.tsdb.path=" .. dir .. "/data",
        "--web.listen-address=127.0.0.1:" .. port, "--rules.alert.resend-delay=1s", "--log.level=warn" }
    end })
  if not p then return nil, err end
  -- ready answers at once; the first scrape lands seconds later: wait for both targets
  local up = wait_for(function()
    local r = http.get(p.url .. "/api/v1/query?query=" .. http.urlencode('count(up{service="' .. M.SERVICE .. '"} == 1)'), { timeout = 2 })
    local doc = r and r.status == 200 and json.decode(r.body)
    local v = doc and doc.data and doc.data.result and doc.data.result[1]
    return v and tonumber(v.value[2]) == 2
  end, 30, 0.25)
  if not up then return nil, "prometheus: targets not up after 30 s:\n" .. p:log(8) end
  return p
end

local AM_CFG = [[
route:
  receiver: 'null'
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: 'null'
]]

function S:alertmanager()
  local dir = self.dir .. "/alertmanager"
  assert(fs.mkdir(dir))
  assert(fs.write_atomic(dir .. "/am.yml", AM_CFG))
  return self:server({ name = "alertmanager", dir = dir, timeout = 30, ready_url = "http://127.0.0.1:{port}/-/ready",
    argv = function(port)
      return { "prometheus-alertmanager", "--config.file=" .. dir .. "/am.yml", "--storage.path=" .. dir .. "/data",
        "--web.listen-address=127.0.0.1:" .. port, "--cluster.listen-address=", "--log.level=warn" }
    end })
end

--- Post one alert to Alertmanager (labels; active for an hour).
function S:post_alert(labels)
  local now = rollout.time()
  local body = { { labels = labels, annotations = { summary = "posted by the demo stack" },
    startsAt = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(now) - 1),
    endsAt = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(now) + 3600) } }
  local r, err = http.request({ method = "POST", url = self.am.url .. "/api/v2/alerts", body = json.encode(body),
    headers = { ["content-type"] = "application/json" }, timeout = 5 })
  if not r then return nil, err end
  if r.status ~= 200 then return nil, "alertmanager: HTTP " .. r.status .. ": " .. r.body end
  return now
end

-- ---- load ------------------------------------------------------------------------------

local L = {}
L.__index = L

--- Stop the load generator (it prints its summary on SIGTERM).
function L:stop() self.proc:stop(5) end

--- intervals, summary: the JSON lines so far; each interval gets .from/.to (epoch) and
--- .failed (5xx + other errors + connection errors + timeouts).
function L:read()
  local intervals, summary = {}, nil
  for line in (fs.read(self.file) or ""):gmatch("[^\n]+") do
    local ok, obj = pcall(json.decode, line)
    if ok and type(obj) == "table" then
      obj.failed = (obj.errors_5xx or 0) + (obj.errors_other or 0) + (obj.conn_errors or 0) + (obj.timeouts or 0)
      if obj.summary then summary = obj
      else
        obj.to = self.started + obj.t
        obj.from = (intervals[#intervals] and intervals[#intervals].to) or self.started
        intervals[#intervals + 1] = obj
      end
    end
  end
  return intervals, summary
end

--- Failed requests whose interval overlaps [from, to] (epoch), and all requests there.
function L:failed_between(from, to)
  local failed, sent = 0, 0
  for _, iv in ipairs((self:read())) do
    if iv.to > from and iv.from < to then failed, sent = failed + iv.failed, sent + (iv.sent or 0) end
  end
  return failed, sent
end

--- loadgen{rps = 200, url = HAProxy's, connections = 32} -> load
function S:loadgen(opts)
  opts = opts or {}
  self.nload = (self.nload or 0) + 1
  local file = self.dir .. "/loadgen-" .. self.nload .. ".jsonl"
  local started = rollout.time()
  local p, err = self:spawn("loadgen-" .. self.nload, { M.ROOT .. "/loadgen", "--url", opts.url or (self.haproxy_proc.url .. "/"),
    "--rps", tostring(opts.rps or 200), "--connections", tostring(opts.connections or 32),
    "--report-interval", "1s", "--timeout", "5s" }, { stdout = file })
  if not p then return nil, err end
  return setmetatable({ proc = p, file = file, started = started, rps = opts.rps or 200 }, L)
end

-- ---- rollout run -----------------------------------------------------------------------

--- The --set arguments that point playbooks/demo.lua at this stack.
function S:sets(opts)
  opts = opts or {}
  local b, c, h = self.baseline, self.canary, self.haproxy_proc
  local out = {
    "router.socket=" .. h.socket, "router.override_acl=" .. h.acl,
    "versions.baseline.url=" .. b.url, "versions.baseline.metrics=" .. b.metrics,
    "versions.baseline.health=" .. b.health,
    "versions.canary.url=" .. c.url, "versions.canary.metrics=" .. c.metrics,
    "versions.canary.ready=" .. c.ready,
  }
  if opts.prometheus and self.prom then
    out[#out + 1] = "sources[1].type=prometheus"
    out[#out + 1] = "sources[1].url=" .. self.prom.url
  end
  if self.am then
    out[#out + 1] = "sources[3].type=alertmanager"
    out[#out + 1] = "sources[3].url=" .. self.am.url
  end
  for _, s in ipairs(opts.extra or {}) do out[#out + 1] = s end
  return out
end

-- Which of run's optional flags this binary has (journal and control socket landed later).
local run_flags
function M.run_supports(flag)
  if not run_flags then
    local r = proc.run({ argv = { rollout.exe, "run", "--help" }, timeout = 10 })
    run_flags = r and ((r.stdout or "") .. (r.stderr or "")) or ""
  end
  return run_flags:find(flag, 1, true) ~= nil
end

local function read_events(path)
  local events = {}
  for line in (fs.read(path) or ""):gmatch("[^\n]+") do
    local ok, ev = pcall(json.decode, line)
    if ok and type(ev) == "table" then events[#events + 1] = ev end
  end
  return events
end
M.read_events = read_events

--- run{playbook = "playbooks/demo.lua", sets = {...}, inherit = bool, json = bool,
---     timeout = seconds, args = {...}} -> result
--- Runs `rollout run` as a child: with inherit its output goes to our terminal (the live
--- view), else to DIR/run-N.out. Every run gets its own journal dir and control-socket dir
--- in the stack's dir (unless args name them), never ./.rollout: parallel runs must not
--- share a journal lock or a socket. The events are read back from the journal.
--- result = {code=, signal=, events=, outcome=, reason=, at=, stage=, journal=, output=, seconds=}
function S:run(opts)
  opts = opts or {}
  self.nrun = (self.nrun or 0) + 1
  local out = self.dir .. "/run-" .. self.nrun .. ".out"
  local argv = { rollout.exe, "run", opts.playbook or (M.ROOT .. "/playbooks/demo.lua") }
  for _, s in ipairs(opts.sets or self:sets(opts)) do argv[#argv + 1] = "--set"; argv[#argv + 1] = s end
  if opts.json then argv[#argv + 1] = "--json" end
  local jdir, rdir
  for i, a in ipairs(opts.args or {}) do
    argv[#argv + 1] = a
    if a == "--journal" then jdir = opts.args[i + 1] elseif a == "--run-dir" then rdir = opts.args[i + 1] end
  end
  if not jdir then
    jdir = self.dir .. "/journal-" .. self.nrun
    argv[#argv + 1] = "--journal"; argv[#argv + 1] = jdir
  end
  if not rdir and M.run_supports("--run-dir") then
    argv[#argv + 1] = "--run-dir"; argv[#argv + 1] = self.dir .. "/run-" .. self.nrun
  end
  local p, err = self:spawn("rollout-run-" .. self.nrun, argv, {
    stdout = opts.inherit and "inherit" or out, stderr = opts.inherit and "inherit" or out,
    env = { ROLLOUT_PROGRESS = opts.progress == false and "0" or nil } })
  if not p then return nil, err end
  self.current_run, self.current_journal = p, jdir
  local t0 = rollout.now()
  local code, how = p.child:wait(opts.timeout)
  if how == "timeout" then
    p:stop(2)
    code, how = nil, "timeout after " .. tostring(opts.timeout) .. " s"
  end
  p.stopped = true
  self.current_run = nil
  local res = { code = code, signal = how, events = {}, journal = M.journal_file(jdir), out = out,
    seconds = rollout.now() - t0 }
  if res.journal then res.events = read_events(res.journal) end
  for _, ev in ipairs(res.events) do
    if ev.event == "outcome" then res.outcome, res.reason, res.at, res.stage = ev.outcome, ev.reason, ev.at, ev.stage end
  end
  res.output = not opts.inherit and fs.read(out) or nil
  return res
end

--- The journal file (the newest *.jsonl) in a journal dir, or nil.
function M.journal_file(dir)
  local found
  for _, name in ipairs(dir and fs.list(dir) or {}) do
    if name:match("%.jsonl$") and (not found or name > found) then found = name end
  end
  return found and (dir .. "/" .. found) or nil
end

--- Events of a run by name: all of them, or the first/last.
function M.find(events, name, pred)
  local out = {}
  for _, ev in ipairs(events) do
    if ev.event == name and (not pred or pred(ev)) then out[#out + 1] = ev end
  end
  return out
end

--- What a rolled-back run measured: the trigger that fired, when its condition had held
--- for its `for` (trigger_pending ts + for), when the engine had HAProxy's read-back of
--- 0 % (weight_confirmed after rollback_started), and the seconds between.
function M.rollback_timing(events)
  local rb
  for _, ev in ipairs(events) do if ev.event == "rollback_started" then rb = ev end end
  if not rb then return nil end
  local r = { reason = rb.reason, rollback_started = rb.ts }
  local name = rb.reason and rb.reason:match("^trigger:(.+)$")
  if name then
    local pending, fired
    for _, ev in ipairs(events) do
      if ev.event == "trigger_pending" and ev.trigger == name and (not ev.ts or ev.ts <= rb.ts) then pending = ev end
      if ev.event == "trigger_fired" and ev.trigger == name then fired = ev end
    end
    if pending then r.pending, r["for"] = pending.ts, pending["for"] or 0; r.holding = pending.ts + r["for"] end
    if fired then r.fired = fired.ts end
  end
  for _, ev in ipairs(events) do
    if ev.event == "weight_confirmed" and ev.canary == 0 and ev.ts and ev.ts >= rb.ts then r.confirmed = ev.ts; break end
  end
  if r.holding and r.confirmed then r.seconds = r.confirmed - r.holding end
  return r
end

-- ---- the whole stack -------------------------------------------------------------------

--- start{prometheus = bool, alertmanager = bool, rules = bool, rps = 200, canary_args = {...},
---       baseline_args = {...}, load = true} -> stack | nil, err (anything started is stopped)
function M.start(opts)
  opts = opts or {}
  for _, exe in ipairs({ "sample-service", "loadgen" }) do
    if not fs.stat(M.ROOT .. "/" .. exe) then return nil, M.ROOT .. "/" .. exe .. " is not built (make)" end
  end
  local self = setmetatable({ procs = {}, tasks = {}, hooks = {}, opts = opts }, S)
  self.dir = assert(fs.mkdtemp("rollout-demo"))
  M.live[self] = true
  local function fail(err) self:stop(); return nil, err end
  local err
  -- both versions answer in a realistic time (log-normal, median 15 ms, P99 60 ms), so
  -- the P99 columns and gates have something to judge
  local latency = { "--latency-p50", "15ms", "--latency-p99", "60ms" }
  local bargs = {}
  for _, a in ipairs(latency) do bargs[#bargs + 1] = a end
  for _, a in ipairs(opts.baseline_args or {}) do bargs[#bargs + 1] = a end
  local cargs = {}
  for _, a in ipairs(latency) do cargs[#cargs + 1] = a end
  for _, a in ipairs(opts.canary_args or {}) do cargs[#cargs + 1] = a end
  self.baseline, err = self:sample("baseline", M.BASELINE, bargs)
  if not self.baseline then return fail(err) end
  self.canary, err = self:sample("canary", M.CANARY, cargs)
  if not self.canary then return fail(err) end
  self.haproxy_proc, err = self:haproxy(self.baseline, self.canary)
  if not self.haproxy_proc then return fail(err) end
  if opts.alertmanager then
    self.am, err = self:alertmanager()
    if not self.am then return fail(err) end
  end
  if opts.prometheus then
    self.prom, err = self:prometheus({ rules = opts.rules, alertmanager = self.am })
    if not self.prom then return fail(err) end
  end
  if opts.load ~= false then
    self.load, err = self:loadgen({ rps = opts.rps })
    if not self.load then return fail(err) end
  end
  self:watch()
  return self
end

--- Stop everything this stack started (newest first) and remove its temp dir unless
--- keep = true. Safe to call twice, and from a signal handler task.
function S:stop(keep)
  if self.stopped then return end
  if self.stopping then wait_for(function() return self.stopped end, 30); return end
  self.stopping = true
  local me = rollout.current()
  for _, t in ipairs(self.tasks) do if t ~= me then pcall(t.cancel, t, "stack stopped") end end
  for i = #self.procs, 1, -1 do pcall(self.procs[i].stop, self.procs[i], 3) end
  self.stopped = true
  M.live[self] = nil
  if not keep then fs.rmtree(self.dir) end
end

--- SIGKILL everything every stack of this process started (a second Ctrl-C: no patience).
function M.kill_all()
  for s in pairs(M.live) do
    for _, p in ipairs(s.procs) do
      if p.kill then pcall(p.kill, p) else pcall(p.process.signal, "KILL") end
    end
  end
end

--- Stop every stack of this process (a signal handler's cleanup).
function M.stop_all(keep)
  local list = {}
  for s in pairs(M.live) do list[#list + 1] = s end
  for _, s in ipairs(list) do s:stop(keep) end
end

return M

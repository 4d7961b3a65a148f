-- spec/support/servers.lua: real servers on loopback for specs and benchmarks.
--
--   local servers = require("spec.support.servers")
--   local s = assert(servers.start{
--     name = "haproxy",
--     argv = function(port, dir) ... write dir/haproxy.cfg ...; return { "haproxy", "-db", "-f", cfg } end,
--     ready_url = "http://127.0.0.1:{port}/",   -- or ready = function(server) -> bool
--   })
--   ... s.port, s.url ("http://127.0.0.1:PORT"), s.dir, s.pid, s:log() ...
--   s:stop()                                    -- or servers.stop_all() in a teardown
--
-- start picks a free port (unless `port` is given), makes a private temp dir (unless `dir`
-- is given), runs argv in it in the background with output in DIR/server.log, and waits
-- until ready_url answers (any status below 500) or `ready(server)` is true. If the process
-- exits first (a port taken by someone else meanwhile), it retries on another port.
-- Returns the server, or nil and a reason with the log's tail.
--
-- Helpers for the servers we use: servers.haproxy{...} (baseline/canary backend with the
-- header rule, runtime API, optional Prometheus exporter), servers.nginx{...} (static files,
-- extra config) and servers.python_http() (spec/support/http_server.py: slow, echo, status,
-- headers routes); servers.wait_for(fn, timeout) polls.
--
-- This is the one server starter of the repository: specs, benchmarks and the demo
-- (demo/stack.lua, `make demo`) all start their servers here.
--
-- Error policy: start() and the helpers return nil, err (with the log's tail) when a server
-- cannot be brought up; misuse (no argv) raises.
--
-- Processes start with proc.spawn (never a shell; they die with us), or through /bin/sh
-- when rollout.proc is not built in.
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")

local M = {}

local running = {} -- every started server not yet stopped
local handed_out = {} -- ports given out by this process

local function listening_ports()
  local used = {}
  for _, f in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local h = io.open(f)
    if h then
      for line in h:lines() do
        local port, state = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x%x)")
        if port and state == "0A" then used[tonumber(port, 16)] = true end
      end
      h:close()
    end
  end
  return used
end

--- The ports this process may pick from: $ROLLOUT_TEST_PORTS ("LO-HI"; `rollout test -j`
--- gives each spec file running at once a range of its own), else 20000-32000.
function M.port_range()
  local lo, hi = (os.getenv("ROLLOUT_TEST_PORTS") or ""):match("^(%d+)%-(%d+)$")
  lo, hi = tonumber(lo), tonumber(hi)
  if lo and hi and lo >= 1024 and hi <= 65535 and hi - lo >= 16 then return lo, hi end
  return 20000, 32000
end

--- A TCP port nobody listens on, below the ephemeral range (so no outgoing connection
--- holds it either), in port_range(). Ports are not reused within one process.
function M.free_port()
  local used = listening_ports()
  local lo, hi = M.port_range()
  for _ = 1, 1000 do
    local p = math.random(lo, hi)
    if not used[p] and not handed_out[p] then
      handed_out[p] = true
      return p
    end
  end
  error(("free_port: no free port found in %d-%d"):format(lo, hi))
end

--- wait_for(fn, timeout, step) -> fn's first truthy result, or nil after `timeout` seconds;
--- polls every `step` seconds (default 0.05) on the event loop.
function M.wait_for(fn, timeout, step)
  local deadline = rollout.now() + timeout
  while true do
    local r = fn()
    if r then return r end
    if rollout.now() >= deadline then return nil end
    rollout.sleep(step or 0.05)
  end
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function is_alive(pid)
  local h = io.open("/proc/" .. pid .. "/stat")
  if not h then return false end
  local stat = h:read("a") or ""
  h:close()
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end
M.is_alive = is_alive

-- A started process: pid, alive(), signal(sig), wait_gone(seconds) -> bool.
-- With rollout.proc (fork + exec, reaped by the loop, own process group, dies with us).
local function launch_proc(proc, argv, dir, log, env)
  local child, err = proc.spawn({ argv = argv, cwd = dir, stdout = log, stderr = log, env = env })
  if not child then error(err, 0) end
  return {
    pid = child:pid(),
    alive = function() return child:running() end,
    signal = function(sig) return child:kill(sig) end,
    wait_gone = function(seconds)
      local _, e = child:wait(seconds)
      return e ~= "timeout"
    end,
  }
end

-- Without it: through /bin/sh (io.popen returns at once); the process is reparented, so
-- liveness reads /proc/PID/stat, where a zombie counts as gone.
local function launch_sh(argv, dir, log, env)
  local parts = {}
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. shell_quote(v) end
  for _, a in ipairs(argv) do parts[#parts + 1] = shell_quote(a) end
  local cmd = string.format("(cd %s && exec %s%s) </dev/null >%s 2>&1 & echo $!",
    shell_quote(dir), #parts > #argv and "env " or "", table.concat(parts, " "), shell_quote(log))
  local p = assert(io.popen(cmd, "r"))
  local pid = tonumber(p:read("l"))
  p:close()
  if not pid then error("could not start " .. tostring(argv[1]), 0) end
  return {
    pid = pid,
    alive = function() return is_alive(pid) end,
    signal = function(sig) return fs.kill(pid, sig == "KILL" and 9 or 15) end,
    wait_gone = function(seconds)
      local deadline = rollout.now() + seconds
      while is_alive(pid) and rollout.now() < deadline do rollout.sleep(0.01) end
      return not is_alive(pid)
    end,
  }
end

local function launch(argv, dir, log, env)
  -- lazy: optional, the rollout binary's host API (absent under a plain lua interpreter)
  local ok, proc = pcall(require, "rollout.proc")
  if ok and type(proc) == "table" and proc.spawn then return launch_proc(proc, argv, dir, log, env) end
  return launch_sh(argv, dir, log, env)
end

local function log_tail(path, n)
  local data = fs.read(path) or ""
  local lines = {}
  for l in data:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 10) + 1))
end

local Server = {}
Server.__index = Server
Server.__close = function(s) s:stop() end

--- Stop the server: TERM, then KILL after `grace` (default 5 s). Idempotent.
function Server:stop(grace)
  if self.stopped then return true end
  self.stopped = true
  running[self] = nil
  self.process.signal("TERM")
  if not self.process.wait_gone(grace or 5) then
    self.process.signal("KILL")
    self.process.wait_gone(5)
  end
  if self.own_dir and not self.keep_dir then fs.rmtree(self.dir) end
  return true
end

function Server:log(n) return log_tail(self.logfile, n or 20) end
function Server:alive() return self.process.alive() end
function Server:__tostring() return string.format("%s pid %d on %s", self.name, self.pid, self.url) end

local function expand(v, port, dir)
  if type(v) == "function" then return v(port, dir) end
  if type(v) == "string" then return (v:gsub("{port}", tostring(port)):gsub("{dir}", dir)) end
  return v
end

local function probe(server, opts)
  if opts.ready then return opts.ready(server) end
  local res = http.get(server.ready_url, { timeout = 1, insecure = opts.ready_insecure })
  return res ~= nil and res.status < 500
end

local function attempt(opts, port, dir)
  local argv = expand(opts.argv, port, dir)
  local argv2 = {}
  for i, a in ipairs(argv) do argv2[i] = expand(a, port, dir) end
  local logfile = opts.log or (dir .. "/server.log")
  local s = setmetatable({
    name = opts.name or argv2[1], port = port, dir = dir, logfile = logfile,
    url = (opts.scheme or "http") .. "://127.0.0.1:" .. port, own_dir = opts.dir == nil, keep_dir = opts.keep_dir,
  }, Server)
  s.ready_url = opts.ready_url and expand(opts.ready_url, port, dir) or s.url .. "/"
  s.process = launch(argv2, dir, logfile, opts.env)
  s.pid = s.process.pid
  running[s] = true
  local deadline = rollout.now() + (opts.timeout or 15)
  while rollout.now() < deadline do
    if not s.process.alive() then
      running[s] = nil
      s.stopped = true
      return nil, string.format("%s exited before it was ready:\n%s", s.name, log_tail(logfile))
    end
    if probe(s, opts) then return s end
    rollout.sleep(0.02)
  end
  local tail = log_tail(logfile)
  s:stop()
  return nil, string.format("%s not ready after %s s:\n%s", s.name, opts.timeout or 15, tail), true
end

--- start{argv=, ready_url=|ready=, dir=, port=, env=, timeout=15, name=, log=, scheme="http",
---        ready_insecure=false} -> server | nil, err
--- argv entries and ready_url may contain {port} and {dir}; argv may be function(port, dir).
function M.start(opts)
  assert(type(opts) == "table" and opts.argv, "servers.start: argv is required")
  local err
  for _ = 1, opts.port and 1 or 3 do
    local port = opts.port or M.free_port()
    local dir = opts.dir or assert(fs.mkdtemp("rollout-srv"))
    local s, e, fatal = attempt(opts, port, dir)
    if s then return s end
    err = e
    if opts.dir == nil then fs.rmtree(dir) end
    if fatal then break end
  end
  return nil, err
end

--- Stop every server this process started and has not stopped (for teardown).
function M.stop_all()
  local list = {}
  for s in pairs(running) do list[#list + 1] = s end
  for _, s in ipairs(list) do s:stop() end
end

-- ---- HAProxy --------------------------------------------------------------------------

local HAPROXY_CFG = [[
global
    stats socket %s/haproxy.sock mode 600 level admin
    stats timeout 10s
defaults
    mode http
    timeout connect 2s
    timeout client  30s
    timeout server  30s
frontend fe
    bind 127.0.0.1:%d
    default_backend %s
%sbackend %s
    balance roundrobin
%s    server baseline %s weight %d
    server canary   %s weight %d
]]

local EXPORTER_CFG = [[
frontend exporter
    bind 127.0.0.1:%d
    http-request use-service prometheus-exporter if { path /metrics }
]]

-- the header rule of docs/routers.md: `canary: true` (a value in the ACL file the router
-- fills) always reaches the canary
local ACL_RULE = "    use-server canary if { req.hdr(canary) -f %s }\n"

--- haproxy{baseline = "127.0.0.1:P", canary = "127.0.0.1:Q", backend = "be",
---         weights = {baseline = 100, canary = 0}, acl = true, exporter = false,
---         dir =, port =, log =, ready_url =} -> server | nil, err (ready_url: the
---         exporter's /metrics when there is one, else the frontend's /)
--- HAProxy in front of two servers `baseline` and `canary` of one backend, its runtime API
--- on DIR/haproxy.sock (level admin). acl = true adds the header rule with an empty
--- DIR/canary.acl; exporter = true adds its Prometheus exporter on a second free port.
--- The server gets .socket, .cfg, .backend, and .acl and .exporter (the /metrics URL)
--- when asked for. Without `dir` the server owns a temp dir; with `port` it starts there
--- (a restart on the same port, socket and config).
function M.haproxy(opts)
  local w = opts.weights or { baseline = 100, canary = 0 }
  local backend = opts.backend or "be"
  local exporter = opts.exporter and (opts.exporter_port or M.free_port()) or nil
  local paths = {}
  local s, err = M.start({
    name = "haproxy", dir = opts.dir, port = opts.port, log = opts.log,
    -- ready: the exporter answers whatever the backends do; else any answer below 500
    ready_url = opts.ready_url or (exporter and "http://127.0.0.1:" .. exporter .. "/metrics"),
    argv = function(port, dir)
      paths.socket, paths.cfg = dir .. "/haproxy.sock", dir .. "/haproxy.cfg"
      local acl = ""
      if opts.acl then
        paths.acl = dir .. "/canary.acl"
        if not fs.stat(paths.acl) then assert(fs.write_atomic(paths.acl, "", 420)) end
        acl = ACL_RULE:format(paths.acl)
      end
      local cfg = string.format(HAPROXY_CFG, dir, port, backend, exporter and EXPORTER_CFG:format(exporter) or "",
        backend, acl, opts.baseline, w.baseline, opts.canary, w.canary)
      assert(fs.write_atomic(paths.cfg, cfg, 420))
      return { "haproxy", "-db", "-f", paths.cfg }
    end,
  })
  if not s then return nil, err end
  s.socket, s.cfg, s.acl, s.backend = paths.socket, paths.cfg, paths.acl, backend
  if exporter then s.exporter_port, s.exporter = exporter, "http://127.0.0.1:" .. exporter .. "/metrics" end
  if not M.wait_for(function() return fs.stat(s.socket) end, 5) then
    s:stop()
    return nil, "haproxy: no runtime API socket at " .. s.socket
  end
  return s
end

-- ---- NGINX ----------------------------------------------------------------------------

local NGINX_CONF = [[
daemon off;
worker_processes %d;
worker_rlimit_nofile 16384;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path %s/tmp/client_body;
    proxy_temp_path %s/tmp/proxy;
    fastcgi_temp_path %s/tmp/fastcgi;
    uwsgi_temp_path %s/tmp/uwsgi;
    scgi_temp_path %s/tmp/scgi;
    keepalive_requests 1000000;
    default_type text/plain;
%s
    server {
        listen 127.0.0.1:%d%s;
        root %s/www;
%s
    }
}
]]

--- nginx{files={["index.html"]="..."}, server="extra directives in server{}",
---       http="extra directives in http{}", workers=1, tls={cert=PEM path, key=PEM path}}
---   -> server (with .root, .conf) | nil, err
--- `server` and `http` may contain {dir} and {port}. With `tls` the port speaks HTTPS.
function M.nginx(opts)
  opts = opts or {}
  local tls = opts.tls
  local s, err = M.start({
    scheme = tls and "https" or "http",
    ready_insecure = tls ~= nil,
    name = "nginx",
    argv = function(port, dir)
      assert(fs.chmod(dir, 493)) -- 0755: workers run as nobody when we are root
      assert(fs.mkdir(dir .. "/tmp"))
      assert(fs.mkdir(dir .. "/www", 493))
      for name, body in pairs(opts.files or { ["index.html"] = "hello\n" }) do
        assert(fs.write_atomic(dir .. "/www/" .. name, body, 420))
      end
      local server = expand(opts.server or "", port, dir)
      if tls then
        server = string.format("        ssl_certificate %s;\n        ssl_certificate_key %s;\n%s",
          tls.cert, tls.key, server)
      end
      local conf = string.format(NGINX_CONF, opts.workers or 1, dir, dir, dir, dir, dir, dir, dir,
        expand(opts.http or "", port, dir), port, tls and " ssl" or "", dir, server)
      assert(fs.write_atomic(dir .. "/nginx.conf", conf, 420))
      return { "nginx", "-p", dir, "-c", dir .. "/nginx.conf", "-e", dir .. "/error.log" }
    end,
    ready_url = (tls and "https" or "http") .. "://127.0.0.1:{port}/",
  })
  if s then s.root, s.conf = s.dir .. "/www", s.dir .. "/nginx.conf" end
  return s, err
end

--- A self-signed certificate for 127.0.0.1 and localhost, written into dir (openssl CLI).
--- Returns cert_path, key_path (the cert is its own CA: pass it as `cafile`).
function M.tls_cert(dir)
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local cmd = string.format("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
    .. "-subj /CN=127.0.0.1 "
    .. "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s -out %s >/dev/null 2>&1",
    shell_quote(key), shell_quote(cert))
  assert(os.execute(cmd), "openssl could not make a certificate")
  return cert, key
end

-- ---- the Python test server -----------------------------------------------------------

local function support_dir()
  local src = debug.getinfo(1, "S").source
  return (src:match("^@(.*)/[^/]*$") or "spec/support")
end

--- The test server of spec/support/http_server.py (see its header for the routes).
function M.python_http()
  local script = fs.realpath(support_dir() .. "/http_server.py")
  return M.start({
    name = "http_server.py",
    argv = { "/usr/bin/python3", script, "{port}" },
    ready_url = "http://127.0.0.1:{port}/health",
  })
end

return M

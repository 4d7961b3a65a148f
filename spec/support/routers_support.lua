-- spec/support/routers_support.lua: what the router specs and the router benchmark share.
-- Backends (sample-service v1 and v2), HAProxy and NGINX in front of them, the Kubernetes
-- contract server, load through ./loadgen, and an event recorder. Servers come from
-- spec/support/servers.lua (free ports, temp dirs, stop by pid).
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local proc = require("rollout.proc")
local routers_nginx = require("rollout.routers.nginx")
local servers = require("spec.support.servers")

local M = { servers = servers }

local function support_dir()
  local src = debug.getinfo(1, "S").source
  return fs.realpath(src:match("^@(.*)/[^/]*$") or "spec/support")
end
local ROOT = support_dir() .. "/../.."

local function exe(name)
  local p = ROOT .. "/" .. name
  return fs.stat(p) and fs.realpath(p) or nil
end

-- ---- backends ------------------------------------------------------------------------

--- Two backends answering "v1" and "v2" as the first body line: sample-service when it is
--- built, else one NGINX with two ports. Returns {v1 = "127.0.0.1:P", v2 = ..., stop = fn}.
function M.backends()
  local svc = exe("sample-service")
  if svc then
    local out = {}
    local list = {}
    for _, v in ipairs({ "v1", "v2" }) do
      local s = assert(servers.start{ name = "sample-service " .. v,
        argv = { svc, "--version", v, "--listen", "127.0.0.1:{port}" }, ready_url = "http://127.0.0.1:{port}/health" })
      out[v] = "127.0.0.1:" .. s.port
      list[#list + 1] = s
    end
    out.stop = function() for _, s in ipairs(list) do s:stop() end end
    return out
  end
  local p2 = servers.free_port()
  local ng = assert(servers.nginx{ files = { ["index.html"] = "v1\n" },
    server = "        location = / { return 200 \"v1\\n\"; }\n",
    http = "    server { listen 127.0.0.1:" .. p2 .. "; location / { return 200 \"v2\\n\"; } }\n" })
  return { v1 = "127.0.0.1:" .. ng.port, v2 = "127.0.0.1:" .. p2, stop = function() ng:stop() end }
end

-- ---- HAProxy -------------------------------------------------------------------------

--- HAProxy on a free port in front of backends b (from M.backends()), baseline weight
--- 100 and canary 0, with the header rule of docs/routers.md. Returns a handle with .port, .url,
--- .socket, .acl, .cfg, .dir and :stop(), :kill() (SIGKILL), :start() (again on the same
--- port, socket and config: runtime weights are lost, as in a restart).
function M.haproxy(b)
  local dir = assert(fs.mkdtemp("rollout-haproxy"))
  local h = { dir = dir, acl = dir .. "/canary.acl", cfg = dir .. "/haproxy.cfg", socket = dir .. "/haproxy.sock", own = dir }
  -- spec/support/servers.lua's HAProxy: backend `be`, the header rule, the runtime API
  local opts = { dir = dir, log = dir .. "/haproxy.log", backend = "be", acl = true, baseline = b.v1, canary = b.v2 }
  function h.start()
    local s = assert(servers.haproxy(opts))
    h.server, h.port, h.url, h.pid = s, s.port, s.url, s.pid
    opts.port = s.port
    return h
  end
  function h.stop() if h.server then h.server:stop() end end
  function h.kill()
    fs.kill(h.server.pid, 9)
    while servers.is_alive(h.server.pid) do rollout.sleep(0.01) end
    h.server:stop() -- bookkeeping only: it is gone
  end
  return h.start()
end

-- ---- NGINX in front of the backends --------------------------------------------------

local NGINX_CONF = [[
daemon off;
worker_processes 2;
worker_rlimit_nofile 16384;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %s/tmp/client_body;
    proxy_temp_path %s/tmp/proxy;
    fastcgi_temp_path %s/tmp/fastcgi;
    uwsgi_temp_path %s/tmp/uwsgi;
    scgi_temp_path %s/tmp/scgi;
    include %s/rollout-app.conf;
    server {
        listen 127.0.0.1:%d;
        location / {
            proxy_pass http://$rollout_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
]]

--- NGINX on a free port whose `app` upstream the nginx router owns. Returns
--- server (with .cfg = the router config to use, .conf, .include), or raises.
function M.nginx_proxy(b, extra)
  local dir = assert(fs.mkdtemp("rollout-nginx"))
  assert(fs.chmod(dir, 493))
  assert(fs.mkdir(dir .. "/tmp"))
  local status_port = servers.free_port()
  local cfg = {
    type = "nginx", upstream = "app", baseline = b.v1, canary = b.v2,
    include = dir .. "/rollout-app.conf", status = "127.0.0.1:" .. status_port,
    prefix = dir, conf = dir .. "/nginx.conf", upstream_directives = { "keepalive 32" },
    nginx = { "nginx", "-e", dir .. "/error.log" },
  }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  local s = assert(servers.start{
    name = "nginx", dir = dir, log = dir .. "/nginx.log",
    argv = function(port)
      local r = routers_nginx.new(cfg)
      assert(r:write_config{ baseline = 100, canary = 0 })
      assert(fs.write_atomic(dir .. "/nginx.conf", string.format(NGINX_CONF, dir, dir, dir, dir, dir, dir, dir, dir, port)))
      return { "nginx", "-p", dir, "-c", dir .. "/nginx.conf", "-e", dir .. "/error.log" }
    end,
  })
  s.cfg, s.conf, s.include, s.own = cfg, dir .. "/nginx.conf", cfg.include, dir
  return s
end

-- ---- load ----------------------------------------------------------------------------

--- Send load through url with ./loadgen: {rps=, duration=, connections=, headers={...}}.
--- Returns the summary ({sent=, ok=, by_body={v1=, v2=}, errors_*, conn_errors=, ...}).
function M.load(url, o)
  o = o or {}
  local lg = assert(exe("loadgen"), "./loadgen is not built (make)")
  local argv = { lg, "--url", url, "--rps", tostring(o.rps or 2000), "--duration", tostring(o.duration or 1.2),
    "--connections", tostring(o.connections or 16), "--report-interval", tostring(o.report_interval or 0),
    "--timeout", tostring(o.timeout or 5) }
  for _, h in ipairs(o.headers or {}) do argv[#argv + 1] = "--header"; argv[#argv + 1] = h end
  local r, err = proc.run{ argv = argv, timeout = (o.duration or 1.2) + 30 }
  assert(r, err)
  local summary, intervals = nil, {}
  for line in r.stdout:gmatch("[^\n]+") do
    local obj = json.decode(line)
    if type(obj) == "table" then
      if obj.summary then summary = obj else intervals[#intervals + 1] = obj end
    end
  end
  assert(summary, "loadgen printed no summary: " .. r.stdout:sub(1, 300) .. r.stderr:sub(1, 300))
  summary.by_body = summary.by_body or {}
  summary.failed = (summary.errors_5xx or 0) + (summary.errors_other or 0) + (summary.conn_errors or 0) + (summary.timeouts or 0)
  summary.intervals = intervals
  return summary
end

--- Start M.load in a task; returns the task (its result is the summary).
function M.load_async(url, o)
  return rollout.spawn(M.load, url, o)
end

-- ---- events --------------------------------------------------------------------------

--- An event recorder: opts for new(cfg, opts) and helpers to look at what was emitted.
function M.recorder()
  local rec = { list = {} }
  function rec.emit(kind, fields) rec.list[#rec.list + 1] = { kind = kind, fields = fields } end
  function rec.count(kind)
    local n = 0
    for _, e in ipairs(rec.list) do if e.kind == kind then n = n + 1 end end
    return n
  end
  function rec.last(kind)
    for i = #rec.list, 1, -1 do if rec.list[i].kind == kind then return rec.list[i].fields end end
  end
  function rec.kinds()
    local k = {}
    for _, e in ipairs(rec.list) do k[#k + 1] = e.kind end
    return k
  end
  function rec.clear() rec.list = {} end
  rec.opts = { emit = rec.emit }
  return rec
end

-- ---- the Kubernetes contract server --------------------------------------------------

--- The runbook's VirtualService (header-match route first, then the weighted route) and
--- its canary Deployment.
function M.runbook_state()
  return {
    virtualservices = { {
      apiVersion = "networking.istio.io/v1beta1", kind = "VirtualService",
      metadata = { name = "dwcp-v3", namespace = "production" },
      spec = {
        hosts = { "dwcp.example.com" },
        http = {
          { match = { { headers = { canary = { exact = "true" } } } },
            route = { { destination = { host = "dwcp-v3-canary" }, weight = 100 } } },
          { route = { { destination = { host = "dwcp-v3-baseline" }, weight = 100 },
                      { destination = { host = "dwcp-v3-canary" }, weight = 0 } } },
        },
      },
    } },
    deployments = { {
      metadata = { name = "dwcp-v3-canary", namespace = "production",
        labels = { app = "dwcp-v3", version = "v3.0.0", ["deployment-type"] = "canary" } },
      spec = { replicas = 2, progressDeadlineSeconds = 1,
        selector = { matchLabels = { app = "dwcp-v3", version = "v3.0.0" } },
        template = { metadata = { labels = { app = "dwcp-v3", version = "v3.0.0" } },
          spec = { containers = { { name = "dwcp", image = "novacron/dwcp:v3.0.0" } } } } },
    } },
  }
end

--- Start k8s_contract.py over HTTPS (self-signed cert from openssl) with `state`.
--- Returns the server with .api, .ca, .token_file (the router's), .server_tokens (the
--- server's accepted list), and helpers :log(), :violations(), :state(), :control(path, body).
function M.contract(state)
  assert(fs.stat("/usr/bin/openssl"), "openssl is needed for the contract server's certificate")
  local dir = assert(fs.mkdtemp("rollout-k8s"))
  local cert, key = servers.tls_cert(dir)
  local server_tokens, token_file = dir .. "/accepted-tokens", dir .. "/token"
  assert(fs.write_atomic(server_tokens, "token-1\n"))
  assert(fs.write_atomic(token_file, "token-1\n"))
  assert(fs.write_atomic(dir .. "/state.json", json.encode(state or M.runbook_state())))
  local s = assert(servers.start{
    name = "k8s_contract.py", dir = dir, scheme = "https", ready_insecure = true,
    argv = { "/usr/bin/python3", support_dir() .. "/k8s_contract.py", "--port", "{port}", "--cert", cert,
      "--key", key, "--tokens", server_tokens, "--state", dir .. "/state.json", "--tick", "0.05" },
    ready_url = "https://127.0.0.1:{port}/healthz",
  })
  s.api, s.ca, s.token_file, s.server_tokens, s.own = "https://127.0.0.1:" .. s.port, cert, token_file, server_tokens, dir
  function s.control(_, path, body)
    local res = assert(http.request{ url = s.api .. path, method = body and "POST" or "GET", cafile = cert,
      body = body and json.encode(body) or nil, headers = body and { ["Content-Type"] = "application/json" } or nil })
    assert(res.status == 200, path .. ": HTTP " .. res.status .. " " .. res.body)
    return json.decode(res.body)
  end
  function s.requests() return s:control("/_contract/log") end
  function s.violations() return s:control("/_contract/violations") end
  function s.vs(_, ns, name)
    for _, v in ipairs(s:control("/_contract/state").virtualservices) do
      if v.metadata.namespace == (ns or "production") and v.metadata.name == (name or "dwcp-v3") then return v end
    end
  end
  return s
end

function M.cleanup(s)
  if s then
    s:stop()
    if s.own then fs.rmtree(s.own) end
  end
end

return M

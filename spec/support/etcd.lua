-- Start a real etcd on loopback with free ports in a temp dir (etcd from Debian's package).
local proc = require("rollout.proc")
local fs = require("rollout.fs")
local http = require("rollout.http")
local servers = require("spec.support.servers")

local M = {}

-- in the port range of this spec file (rollout test -j)
local free_port = servers.free_port
M.free_port = free_port

--- start() -> {url=, dir=, stop=fn} | nil, err
function M.start()
  local dir = assert(fs.mkdtemp("etcd"))
  local cport, pport = free_port(), free_port()
  local url = "http://127.0.0.1:" .. cport
  local peer = "http://127.0.0.1:" .. pport
  local h = assert(proc.spawn({ argv = { "etcd", "--name", "n1", "--data-dir", dir .. "/data",
    "--listen-client-urls", url, "--advertise-client-urls", url,
    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
    "--initial-cluster", "n1=" .. peer, "--initial-cluster-state", "new",
    "--log-level", "error", "--logger", "zap" }, stdout = "null", stderr = dir .. "/etcd.log" }))
  local server = { url = url, dir = dir, handle = h }
  function server:stop()
    if self.handle then self.handle:kill("TERM"); self.handle:wait(5); self.handle = nil end
    fs.rmtree(self.dir)
  end
  local deadline = rollout.now() + 15
  while rollout.now() < deadline do
    local r = http.request({ method = "GET", url = url .. "/health", timeout = 1 })
    if r and r.status == 200 and r.body:find('"health":"true"', 1, true) then return server end
    rollout.sleep(0.1)
  end
  server:stop()
  return nil, "etcd did not become healthy on " .. url
end

return M

-- contrib/systemd/rollout@.service: systemd accepts the unit (systemd-analyze verify, with
-- the binary path pointed at this build), and its command line is one `rollout run` takes.
local fs = require("rollout.fs")
local proc = require("rollout.proc")

describe("contrib/systemd/rollout@.service", function()
  it("verifies with systemd-analyze and runs `rollout run` with flags it knows", function()
    if not fs.stat("/usr/bin/systemd-analyze") then error("systemd-analyze is needed (Debian package systemd)") end
    local unit = assert(fs.read("contrib/systemd/rollout@.service"))
    local dir = assert(fs.mkdtemp("unit"))
    local exe = assert(fs.realpath(rollout.exe))
    local path = dir .. "/rollout@dwcp-v3.service"
    assert(fs.write_atomic(path, (unit:gsub("/usr/local/bin/rollout", exe))))
    local r = assert(proc.run({ argv = { "systemd-analyze", "verify", "--man=no", path }, timeout = 60 }))
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.equals("", r.stdout .. r.stderr, "systemd has nothing to say about the unit")
    -- the command line, with the instance a local playbook: `run` takes it, journals in the
    -- state directory and is aborted by pre-flight (the router's socket is missing): exit 3
    local exec = assert(unit:match("\nExecStart=([^\n]+)"))
    local argv = {}
    for w in exec:gmatch("%S+") do
      if w ~= "$ROLLOUT_ARGS" then
        w = w:gsub("/etc/rollout/%%i%.lua", "playbooks/canary.lua"):gsub("%%i", "dwcp-v3")
          :gsub("^/var/lib/rollout", dir .. "/state"):gsub("^/run/rollout", dir .. "/run")
        argv[#argv + 1] = w
      end
    end
    assert.equals("/usr/local/bin/rollout", argv[1])
    argv[1] = exe
    argv[#argv + 1] = "--set"
    argv[#argv + 1] = "router.socket=" .. dir .. "/missing.sock"
    local run = assert(proc.run({ argv = argv, timeout = 60 }))
    local journals = fs.list(dir .. "/state/dwcp-v3") or {}
    fs.rmtree(dir)
    assert.equals(3, run.code, run.stdout .. run.stderr)
    assert.matches("aborted %(preflight:traffic_routing%)", run.stdout)
    assert.matches("missing%.sock", run.stdout)
    assert.equals(1, #journals, "the journal is in the unit's state directory")
  end)
end)

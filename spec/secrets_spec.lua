-- Secrets never reach an output: secrets are planted in a playbook (params, a source's
-- Authorization, X-Custom-Auth and X-Auth headers, a notification URL from the environment,
-- the router's token file and a notification token file, a Discord webhook, an argv
-- --token=..., a pre-flight command printing password=...), given with --set-file and
-- ${env:...}, and the router's token is rotated mid-run; hooks log them and fail with them
-- in the message, an operator prints them in the REPL, and then stdout, stderr, `ps`, the
-- journal directory, the control socket's answers, the notification payloads and every
-- report of the run are searched for them.
--
-- `rollout run` talks to real components: the sample service (two versions, probed) and the
-- Istio router against the Kubernetes API contract server (spec/support/k8s_contract.py,
-- HTTPS with a bearer token), and its webhook notifier posts to a local HTTP server.
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local redact = require("rollout.redact")
local support = require("spec.support.routers_support")
local servers = require("spec.support.servers")
local live = require("spec.support.live_rollout")

local function secret(tag) return string.format("%s-%08x%08x", tag, math.random(0, 0x7fffffff), math.random(0, 0x7fffffff)) end

local function write(path, text) assert(fs.write_atomic(path, text)); return path end

-- Every file under dir, recursively, with its content.
local function files_under(dir, out)
  out = out or {}
  for _, name in ipairs(fs.list(dir) or {}) do
    local p = dir .. "/" .. name
    local st = fs.stat(p)
    if st and st.type == "dir" then files_under(p, out)
    elseif st and st.type == "file" then out[p] = fs.read(p) or "" end
  end
  return out
end

local function assert_clean(outputs, secrets)
  for where, text in pairs(outputs) do
    for name, s in pairs(secrets) do
      if text:find(s, 1, true) then
        local at = text:find(s, 1, true)
        error(string.format("the %s secret appears in %s: ...%s...", name, where, text:sub(math.max(1, at - 80), at + #s + 20)), 2)
      end
    end
  end
end

describe("rollout.redact", function()
  it("masks the forms secrets take in text", function()
    local cases = {
      { "curl -H 'Authorization: Bearer abcdefgh1234'", "curl -H 'Authorization: [REDACTED]'" },
      { '{"headers":{"Authorization":"Bearer sk-live-123456"}}', '{"headers":{"Authorization":"[REDACTED]"}}' },
      { "GET http://admin:hunter22@db:5432/x?token=s3cr3t&user=bob&sig=ABCD", "GET http://[REDACTED]@db:5432/x?token=[REDACTED]&user=bob&sig=[REDACTED]" },
      { "https://hooks.slack.com/services/T0123ABC/B0456DEF/aBcDeFgHiJkLmNoP: 404", "https://hooks.slack.com/services/[REDACTED]: 404" },
      { 'params = { api_token = "tok-999999" }', 'params = { api_token = "[REDACTED]" }' },
      { "x?access_token=abc&api_key=def&password=ghi", "x?access_token=[REDACTED]&api_key=[REDACTED]&password=[REDACTED]" },
      -- unquoted key=value (a command's output), argv flags, auth-like headers, Discord webhooks
      { "connected to db as app password=DBPASS333 (ok)", "connected to db as app password=[REDACTED] (ok)" },
      { "DB_PASSWORD=x1y2z3 API_KEY=k9k9k9 region=eu", "DB_PASSWORD=[REDACTED] API_KEY=[REDACTED] region=eu" },
      { 'argv = { "deploy", "--token=tok-12345", "--api-key=k-777", "--user=bob" }',
        'argv = { "deploy", "--token=[REDACTED]", "--api-key=[REDACTED]", "--user=bob" }' },
      { "curl -H 'X-Custom-Auth: s3cr3t-value' -H 'X-Request-Id: 42'", "curl -H 'X-Custom-Auth: [REDACTED]' -H 'X-Request-Id: 42'" },
      { '{ ["X-Auth"] = "abcdef123", ["X-Trace"] = "t1" }', '{ ["X-Auth"] = "[REDACTED]", ["X-Trace"] = "t1" }' },
      { '{"X-Custom-Auth":"abcdef123","X-Api-Key":"k1"}', '{"X-Custom-Auth":"[REDACTED]","X-Api-Key":"[REDACTED]"}' },
      { "POST https://discord.com/api/webhooks/112233445566/AbC-dEf_GhI.jk: 404",
        "POST https://discord.com/api/webhooks/112233445566/[REDACTED]: 404" },
    }
    for _, c in ipairs(cases) do assert.equals(c[2], redact.text(c[1])) end
  end)

  it("leaves ordinary text alone", function()
    for _, s in ipairs({ "the bearer of bad news", "basic check passed", 'token_file = "/etc/tok"', "author: Bob",
      "X-Request-Id: 42", "retries=3 timeout=5s", 'auth_type = "basic"',
      'rate(http_requests_total{code=~"5.."}[1m])', "stage half (2): weight 50%, hold 1.5s" }) do
      assert.equals(s, redact.text(s))
    end
  end)

  it("takes time linear in the length of the text", function()
    local t0 = os.clock()
    redact.text(string.rep("x", 100000))
    redact.text(string.rep("a-b_c ", 20000))
    redact.value({ message = string.rep("y", 100000) })
    assert.lt(os.clock() - t0, 5.0, "redacting 300 KB (quadratic took 7 s for 10 KB)")
  end)

  it("knows auth-like key names", function()
    for _, k in ipairs({ "X-Auth", "X-Custom-Auth", "x-auth-token", "basic_auth", "Authorization", "db_password", "api_key" }) do
      assert.is_true(redact.secret_key(k), k)
    end
    for _, k in ipairs({ "author", "authority", "auth_type", "auth_file", "token_file", "url", "X-Request-Id" }) do
      assert.is_false(redact.secret_key(k), k)
    end
  end)

  it("reads a watched secret file again when it changes (a rotated token)", function()
    local dir = assert(fs.mkdtemp("redact-rotate"))
    local first, second = secret("rot1"), secret("rot2")
    write(dir .. "/token", first .. "\n")
    local script = write(dir .. "/rotate.lua", string.format([[
      local redact = require("rollout.redact")
      local fs = require("rollout.fs")
      redact.scan({ router = { token_file = %q } })
      local a = redact.text("old %s")
      assert(fs.write_atomic(%q, %q))
      io.write(a, " / ", redact.text("new %s"))
    ]], dir .. "/token", first, dir .. "/token", second .. "\n", second))
    local r = assert(proc.run({ argv = { rollout.exe, script } }))
    fs.rmtree(dir)
    assert.equals("old [REDACTED] / new [REDACTED]", r.stdout, r.stderr)
  end)

  it("--set values take secrets from the environment or a file, never from argv", function()
    local dir = assert(fs.mkdtemp("redact-set"))
    local from_file, from_env = secret("setfile"), secret("setenv")
    write(dir .. "/secret", from_file .. "\n")
    local pb = write(dir .. "/pb.lua", [[
      return { name = "s", versions = { baseline = { version = "a" }, canary = { version = "b" } },
        stages = { { weight = 100, hold = "1s" } } }
    ]])
    -- a bad value that is a secret: the error names the key, not the value
    local r = assert(proc.run({ argv = { rollout.exe, "check", "--offline", pb, "--set-file", "interval=" .. dir .. "/secret",
      "--set", "gate_window=${env:SPEC_SET_SECRET}" }, env = { SPEC_SET_SECRET = from_env } }))
    assert.equals(2, r.code, r.stderr)
    assert.matches("interval: malformed duration .*%[REDACTED%]", r.stderr)
    assert.matches("gate_window: malformed duration .*%[REDACTED%]", r.stderr)
    assert.is_nil(r.stderr:find(from_file, 1, true))
    assert.is_nil(r.stderr:find(from_env, 1, true))
    r = assert(proc.run({ argv = { rollout.exe, "run", pb, "--no-control", "--journal", dir .. "/j",
      "--set-file", "interval=" .. dir .. "/secret" } }))
    assert.equals(2, r.code, r.stderr)
    assert.matches("interval: malformed duration .*%[REDACTED%]", r.stderr)
    assert.is_nil(r.stderr:find(from_file, 1, true), "run's stderr")
    r = assert(proc.run({ argv = { rollout.exe, "check", "--offline", "--json", pb, "--set-file", "interval=" .. dir .. "/secret" } }))
    assert.equals(2, r.code)
    assert.matches("%[REDACTED%]", r.stdout)
    assert.is_nil(r.stdout:find(from_file, 1, true), "check --json")
    r = assert(proc.run({ argv = { rollout.exe, "check", "--offline", pb, "--set", "params.x=${env:SPEC_NOT_SET_ANYWHERE}" } }))
    assert.equals(2, r.code)
    assert.matches("%-%-set params%.x: environment variable SPEC_NOT_SET_ANYWHERE is not set", r.stderr)
    r = assert(proc.run({ argv = { rollout.exe, "check", "--offline", pb, "--set-file", "params.x=" .. dir .. "/nope" } }))
    assert.equals(2, r.code)
    assert.matches("not a readable file", r.stderr)
    -- the values arrive: a literal ${ is written $${
    local playbook = require("rollout.playbook")
    local t = {}
    assert(playbook.apply_set(t, "a=${file:" .. dir .. "/secret}"))
    assert(playbook.apply_set(t, "b=$${env:HOME}"))
    assert.equals(from_file, t.a)
    assert.equals("${env:HOME}", t.b)
    fs.rmtree(dir)
  end)

  it("keeps JSON valid and masks registered values, also JSON-escaped", function()
    local json = require("rollout.json")
    assert.is_not_nil(json.decode(redact.text('{"a":"Authorization: x\\"y","b":"Bearer abcdefghij"}')))
    redact.register('q"uoted-secret-1')
    assert.equals('{"m":"[REDACTED]"}', redact.text(json.encode({ m = 'q"uoted-secret-1' })))
    assert.equals("[REDACTED] and [REDACTED]", redact.text('q"uoted-secret-1 and q"uoted-secret-1'))
  end)

  it("value() masks secret-named keys and strings in a deep copy, keeping array marks", function()
    local json = require("rollout.json")
    local src = { headers = { Authorization = "xyz12345" }, list = json.array({}), db_password = "pw",
      nested = { msg = "Authorization: Bearer abcdefghijk" } }
    src.self = src
    local v = redact.value(src)
    assert.equals("[REDACTED]", v.headers.Authorization)
    assert.equals("[REDACTED]", v.db_password)
    assert.equals("Authorization: [REDACTED]", v.nested.msg)
    assert.equals(v, v.self)
    assert.equals("[]", json.encode(v.list))
    assert.equals("xyz12345", src.headers.Authorization, "the original is not touched")
  end)

  it("scan() registers what a playbook holds, from values, the environment and files", function()
    local dir = assert(fs.mkdtemp("redact"))
    local file_secret, env_secret = secret("scanfile"), secret("scanenv")
    write(dir .. "/tok", file_secret .. "\n")
    local script = write(dir .. "/scan.lua", string.format([[
      local redact = require("rollout.redact")
      redact.scan({ params = { api_token = "scanparam-1234" }, sources = { { headers = { Authorization = "Bearer scanhdr-1234" } } },
        notifications = { { url_env = "SCAN_SECRET", token_file = %q, ca_file = "/etc/ssl/certs/ca-certificates.crt" } } })
      io.write(redact.text("scanparam-1234 scanhdr-1234 " .. %q .. " " .. %q .. " " .. redact.count()))
    ]], dir .. "/tok", env_secret, file_secret))
    local r = assert(proc.run({ argv = { rollout.exe, script }, env = { SCAN_SECRET = env_secret } }))
    fs.rmtree(dir)
    assert.equals("[REDACTED] [REDACTED] [REDACTED] [REDACTED] 5", r.stdout, r.stderr)
  end)
end)

describe("secrets in a real run", function()
  local b, k8s, hook_server, dir, recorder
  local S = {}

  setup(function()
    b = support.backends()
    k8s = support.contract()
    hook_server = assert(servers.python_http())
    dir = assert(fs.mkdtemp("rollout-secrets"))
    S = { params = secret("param"), header = secret("header"), env = secret("env"), router = secret("router"),
      notify = secret("notify"), preflight = secret("DBPASS"), xauth = secret("xauth"), xauth2 = secret("xauth2"),
      discord = secret("discord"), argv = secret("argvtok"), setfile = secret("setfile"), setenv = secret("setenv"),
      rotated = secret("rotated") }
    -- a webhook receiver that keeps every payload it is sent
    write(dir .. "/recorder.py", [=[
import sys, http.server
out = open(sys.argv[2], "ab")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out.write(body + b"\n"); out.flush()
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
]=])
    recorder = assert(servers.start({ name = "webhook recorder", argv = { "python3", dir .. "/recorder.py", "{port}", dir .. "/posted" },
      ready_url = "http://127.0.0.1:{port}/" }))
    write(dir .. "/set-secret", S.setfile .. "\n")
    -- the API accepts the planted router token
    write(k8s.server_tokens, S.router .. "\n")
    write(k8s.token_file, S.router .. "\n")
    write(dir .. "/notify-token", S.notify .. "\n")
    write(dir .. "/base.lua", string.format([[
      local pb = include(%q)
      pb.router = { type = "istio", api = %q, ca_file = %q, token_file = %q, namespace = "production",
        virtualservice = "dwcp-v3", baseline = "dwcp-v3-baseline", canary = "dwcp-v3-canary", poll_interval = 0.05 }
      pb.versions.baseline.url = "http://%s"
      pb.versions.canary.url = "http://%s"
      pb.sources[1].headers = { Authorization = "Bearer %s" }
      pb.params = { api_token = %q }
      pb.notifications = { { type = "webhook", url_env = "ROLLOUT_SPEC_HOOK_URL", token_file = %q, retries = 0, timeout = "1s" } }
      local function first_line(path) return (assert(fs.read(path)):match("[^\n]*")) end
      pb.hooks = {
        before_stage = function(ctx)
          ctx.log("deploy call with Authorization: Bearer %s")
          ctx.log("params token " .. ctx.engine.pb.params.api_token)
          ctx.log("webhook at " .. os.getenv("ROLLOUT_SPEC_HOOK_URL"))
          ctx.log("router token " .. first_line(%q) .. ", notify token " .. first_line(%q))
          return true
        end,
        after_stage = function(ctx)
          if ctx.stage == "half" then
            error("deploy API rejected " .. ctx.engine.pb.params.api_token .. " and " .. first_line(%q))
          end
        end,
      }
      return pb
    ]], live.PLAYBOOK, k8s.api, k8s.ca, k8s.token_file, b.v1, b.v2, S.header, S.params, dir .. "/notify-token",
      S.header, k8s.token_file, dir .. "/notify-token", k8s.token_file))
    -- what the issue found leaking: a command's output with password=..., auth-like header
    -- names, a Discord webhook, an argv --token=..., and a notifier that gets every event
    write(dir .. "/playbook.lua", string.format([[
      local pb = include("base.lua")
      pb.sources[1].headers["X-Custom-Auth"] = %q
      pb.sources[1].headers["X-Auth"] = %q
      pb.params.discord = "https://discord.com/api/webhooks/112233445566/%s"
      pb.params.deploy_command = { "deploy", "--token=%s" }
      pb.preflight = { { name = "database", description = "3. database connectivity", run = function()
        local r = assert(proc.run({ argv = { "echo", "connected to db as app password=%s" } }))
        return true, (r.stdout:gsub("%%s+$", ""))
      end } }
      pb.notifications[2] = { type = "webhook", url = %q, events = { "*" }, retries = 0, timeout = "2s" }
      return pb
    ]], S.xauth, S.xauth2, S.discord, S.argv, S.preflight, recorder.url .. "/hook"))
  end)

  teardown(function()
    if recorder then recorder:stop() end
    if hook_server then hook_server:stop() end
    if k8s then support.cleanup(k8s) end
    if b then b.stop() end
    if dir then fs.rmtree(dir) end
  end)

  local function env_for_child()
    return { ROLLOUT_SPEC_HOOK_URL = hook_server.url .. "/status/503?token=" .. S.env, ROLLOUT_PROGRESS = "0",
      SPEC_SET_ENV = S.setenv }
  end

  it("rollout simulate --json, and plain, shows none of them", function()
    local outputs = {}
    for _, args in ipairs({ { "--json" }, {} }) do
      local argv = { rollout.exe, "simulate", dir .. "/playbook.lua", "--scenario", "spec/fixtures/scenarios/steady.lua", "--run-hooks" }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      local r = assert(proc.run({ argv = argv, env = env_for_child(), timeout = 60 }))
      outputs["simulate " .. table.concat(args, " ") .. " stdout"] = r.stdout
      outputs["simulate " .. table.concat(args, " ") .. " stderr"] = r.stderr
      assert.matches("%[REDACTED%]", r.stdout, "the hooks' lines are there, masked")
      assert.matches("deploy API rejected %[REDACTED%] and %[REDACTED%]", r.stdout)
    end
    assert_clean(outputs, S)
  end)

  it("rollout run --json, the control socket, the journal and the reports show none of them", function()
    local jdir, rdir = dir .. "/journal", dir .. "/run"
    local argv = { rollout.exe, "run", dir .. "/playbook.lua", "--json", "--journal", jdir, "--run-dir", rdir,
      "--set-file", "params.backend_dsn=" .. dir .. "/set-secret", "--set", "params.dsn_from_env=${env:SPEC_SET_ENV}" }
    local child = assert(proc.spawn({ argv = argv, env = env_for_child(), cwd = dir,
      stdout = dir .. "/run.out", stderr = dir .. "/run.err" }))
    local outputs = {}
    -- while it runs: an operator prints the playbook's secrets and the recent events
    local socket = rdir .. "/fast.sock"
    local deadline = rollout.now() + 20
    while not fs.stat(socket) and rollout.now() < deadline do rollout.sleep(0.05) end
    assert.truthy(fs.stat(socket), "the control socket appeared")
    -- what `ps` shows: no secret given with --set-file or ${env:...}
    outputs["ps (/proc/pid/cmdline)"] = assert(fs.read("/proc/" .. child:pid() .. "/cmdline")):gsub("%z", " ")
    -- the Kubernetes API rotates the router's token: the old one is refused from now on
    write(k8s.server_tokens, S.rotated .. "\n")
    write(k8s.token_file, S.rotated .. "\n")
    rollout.sleep(1.5)
    for i, cmd in ipairs({ "pb.params", "pb.sources[1].headers", "pb.notifications", "pb.router", "events 100", "status",
      "router.client", "pb.preflight" }) do
      local r = assert(proc.run({ argv = { rollout.exe, "ctl", socket, cmd }, timeout = 20 }))
      outputs["rollout ctl " .. cmd .. " (" .. i .. ")"] = r.stdout .. r.stderr
    end
    assert.matches("%[REDACTED%]", outputs["rollout ctl pb.params (1)"], "the REPL printed the params, masked")
    local code = child:wait(60)
    assert.equals(1, code, "rolled back by the failing hook: " .. (fs.read(dir .. "/run.err") or ""))
    outputs["run stdout"] = fs.read(dir .. "/run.out")
    outputs["run stderr"] = fs.read(dir .. "/run.err")
    assert.matches('"error":"[^"]*deploy API rejected %[REDACTED%] and %[REDACTED%]"', outputs["run stdout"])
    for p, text in pairs(files_under(jdir)) do outputs[p] = text end
    local journals = require("rollout.journal").list(jdir)
    assert.equals(1, #journals)
    -- every report of the run
    local r = assert(proc.run({ argv = { rollout.exe, "report", journals[1], "--html", dir .. "/report.html",
      "--markdown", dir .. "/report.md", "--json", dir .. "/report.json" }, timeout = 30 }))
    assert.equals(0, r.code, r.stderr)
    outputs["report stdout"] = r.stdout .. r.stderr
    for _, f in ipairs({ "report.html", "report.md", "report.json" }) do
      outputs[f] = assert(fs.read(dir .. "/" .. f), f .. " was written")
    end
    r = assert(proc.run({ argv = { rollout.exe, "report", journals[1] }, timeout = 30 }))
    outputs["report (markdown on stdout)"] = r.stdout .. r.stderr
    for p, text in pairs(files_under(rdir)) do outputs[p] = text end
    -- the planted secrets did flow through the run (so a leak would have been seen)
    assert.matches("router token %[REDACTED%], notify token %[REDACTED%]", outputs["run stdout"])
    assert.matches("webhook at %[REDACTED%]", outputs["run stdout"])
    assert.matches("password=%[REDACTED%]", outputs["run stdout"], "the pre-flight check's output, masked")
    assert.matches('X%-Custom%-Auth"%] = "%[REDACTED%]"', outputs["rollout ctl pb.sources[1].headers (2)"])
    assert.matches("/api/webhooks/112233445566/%[REDACTED%]", outputs["rollout ctl pb.params (1)"])
    assert.matches("%-%-token=%[REDACTED%]", outputs["rollout ctl pb.params (1)"])
    assert.matches("backend_dsn = \"%[REDACTED%]\"", outputs["rollout ctl pb.params (1)"])
    -- the router went on with the rotated token (so it was read and used)
    local evs = assert(require("rollout.journal").read(journals[1]))
    local rotated_use = false
    for _, ev in ipairs(evs) do if ev.event == "weight_confirmed" and ev.stage == "half" then rotated_use = true end end
    assert.is_true(rotated_use, "a shift after the rotation")
    -- notification payloads: every event was posted, masked
    outputs["notification payloads"] = fs.read(dir .. "/posted") or ""
    assert.matches('"event":"preflight_check"', outputs["notification payloads"])
    assert.matches("password=%[REDACTED%]", outputs["notification payloads"])
    assert.matches("deploy API rejected %[REDACTED%] and %[REDACTED%]", outputs["notification payloads"])
    assert_clean(outputs, S)
  end, { timeout = 120 })
end)

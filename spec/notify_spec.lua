-- Notifications: webhook, Slack-compatible and the runbook's deployment-tracking calls,
-- delivered to a real HTTP receiver (spec/support/receiver.lua) while a rollout runs on
-- the real clock. Retries with backoff; a failing or hanging endpoint becomes an event and
-- does not slow the rollout.
local rollout = require("rollout")
local fs = require("rollout.fs")
local json = require("rollout.json")
local net = require("rollout.net")
local notify = require("rollout.notify")
local playbook = require("rollout.playbook")
local obs = require("spec.support.observability")
local receiver = require("spec.support.receiver")

local function with_notifications(list, over)
  local o = over or {}
  o.notifications = list
  return obs.playbook(o)
end

local function run_with(pb, sc, opts)
  opts = opts or {}
  local n = notify.new(pb, { who = "spec" })
  local outcome, e, events = obs.run(pb, sc, { emit = n.emit, who = "alice", on_engine = opts.on_engine })
  local lost = n:close(opts.close_timeout or 10)
  return outcome, events, n, lost, e
end

describe("notification config", function()
  it("rejects unknown keys, missing urls, bad types and two sources for one secret, with paths", function()
    local raw = {
      name = "x", versions = { baseline = { version = "1" }, canary = { version = "2" } },
      stages = { { weight = 100, hold = "1m" } },
      notifications = {
        { type = "webhook", url = "http://x/", bogus = 1 },
        { type = "slack" },
        { type = "pager", url = "http://x/" },
        { type = "deployment_api", url = "http://x/", url_env = "X", retries = -1, events = "all" },
        { type = "webhook", url = "ftp://x/", backoff = "soon", headers = { ["X-A"] = "a\r\nb" } },
      },
    }
    local pb, errs = playbook.validate(raw, { file = "p.lua" })
    assert.is_nil(pb)
    local got = {}
    for _, e in ipairs(errs) do got[#got + 1] = e.path .. ": " .. e.msg end
    local text = table.concat(got, "\n")
    assert.matches("notifications%[1%]%.bogus: unknown key %(known: [^\n]*url_env", text)
    assert.matches("notifications%[2%]%.url: required %(or url_env / url_file%)", text)
    assert.matches("notifications%[3%]%.type: must be one of webhook, slack, deployment_api %(got pager%)", text)
    assert.matches("notifications%[4%]%.url: give one of url, url_env, url_file", text)
    assert.matches("notifications%[4%]%.retries: must be at least 0, got %-1", text)
    assert.matches("notifications%[4%]%.events: expected a list of event names", text)
    assert.matches("notifications%[5%]%.url: must start with http:// or https://", text)
    assert.matches("notifications%[5%]%.backoff: ", text)
    assert.matches('notifications%[5%]%.headers%["X%-A"%]: header value contains a line break %(CR or LF%)', text)
    assert.same({}, notify.validate({ { type = "slack", url_env = "SLACK_URL", channel = "#deploys" } }))
    assert.same({ "1.url: required (or url_env / url_file)" }, notify.validate({ { type = "webhook" } }))
  end)

  it("reads secrets from files and the environment, and says which one is missing", function()
    local dir = assert(fs.mkdtemp("notify-spec"))
    finally(function() fs.rmtree(dir) end)
    assert(fs.write_atomic(dir .. "/url", "  https://hooks.example/T000/B000/XXXX \n", 384))
    assert.equals("https://hooks.example/T000/B000/XXXX", (notify.resolve({ url_file = dir .. "/url" }, "url")))
    assert.equals(os.getenv("HOME"), (notify.resolve({ url_env = "HOME" }, "url")))
    local v, err = notify.resolve({ url_env = "ROLLOUT_SPEC_NOT_SET_ANYWHERE" }, "url")
    assert.is_nil(v)
    assert.equals("url_env: environment variable ROLLOUT_SPEC_NOT_SET_ANYWHERE is not set", err)
    v, err = notify.resolve({ token_file = dir .. "/missing" }, "token")
    assert.is_nil(v)
    assert.matches("^token_file: .*missing: No such file", err)
    local n = notify.new({ service = "s", notifications = { { type = "slack", url_env = "ROLLOUT_SPEC_NOT_SET_ANYWHERE" } } })
    assert.same({ "slack: url_env: environment variable ROLLOUT_SPEC_NOT_SET_ANYWHERE is not set" }, n:problems())
  end)
end)

describe("notifications during a rollout", function()
  local rx
  after_each(function() if rx then rx.close(); rx = nil end end)

  it("posts the deployment start, webhook events with the values behind each decision, and Slack messages", function()
    rx = receiver()
    local dir = assert(fs.mkdtemp("notify-spec"))
    finally(function() fs.rmtree(dir) end)
    assert(fs.write_atomic(dir .. "/token", "s3cret-token\n", 384))
    local pb = with_notifications({
      { type = "deployment_api", url = rx.url .. "/deployments", token_file = dir .. "/token" },
      { type = "webhook", name = "ci", url = rx.url .. "/hook", headers = { ["X-Team"] = "sre" } },
      { type = "slack", url = rx.url .. "/slack", channel = "#dwcp-deployments", username = "rollout" },
    })
    local outcome, events = run_with(pb, obs.scenario())
    assert.equals("promoted", outcome.outcome)

    local started = obs.events_of(events, "rollout_started")[1]
    local dep = rx.on("/deployments")
    assert.equals(1, #dep)
    local d = dep[1].json
    assert.equals("Bearer s3cret-token", dep[1].headers.authorization)
    assert.equals("application/json", dep[1].headers["content-type"])
    assert.equals("obs-demo", d.service)
    assert.equals("canary", d.type)
    assert.equals("v1.0.0", d.from_version)
    assert.equals("v1.1.0", d.to_version)
    assert.equals("alice", d.started_by)
    assert.matches("^obs%-demo%-canary%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d$", d.deployment_id)
    assert.equals(os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(started.ts)), d.started_at)
    assert.equals(0, #rx.on("/deployments/rollback"), "no rollback call for a promoted rollout")

    local hooks = rx.on("/hook")
    local kinds = {}
    for _, q in ipairs(hooks) do kinds[#kinds + 1] = q.json.event end
    assert.equals("rollout_started", kinds[1])
    assert.equals("outcome", kinds[#kinds])
    assert.equals("sre", hooks[1].headers["x-team"])
    local gate
    for _, q in ipairs(hooks) do if q.json.event == "gate" then gate = q.json; break end end
    assert.is_table(gate, "a gate was sent")
    assert.equals("Initial", gate.stage)
    assert.equals("advance", gate.decision)
    assert.equals(d.deployment_id, gate.rollout.deployment_id)
    assert.equals("obs-demo", gate.rollout.service)
    local er
    for _, c in ipairs(gate.values.checks) do if c.signal == "error_rate" then er = c end end
    assert.equals(0.05, er.threshold)
    assert.equals("pass", er.status)
    assert.is_number(er.value)
    assert.matches("^gate Initial: pass", gate.text)
    assert.equals("promoted", hooks[#hooks].json.decision)

    local slack = rx.on("/slack")
    assert.truthy(#slack >= 3)
    assert.equals("#dwcp-deployments", slack[1].json.channel)
    assert.matches("^%*obs%-demo%* v1%.0%.0 → v1%.1%.0: rollout obs%-demo", slack[1].json.text)
    assert.matches("outcome: promoted", slack[#slack].json.text)
    assert.equals("good", slack[#slack].json.attachments[1].color)

    -- every delivery is in the event stream (the journal) too
    local sent = obs.events_of(events, "notification_sent")
    assert.equals(#rx.requests, #sent)
    assert.equals(0, #obs.events_of(events, "notification_failed"))
  end)

  it("posts the rollback with when, who and why", function()
    rx = receiver()
    -- the canary fails from 0.1 s; the trigger (> 20 % for 200 ms) fires long before the 1.5 s gate
    local pb = with_notifications({ { type = "deployment_api", url = rx.url .. "/deployments" } },
      { stages = { { name = "Initial", weight = 10, hold = "1.5s" }, { name = "Full", weight = 100, hold = "1s" } } })
    local sc = obs.scenario({ canary = { error_rate = 0.003, latency = { p50 = "42ms", p99 = "190ms" },
      changes = { { at = "0.1s", error_rate = 0.9 } } } })
    local outcome, events = run_with(pb, sc)
    assert.equals("rolled_back", outcome.outcome)
    assert.equals("trigger:error_rate", outcome.reason)
    local rb = rx.on("/deployments/rollback")
    assert.equals(1, #rb)
    local b = rb[1].json
    local start = rx.on("/deployments")[1].json
    assert.equals(start.deployment_id, b.deployment_id)
    assert.equals("rollout", b.rolled_back_by)
    assert.is_true(b.automatic)
    assert.equals("trigger:error_rate", b.reason_code)
    assert.matches("^Automatic rollback: trigger:error_rate %(value 0%.", b.reason)
    local started = obs.events_of(events, "rollout_started")[1]
    local rolled = obs.events_of(events, "rolled_back")[1]
    assert.equals(os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(started.ts - started.t + rolled.at)), b.rolled_back_at)
  end)

  it("names the operator who aborted as rolled_back_by", function()
    rx = receiver()
    local pb = with_notifications({ { type = "deployment_api", url = rx.url .. "/deployments" } })
    local outcome = run_with(pb, obs.scenario(), { on_engine = function(e)
      rollout.spawn(function() rollout.sleep(0.6); e:command("abort", "latency looks odd", "bob") end)
    end })
    assert.equals("rolled_back", outcome.outcome)
    local b = rx.on("/deployments/rollback")[1].json
    assert.equals("bob", b.rolled_back_by)
    assert.equals("Manual rollback: latency looks odd", b.reason)
    assert.is_false(b.automatic)
  end)
end)

describe("notification delivery", function()
  local rx
  after_each(function() if rx then rx.close(); rx = nil end end)

  local function one_event_set(cfg)
    local events = {}
    local n = notify.new({ service = "svc", notifications = { cfg } }, { emit = function(kind, f)
      f.event = kind
      events[#events + 1] = f
    end })
    return n, events
  end

  it("retries 5xx with exponential backoff until it gets through", function()
    rx = receiver({ ["/hook"] = { 503, 502, 200 } })
    local n, events = one_event_set({ type = "webhook", url = rx.url .. "/hook", backoff = "200ms", events = { "outcome" } })
    local t0 = rollout.now()
    n.emit({ event = "outcome", outcome = "promoted", t = 1, ts = os.time() })
    assert.equals(0, n:close(10))
    local reqs = rx.on("/hook")
    assert.equals(3, #reqs)
    assert.near(0.2, reqs[2].at - reqs[1].at, 0.15)
    assert.near(0.4, reqs[3].at - reqs[2].at, 0.15)
    assert.equals(1, #events)
    assert.equals("notification_sent", events[1].event)
    assert.equals(3, events[1].attempts)
    assert.equals(200, events[1].status)
    assert.equals("outcome", events[1]["for"])
    assert.lt(rollout.now() - t0, 2)
  end)

  it("does not retry a 4xx, and gives up after `retries` with an event", function()
    rx = receiver({ ["/bad"] = { 400 }, ["/down"] = { 500 } })
    local n, events = one_event_set({ type = "webhook", url = rx.url .. "/bad", events = { "outcome" } })
    n.emit({ event = "outcome", outcome = "promoted", t = 1 })
    n:close(5)
    assert.equals(1, #rx.on("/bad"))
    assert.equals("notification_failed", events[1].event)
    assert.equals(1, events[1].attempts)
    assert.matches("^HTTP 400", events[1].error)
    local n2, ev2 = one_event_set({ type = "webhook", url = rx.url .. "/down", retries = 2, backoff = "50ms", events = { "outcome" } })
    n2.emit({ event = "outcome", outcome = "promoted", t = 1 })
    n2:close(5)
    assert.equals(3, #rx.on("/down"))
    assert.equals("notification_failed", ev2[1].event)
    assert.equals(3, ev2[1].attempts)
  end)

  it("never shows a secret url in an error", function()
    local port
    do local s = assert(net.listen_tcp("127.0.0.1", 0)); port = s:port(); s:close() end
    local dir = assert(fs.mkdtemp("notify-spec"))
    finally(function() fs.rmtree(dir) end)
    local secret = "http://127.0.0.1:" .. port .. "/services/T0/B0/SECRET"
    assert(fs.write_atomic(dir .. "/url", secret, 384))
    local n, events = one_event_set({ type = "slack", url_file = dir .. "/url", retries = 0, events = { "outcome" } })
    n.emit({ event = "outcome", outcome = "rolled_back", reason = "gate:p99", t = 1 })
    n:close(5)
    assert.equals("notification_failed", events[1].event)
    assert.matches("<url>", events[1].error)
    assert.is_nil(events[1].error:find("SECRET", 1, true), events[1].error)
  end)

  it("a hanging or refused endpoint becomes an event and does not slow the rollout", function()
    rx = receiver({ ["/hang"] = { "hang" } })
    local port
    do local s = assert(net.listen_tcp("127.0.0.1", 0)); port = s:port(); s:close() end
    local plain = obs.playbook()
    local t0 = rollout.now()
    local o1 = obs.run(plain, obs.scenario())
    local quiet = rollout.now() - t0

    local pb = with_notifications({
      { type = "webhook", name = "hang", url = rx.url .. "/hang", timeout = "1s", retries = 1, backoff = "100ms", events = { "*" } },
      { type = "slack", name = "refused", url = "http://127.0.0.1:" .. port .. "/x", retries = 1, backoff = "100ms" },
    })
    local n = notify.new(pb, { who = "spec" })
    t0 = rollout.now()
    local o2, _, events = obs.run(pb, obs.scenario(), { emit = n.emit })
    local noisy = rollout.now() - t0
    assert.equals(o1.outcome, o2.outcome)
    assert.equals("promoted", o2.outcome)
    -- a notifier that held the rollout would add its 1 s timeout to each of the dozens of
    -- events; the same run's quiet time, doubled for load, is the bound
    assert.lt(noisy, 2 * quiet + 0.3, string.format("rollout took %.2f s with failing notifiers, %.2f s without", noisy, quiet))
    assert.truthy(n:pending() > 0, "the hanging webhook still has work queued when the rollout ends")
    local lost = n:close(2.5)
    assert.truthy(lost > 0)
    local failed = obs.events_of(events, "notification_failed")
    local by = {}
    for _, f in ipairs(failed) do by[f.notifier] = by[f.notifier] or f end
    assert.matches("connection refused", by.refused.error)
    assert.equals(2, by.refused.attempts)
    assert.matches("timed out", by.hang.error)
    local exit_lost = 0
    for _, f in ipairs(failed) do if f.error == "not delivered before exit" then exit_lost = exit_lost + 1 end end
    assert.equals(lost, exit_lost)
    -- the failures are engine events: with a t, in the rollout's own stream
    assert.is_number(by.hang.t)
  end)
end)

describe("rollout run with --metrics-listen and notifications", function()
  local live = require("spec.support.live_rollout")
  local http = require("rollout.http")
  local env, rx
  after_each(function()
    if rx then rx.close(); rx = nil end
    if env then env.stop(); env = nil end
  end)

  it("serves /metrics while it runs, posts the start and the rollback, and journals every delivery", function()
    rx = receiver()
    env = live.env({ canary_args = { "--error-rate", "0.5" } })
    local port
    do local s = assert(net.listen_tcp("127.0.0.1", 0)); port = s:port(); s:close() end
    local run = live.start(env, { "--no-control", "--metrics-listen", "127.0.0.1:" .. port, "--metrics-linger", "0",
      "--set", "notifications[1].type=deployment_api", "--set", "notifications[1].url=" .. rx.url .. "/deployments",
      "--set", "notifications[2].type=slack", "--set", "notifications[2].url=" .. rx.url .. "/slack" })
    -- scrape while it runs: the canary is at 10 % and the trigger sees its errors
    local seen_weight, seen_signal
    local deadline = rollout.now() + 30
    while rollout.now() < deadline and run.child:running() do
      local r = http.get("http://127.0.0.1:" .. port .. "/metrics", { timeout = 1 })
      if r and r.status == 200 then
        seen_weight = seen_weight or r.body:match('rollout_canary_weight{service="fast"} 10\n')
        -- the highest error rate scraped (the first evaluations may not have seen an error yet)
        local m = r.body:match('rollout_signal{service="fast",version="canary",signal="error_rate"} ([%d%.e%-]+)\n')
        local v = m and tonumber(m)
        if v and (not seen_signal or v > seen_signal) then seen_signal = v end
      end
      rollout.sleep(0.05)
    end
    local code = run:wait(30)
    assert.equals(1, code, run:stderr())
    assert.matches("rollout: metrics http://127%.0%.0%.1:" .. port .. "/metrics", run:stderr())
    assert.truthy(seen_weight, "never scraped the canary at 10 %")
    assert.gt(seen_signal or 0, 0.2, "the canary's error rate as scraped")
    local start = rx.on("/deployments")[1].json
    assert.equals("fast", start.service)
    assert.equals("v1", start.from_version)
    assert.equals("v2", start.to_version)
    local rb = rx.on("/deployments/rollback")[1].json
    assert.equals(start.deployment_id, rb.deployment_id)
    assert.equals("trigger:errors", rb.reason_code)
    assert.truthy(#rx.on("/slack") >= 3)
    local events = live.events(env)
    assert.equals(#rx.requests, live.count(events, "notification_sent"))
    -- and the report reads the real journal
    local path = require("rollout.journal").list(env.journal_dir)[1]
    local r = assert(require("rollout.proc").run({ argv = { rollout.exe, "report", path, "--json", "-" }, timeout = 30 }))
    local doc = assert(json.decode(r.stdout), r.stderr)
    assert.equals("rolled_back", doc.outcome)
    assert.equals(start.deployment_id, doc.deployment_id)
    assert.matches("^Rolled back at [%d%.]+s during ten %(canary at 10%%%): trigger errors fired", doc.why)
    -- the endpoint is gone with the process
    assert.is_nil(http.get("http://127.0.0.1:" .. port .. "/metrics", { timeout = 1 }))
  end, { timeout = 120 })
end)

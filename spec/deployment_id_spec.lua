-- One deployment id per rollout: the Kubernetes runbook's canary manifest (its
-- deployment-id label, DEPLOYMENT_ID env and a manifest file's ${DEPLOY_ID}) carries the id
-- the notifications name: rollout.datetime's of the rollout's START, kept across a resume.
-- The runbook built its own from the time the manifest was rendered, so a deploy step that
-- began a second after the start, or any step after a resume, named another deployment.
-- Real clock, simulated router and traffic (spec/support/observability.lua), a real HTTP
-- receiver for the deployment API; the manifest is the runbook's own (rollout.k8s.runbook).
local rollout = require("rollout")
local datetime = require("rollout.datetime")
local journal = require("rollout.journal")
local notify = require("rollout.notify")
local runbook = require("rollout.k8s.runbook")
local obs = require("spec.support.observability")
local receiver = require("spec.support.receiver")

local function manifest_id(ctx)
  local m = runbook.manifest(ctx, runbook.config(ctx.engine.pb))
  assert.equals(m.metadata.labels["deployment-id"], m.spec.template.spec.containers[1].env[1].value)
  return m.metadata.labels["deployment-id"]
end

local function playbook(url, hooks)
  return obs.playbook({
    params = { kubernetes = { image = "registry.example/obs-demo:v1.1.0", namespace = "production" } },
    stages = { { name = "Initial", weight = 10, hold = "400ms" }, { name = "Half", weight = 50, hold = "2s" },
      { name = "Full", weight = 100, hold = "400ms" } },
    notifications = { { type = "deployment_api", url = url .. "/deployments", rollback_url = url .. "/rollback" } },
    hooks = hooks,
  })
end

describe("the runbook's canary manifest", function()
  local rx
  after_each(function() if rx then rx.close() end end)

  it("names the deployment the rollout started as, though the deploy step starts seconds later", function()
    rx = receiver()
    local seen = {}
    local pb = playbook(rx.url, { deploy = function(ctx)
      rollout.sleep(1.2) -- the deploy step renders its manifest in a later second than the start
      seen[#seen + 1] = manifest_id(ctx)
      return true
    end })
    local n = notify.new(pb, { who = "spec" })
    local outcome, _, evs = obs.run(pb, obs.scenario(), { emit = n.emit })
    n:close(5)
    assert.equals("promoted", outcome.outcome)
    local started = obs.events_of(evs, "rollout_started")[1]
    local want = datetime.deployment_id("obs-demo", started.ts)
    assert.same({ want }, seen)
    local start = rx.on("/deployments")[1]
    assert(start, "the deployment API heard the start")
    assert.equals(want, start.json.deployment_id, "the notification and the manifest name one deployment")
  end)

  it("keeps that id after a resume", function()
    rx = receiver()
    local seen = {}
    local pb = playbook(rx.url, { before_stage = function(ctx)
      seen[#seen + 1] = manifest_id(ctx)
      return true
    end })
    local n1 = notify.new(pb, { who = "spec" })
    local events = obs.crash_at(pb, obs.scenario(), 50, n1.emit)
    n1:close(2)
    local first = #seen
    assert.truthy(first >= 2, "before_stage ran in the first run")
    rollout.sleep(1.5) -- no engine runs; the resumed run renders its manifest seconds later
    local n2 = notify.new(pb, { who = "spec" })
    local outcome = obs.run(pb, obs.scenario(), { emit = n2.emit, resume = assert(journal.replay(events)) })
    n2:close(5)
    assert.equals("promoted", outcome.outcome)
    assert.truthy(#seen > first, "before_stage ran in the resumed run")
    local id = rx.on("/deployments")[1].json.deployment_id
    assert.equals(datetime.deployment_id("obs-demo", obs.events_of(events, "rollout_started")[1].ts), id)
    for i, got in ipairs(seen) do assert.equals(id, got, "manifest " .. i .. (i > first and " (resumed)" or "")) end
  end)
end)

-- rollout check PLAYBOOK [--config FILE] [--set k=v ...] [--json]
-- Validates the playbook without side effects, then checks what the router and sources
-- can be checked for without moving traffic (socket reachable, names exist, API up).
-- Every configured source (scrape, prometheus, probe, alertmanager) is asked once, the way
-- an evaluation asks it (rollout.safety.check_source): one that cannot answer is a failed
-- check, never a pass on nothing. --offline skips the router and the sources.
-- Exit 0 when everything is fine, 2 on a configuration error, 3 when a live check fails.
-- Error policy: usage and playbook errors (every one, file:line: key: problem, or JSON
-- with --json) return 2 before any live check; a router, source or permission that cannot
-- be built or asked is a failed check in the list (exit 3), never a raise.
local rollout = require("rollout")
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local json = require("rollout.json")
local safety = require("rollout.safety")
local assemble = require("rollout.assemble")
local access = require("rollout.k8s.access")
local exit = require("rollout.exit")

local M = {}
M.summary = "validate a playbook, then check its router and sources without moving traffic"
M.usage = "rollout check PLAYBOOK [--config FILE] [--set KEY=VALUE ...] [--json] [--offline]"
M.description = "Validates PLAYBOOK with no side effects and reports every error at once as "
  .. "file:line: key: problem. Then checks what can be checked without moving traffic: the router's "
  .. "socket or API is reachable, its backend and server names exist, its config file is writable; every "
  .. "configured source (scrape targets, Prometheus, the probe's URLs, Alertmanager) is asked once the way an "
  .. "evaluation asks it: a source that cannot answer is a failed check, never a pass on nothing. "
  .. "On Kubernetes it asks the API server (SelfSubjectAccessReview) for every permission the playbook "
  .. "will need and lists each missing one (docs/kubernetes.md)."
M.options = {
  { "--config FILE", "map a runbook CanaryDeployment YAML onto the playbook (stages, golden signals, "
    .. "rollback triggers, feature flags, abTest); keys rollout cannot use are warned about with file and line" },
  { "--set KEY=VALUE", "override a playbook value before validation, e.g. --set stages[2].hold=20s or "
    .. "--set sources[1].url=http://prom:9090; numbers and booleans are read as such, a value starting with "
    .. "[ or { as JSON; repeatable", list = true },
  { "--json", "print {ok, checks = [{name, ok, detail}]} as one JSON object" },
  { "--offline", "validate only: skip the live checks of the router and the sources, and the permission reviews" },
}
M.exit = exit.describe({ { "OK", "everything is fine" }, { "USAGE", "the playbook is invalid" },
  { "FAILED", "a live check failed" } })

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("check", pos, M.usage) end
  if #pos ~= 1 then return args.usage_error("check", "expected one playbook", M.usage) end
  local pb, errs = playbook.load(pos[1], { sets = opts.set, config = opts.config })
  if not pb then
    if opts.json then
      print(json.encode({ ok = false, errors = errs }, { sort = true }))
    else
      playbook.print_errors(errs)
      io.stderr:write(string.format("%d error%s in %s\n", #errs, #errs == 1 and "" or "s", pos[1]))
    end
    return 2
  end
  for _, w in ipairs(pb.warnings or {}) do io.stderr:write("warning: ", playbook.format_error(w), "\n") end
  local items = { { name = "playbook", ok = true, detail = string.format("%d stages, %d triggers, %d pre-flight checks", #pb.stages, #pb.triggers, #pb.preflight) } }
  if not opts.offline and pb.router then
    local r, rerr = assemble.router(pb)
    if not r then items[#items + 1] = { name = "router", ok = false, detail = rerr }
    else for _, c in ipairs(r:check() or {}) do items[#items + 1] = c end end
  end
  if not opts.offline then -- every Kubernetes permission the playbook needs (SelfSubjectAccessReview)
    for _, c in ipairs(access.check_items(pb)) do items[#items + 1] = c end
  end
  if not opts.offline then
    for i, cfg in ipairs(pb.sources or {}) do
      local name = string.format("source %s (%s, sources[%d])", tostring(cfg.name or cfg.type), tostring(cfg.type), i)
      local src, serr = assemble.source(pb, i)
      if not src then
        items[#items + 1] = { name = name, ok = false, detail = serr }
      else
        local cok, good, detail = pcall(safety.check_source, src, rollout.now(), pb.trigger_window)
        items[#items + 1] = { name = name, ok = cok and good or false, detail = cok and detail or tostring(good) }
        assemble.close({ src })
      end
    end
  end
  local bad = 0
  for _, it in ipairs(items) do if not it.ok then bad = bad + 1 end end
  if opts.json then
    print(json.encode({ ok = bad == 0, checks = items }, { sort = true }))
  else
    for _, it in ipairs(items) do
      print(string.format("%-4s %s%s", it.ok and "ok" or "FAIL", it.name, it.detail and (": " .. tostring(it.detail)) or ""))
    end
  end
  return bad == 0 and 0 or 3
end

return M

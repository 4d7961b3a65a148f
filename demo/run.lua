-- demo/run.lua: `make demo`. A real canary release on this machine, end to end.
--
--   ./rollout demo/run.lua [--good] [--prometheus] [--rps N] [--out DIR] [--keep]
--
-- Starts on loopback (demo/stack.lua): the sample service as baseline v2.9.0 and
-- canary v3.0.0, HAProxy in front of them, load through HAProxy, and with --prometheus a
-- real Prometheus scraping both and an Alertmanager it sends alerts to. Then it runs
--   rollout run playbooks/demo.lua --set ...(the addresses)...
-- as a child with this terminal passed through, so the live progress view shows. By default
-- the canary starts failing 20 % of its requests when HAProxy gives it 25 % (stage 2), and
-- the engine must roll it back by itself; with --good nothing is injected and the canary
-- must be promoted. At the end (also on Ctrl-C or SIGTERM) everything it started is
-- stopped, and it prints the outcome, why, what users saw, and where the record is.
--
-- Exit status: 0 when the demo behaved as designed (bad canary rolled back by a trigger or
-- a gate, good canary promoted) and every part of it worked (the journal is there, the HTML
-- and Markdown reports were made), 1 when anything did not, 2 for a usage error, 130 when
-- interrupted.
local ROOT = ((arg and arg[0] or "demo/run.lua"):match("^(.*)/[^/]*$") or "demo") .. "/.."
package.path = ROOT .. "/?.lua;" .. package.path

local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local demo_stack = require("demo.stack")

local USAGE = "usage: rollout demo/run.lua [--good] [--prometheus] [--rps N] [--out DIR] [--keep]"
local FAULT = { error_rate = 0.2 }

local opts = { rps = 200 }
do
  local i = 1
  while arg and i <= #arg do
    local a = arg[i]
    if a == "--good" then opts.good = true
    elseif a == "--prometheus" then opts.prometheus = true
    elseif a == "--keep" then opts.keep = true
    elseif a == "--rps" and tonumber(arg[i + 1]) then opts.rps = tonumber(arg[i + 1]); i = i + 1
    elseif a == "--out" and arg[i + 1] then opts.out = arg[i + 1]; i = i + 1
    elseif a == "--help" or a == "-h" then print(USAGE); return 0
    else io.stderr:write("demo: unknown argument '", a, "'\n", USAGE, "\n"); return 2 end
    i = i + 1
  end
end

local tty = fs.isatty(1)
local function style(code, s) if tty then return "\27[" .. code .. "m" .. s .. "\27[0m" end return s end
local function say(fmt, ...) io.stdout:write(style("1;34", "demo: ") .. string.format(fmt, ...) .. "\n"); io.stdout:flush() end

-- ---- Ctrl-C and SIGTERM: stop the rollout gracefully, then everything else --------------

local stack
local interrupted, stopped
local function on_signals()
  local sig = rollout.wait_signal("INT", "TERM")
  interrupted = sig
  local run = stack and stack.current_run
  if run and run:running() then
    -- `rollout run` rolls back on SIGINT (--on-interrupt=rollback, its default) and exits;
    -- we print nothing until it has, so its live view is not drawn over our lines
    run.child:kill("INT")
    demo_stack.wait_for(function()
      local journal = demo_stack.journal_file(stack.current_journal)
      return not run:running() or ((journal and fs.read(journal) or ""):find('"event":"outcome"', 1, true) ~= nil)
    end, 3)
    if run:running() then run.child:kill("INT") end
    if select(2, run.child:wait(10)) == "timeout" then run.child:kill("KILL") end
    io.stderr:write("\ndemo: SIG" .. sig .. ": the rollout was rolled back to baseline 100 %\n")
  end
  io.stderr:write("demo: SIG" .. sig .. ": stopping everything the demo started\n")
  demo_stack.stop_all(opts.keep)
  stopped = true
end
local signal_task = rollout.spawn(function()
  on_signals()
  -- a second signal while stopping: no more patience
  rollout.wait_signal("INT", "TERM")
  demo_stack.kill_all()
  os.exit(130)
end)

-- ---- the record: journal and report, when `rollout run` and `rollout report` have them ---

local function has_command(name)
  return package.searchpath("rollout.cmd." .. name, package.path) ~= nil
end

-- Where the record stays after the stack's temp dir is gone (--out, else a fresh /tmp dir).
local function results_dir()
  if opts.out then assert(fs.mkdir(opts.out, 493, true)); return opts.out end
  local dir = string.format("/tmp/rollout-demo-%s-%d", os.date("%Y%m%d-%H%M%S"), fs.getpid())
  assert(fs.mkdir(dir, 493))
  return dir
end

-- ---- the demo ---------------------------------------------------------------------------

local function describe_start(s)
  say("on loopback: sample-service %s (baseline) on :%d, %s (canary) on :%d", demo_stack.BASELINE, s.baseline.port,
    demo_stack.CANARY, s.canary.port)
  say("HAProxy on :%d (backend %s, runtime API %s), load %d req/s through it", s.haproxy_proc.port, demo_stack.BACKEND,
    s.haproxy_proc.socket, opts.rps)
  if s.prom then
    say("Prometheus on :%d scraping both every 1 s (the playbook reads its metrics there); Alertmanager on :%d",
      s.prom.port, s.am.port)
    say("Prometheus alerts (DWCPCanaryCriticalErrorRate, severity critical) when the canary's errors pass the")
    say("runbook's criticalErrorRate (5 %%); the playbook's critical_alert trigger watches Alertmanager for it")
  end
  if opts.good then
    say("the canary is healthy this time: the rollout should promote it " .. style("1", "(make demo GOOD=1)"))
  else
    say("the canary will start failing %d%% of its requests when it reaches stage 2 (25%% of traffic);",
      math.floor(FAULT.error_rate * 100))
    say("the engine should notice and roll it back by itself " .. style("1", "(make demo GOOD=1 promotes a healthy one)"))
  end
end

local function verdict(res, s)
  local final = s:canary_weight()
  if opts.good then
    if res.outcome == "promoted" and final == 100 then return true, "promoted, and HAProxy sends the canary 100 %" end
    return false, string.format("expected the healthy canary to be promoted, got %s (%s), HAProxy canary weight %s",
      tostring(res.outcome), tostring(res.reason), tostring(final))
  end
  local by_policy = res.reason and (res.reason:match("^trigger:") or res.reason:match("^gate:"))
  if res.outcome == "rolled_back" and by_policy and final == 0 and s.canary.fault_at then
    return true, "rolled back by the playbook's own policy, and HAProxy sends the canary 0 %"
  end
  return false, string.format("expected the failing canary to be rolled back by a trigger or gate, got %s (%s), "
    .. "HAProxy canary weight %s, fault injected: %s", tostring(res.outcome), tostring(res.reason), tostring(final),
    s.canary.fault_at and "yes" or "no")
end

local function report_figures(res, s)
  local t = demo_stack.rollback_timing(res.events)
  if s.canary.fault_at then
    local to = (t and t.confirmed or rollout.time()) + 1
    local failed, sent = s.load:failed_between(s.canary.fault_at, to)
    say("users sent %d requests while the failing canary was live; %s failed", sent, style("1", tostring(failed)))
    if t and t.confirmed then
      say("fault -> HAProxy at 0 %%: %.1f s", t.confirmed - s.canary.fault_at)
    end
  end
  if t and t.seconds then
    say("trigger %s: condition held (pending + for %s s) -> HAProxy confirmed 0 %%: %.2f s",
      t.reason:gsub("^trigger:", ""), tostring(t["for"]), t.seconds)
  end
  local _, summary = s.load:read()
  if summary then say("load in all: %d requests, %d failed", summary.sent or 0, summary.failed or 0) end
end

local function main()
  local out = results_dir()
  local err
  stack, err = demo_stack.start({ prometheus = opts.prometheus, alertmanager = opts.prometheus, rules = opts.prometheus,
    rps = opts.rps })
  if not stack then
    if interrupted then return 130 end
    io.stderr:write("demo: could not start the demo's components: ", tostring(err), "\n")
    return 1
  end
  describe_start(stack)
  if not opts.good then
    stack:on_weight(25, function() stack.canary:fault(FAULT) end)
  end
  local args = { "--journal", out .. "/journal" }
  local sets = stack:sets({ prometheus = opts.prometheus })
  local shown = { "rollout run playbooks/demo.lua" }
  for _, s in ipairs(sets) do shown[#shown + 1] = "--set " .. s end
  for i = 1, #args, 2 do shown[#shown + 1] = args[i] .. " " .. args[i + 1] end
  say("%s", table.concat(shown, " \\\n      "))
  io.stdout:write("\n")
  local res, rerr = stack:run({ sets = sets, inherit = true, args = args })
  if interrupted then return 130 end
  if not res then io.stderr:write("demo: ", tostring(rerr), "\n"); return 1 end
  io.stdout:write("\n")
  local ok, why = verdict(res, stack)
  stack.load:stop()
  report_figures(res, stack)
  -- keep the load generator's seconds beside the journal
  fs.write_atomic(out .. "/loadgen.jsonl", fs.read(stack.load.file) or "")
  say("outcome: %s%s (exit %s)", style(res.outcome == "promoted" and "1;32" or "1;31", tostring(res.outcome)),
    res.reason and (", reason " .. style("1", res.reason)) or "", tostring(res.code))
  local journal = res.journal
  if journal then say("journal: %s (every decision with the numbers behind it)", journal) end
  say("load:    %s/loadgen.jsonl (what users saw, second by second)", out)
  -- every part must work: a report that cannot be made is a failed demo, whatever the outcome
  if not journal then
    ok, why = false, "the run left no journal" .. (ok and "" or ("; " .. why))
  elseif has_command("report") then
    local html, md = out .. "/report.html", out .. "/report.md"
    local r = proc.run({ argv = { rollout.exe, "report", journal, "--html", html, "--markdown", md }, timeout = 60 })
    if r and r.code == 0 and fs.stat(md) and fs.stat(html) then
      say("report:  %s (and %s)", md, html)
    else
      local rwhy = r and ((r.stderr or ""):gsub("%s+$", "")) or "rollout report did not run"
      say("report:  could not be made: %s", rwhy)
      ok, why = false, "the report could not be made (" .. rwhy .. ")" .. (ok and "" or ("; " .. why))
    end
  end
  if ok then say("%s: %s", style("1;32", "as designed"), why) else say("%s: %s", style("1;31", "NOT as designed"), why) end
  return ok and 0 or 1
end

local okm, code = pcall(main)
if not okm then
  if not interrupted then io.stderr:write("demo: ", tostring(code), "\n") end
  code = interrupted and 130 or 1
end
-- interrupted: the signal task stops the rollout and everything else; let it finish (it
-- may outlast main when `rollout run` rolled back and exited quickly)
local deadline = rollout.now() + 30
while interrupted and not stopped and rollout.now() < deadline do rollout.sleep(0.05) end
if stack then stack:stop(opts.keep) end
if opts.keep and stack then say("kept the stack's files in %s", stack.dir) end
signal_task:cancel("done")
return code

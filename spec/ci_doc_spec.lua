-- docs/ci.md: the GitHub Actions workflow and the GitLab CI file it shows are read out of the
-- page, checked for the structure the text promises, and their shell commands run as
-- written: the policy job (rollout verify) in a checkout-like directory, the release job
-- (rollout run with --on-interrupt=rollback) against the real stack (demo/stack.lua),
-- with the exit code mapped as the table says.
local rollout = require("rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local json = require("rollout.json")
local yaml = require("rollout.yaml")
local demo_stack = require("demo.stack")

local ROOT = fs.realpath(".")

local function blocks()
  local doc = assert(fs.read("docs/ci.md"))
  local gh = assert(doc:match("## GitHub Actions.-```yaml\n(.-)```"), "the GitHub Actions block")
  local gl = assert(doc:match("## GitLab CI.-```yaml\n(.-)```"), "the GitLab CI block")
  return assert(yaml.load(gh)), assert(yaml.load(gl)), doc
end

-- a directory like a CI checkout: playbooks/ and scenarios/ of this repository (or ours),
-- and `rollout` on the PATH
local function checkout(scenarios)
  local d = assert(fs.mkdtemp("ci"))
  assert(fs.mkdir(d .. "/bin"))
  assert(proc.run({ argv = { "ln", "-s", rollout.exe, d .. "/bin/rollout" }, timeout = 5 }).code == 0)
  assert(proc.run({ argv = { "ln", "-s", ROOT .. "/playbooks", d .. "/playbooks" }, timeout = 5 }).code == 0)
  assert(proc.run({ argv = { "ln", "-s", scenarios or (ROOT .. "/scenarios"), d .. "/scenarios" }, timeout = 5 }).code == 0)
  return d
end

-- run a job's shell as the CI would: GitHub's `bash --noprofile --norc -eo pipefail`, GitLab's
-- script lines in one shell with `set -eo pipefail`
local function shell(dir, script, env, timeout)
  local e = { PATH = dir .. "/bin:" .. (os.getenv("PATH") or "/usr/bin:/bin"), HOME = dir }
  for k, v in pairs(env or {}) do e[k] = v end
  return assert(proc.run({ argv = { "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script }, cwd = dir, env = e,
    timeout = timeout or 60 }))
end

local function step(job, pred)
  for _, s in ipairs(job.steps) do if pred(s) then return s end end
end

describe("docs/ci.md", function()
  it("shows a GitHub Actions workflow and a GitLab CI file with the promised structure", function()
    local gh, gl = blocks()
    assert.same({ "playbooks/**", "scenarios/**" }, gh.on.pull_request.paths)
    local verify = step(gh.jobs.policy, function(s) return s.run and s.run:find("rollout verify", 1, true) end)
    assert.matches("%-%-junit verify%.xml", verify.run)
    local report = step(gh.jobs.policy, function(s) return s.uses and s.uses:find("junit", 1, true) end)
    assert.equals("always()", report["if"])
    assert.equals("verify.xml", report.with.report_paths)
    local run = step(gh.jobs.release, function(s) return s.run and s.run:find("rollout run", 1, true) end)
    assert.matches("%-%-on%-interrupt=rollback", run.run)
    assert.equals("policy", gh.jobs.release.needs)
    assert.equals("verify.xml", gl.policy.artifacts.reports.junit)
    assert.equals("always", gl.policy.artifacts.when)
    assert.same({ 3 }, gl.release.allow_failure.exit_codes)
    assert.matches("%-%-on%-interrupt=rollback", table.concat(gl.release.script, "\n"))
  end)

  it("the policy jobs' commands pass on this repository's scenarios and fail on a mismatch", function()
    local gh, gl = blocks()
    local gh_cmd = step(gh.jobs.policy, function(s) return s.run and s.run:find("rollout verify", 1, true) end).run
    local gl_cmd = table.concat(gl.policy.script, "\n")
    for _, cmd in ipairs({ gh_cmd, gl_cmd }) do
      local d = checkout()
      local r = shell(d, cmd)
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("ok: %d+ passed, 0 failed", r.stdout)
      local xml = assert(fs.read(d .. "/verify.xml"))
      assert.matches('<testsuites name="rollout verify playbooks/canary%.lua" tests="%d+" failures="0"', xml)
      fs.rmtree(d)
    end
    -- a scenario the playbook decides differently: the job fails, the report says why
    local sc = assert(fs.mkdtemp("ci-sc"))
    assert(fs.write_atomic(sc .. "/wrong.lua", (fs.read("scenarios/error-spike.lua"):gsub("expect%s*=%s*%b{}",
      'expect = { outcome = "promoted" }'))))
    local d = checkout(sc)
    local r = shell(d, gh_cmd)
    assert.equals(1, r.code)
    assert.matches('<failure message="outcome rolled_back, expected promoted"', fs.read(d .. "/verify.xml"))
    fs.rmtree(d); fs.rmtree(sc)
  end)
end)

describe("docs/ci.md release jobs on HAProxy", function()
  local s
  after_each(function() if s then s:stop() end; s = nil end)

  local function release_env(stack, dir)
    local args = {}
    for _, v in ipairs(stack:sets()) do args[#args + 1] = "--set " .. v end
    args[#args + 1] = "--journal " .. dir .. "/.rollout/journal/dwcp-v3 --run-dir " .. dir .. "/run"
    return { PLAYBOOK = ROOT .. "/playbooks/demo.lua", ROLLOUT_ARGS = table.concat(args, " "), ROLLOUT_PROGRESS = "0" }
  end

  it("maps a rollback to a failed job (GitHub: exit 1 and an ::error:: line; GitLab: exit 1)", function()
    local gh, gl = blocks()
    local gh_cmd = step(gh.jobs.release, function(x) return x.run and x.run:find("rollout run", 1, true) end).run
    local gl_cmd = table.concat(gl.release.script, "\n")
    s = assert(demo_stack.start({ rps = 200 }))
    for i, cmd in ipairs({ gh_cmd, gl_cmd }) do
      if i == 2 then s:reset() end
      s:on_weight(25, function() assert(s.canary:fault({ error_rate = 0.2 })) end)
      local d = checkout()
      local r = shell(d, cmd, release_env(s, d), 120)
      assert.equals(1, r.code, r.stdout .. r.stderr)
      local last = r.stdout:match("([^\n]+)\n?$")
      if i == 1 then assert.matches("^::error::rolled back: {", last) end
      assert.matches('"outcome":"rolled_back"', last)
      assert.truthy(fs.stat(d .. "/.rollout/journal/dwcp-v3"), "the journal the artifact step keeps")
      fs.rmtree(d)
    end
  end, { timeout = 300 })

  it("a cancelled job (SIGTERM) rolls the release back with --on-interrupt=rollback", function()
    local gh = blocks()
    local gh_cmd = step(gh.jobs.release, function(x) return x.run and x.run:find("rollout run", 1, true) end).run
    s = assert(demo_stack.start({ rps = 200 }))
    local d = checkout()
    local e = release_env(s, d)
    e.PATH = d .. "/bin:" .. (os.getenv("PATH") or "/usr/bin:/bin")
    e.HOME = d
    local child = assert(proc.spawn({ argv = { "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", gh_cmd }, cwd = d, env = e,
      stdout = d .. "/out.txt", stderr = d .. "/err.txt" }))
    assert(demo_stack.wait_for(function() return (s:canary_weight() or 0) >= 25 end, 60), "stage 2 never came")
    -- the runner cancels: SIGTERM to the step's processes (rollout is bash's child)
    local pids = assert(proc.run({ argv = { "pgrep", "-P", tostring(child:pid()) }, timeout = 5 })).stdout
    for pid in pids:gmatch("%d+") do proc.run({ argv = { "kill", "-TERM", pid }, timeout = 5 }) end
    local code = child:wait(60)
    assert.equals(1, code, (fs.read(d .. "/out.txt") or "") .. (fs.read(d .. "/err.txt") or ""))
    assert.equals(0, s:canary_weight(), "traffic is back on the old version")
    assert.matches("::error::rolled back", fs.read(d .. "/out.txt"))
    local summary = json.decode((fs.read(d .. "/out.txt") or ""):match('({"at".-})') or "{}")
    assert.equals("rolled_back", summary and summary.outcome)
    fs.rmtree(d)
  end, { timeout = 200 })
end)

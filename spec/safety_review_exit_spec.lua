-- Signals at exit (review defect 9): once a process has caught SIGINT/SIGTERM, more of them
-- while it exits (the loop closed, lua_close freeing the state) never kill it: the exit code
-- it chose stands. A script that keeps a large heap (so lua_close takes a while) and the
-- real engine against HAProxy, both sent SIGINT every 2 ms until they exit.
local live = require("spec.support.live_rollout")
local fs = require("rollout.fs")
local proc = require("rollout.proc")

local function spam_int(child)
  child:kill("INT")
  for _ = 1, 2000 do
    rollout.sleep(0.002)
    if not child:running() then break end
    child:kill("INT")
  end
  return child:wait(30)
end

describe("repeated SIGINT while rollout exits", function()
  local dir
  setup(function() dir = assert(fs.mkdtemp("sigexit")) end)
  teardown(function() if dir then fs.rmtree(dir) end end)

  it("a script that caught SIGINT exits with its own code, 20 runs out of 20", function()
    local p = dir .. "/exit1.lua"
    assert(fs.write_atomic(p, [[
rollout.watch_signal("INT", "TERM")
HEAP = {}
for i = 1, 300000 do HEAP[i] = { i } end -- lua_close frees all of it, after the loop closed
io.stdout:write("ready\n"); io.stdout:flush()
rollout.wait_signal("INT", "TERM")
return 1
]]))
    local got = {}
    for i = 1, 20 do
      local out = dir .. "/out" .. i
      local child = assert(proc.spawn{ argv = { rollout.exe, p }, stdout = out })
      local deadline = rollout.now() + 10
      while (fs.read(out) or "") == "" and rollout.now() < deadline do rollout.sleep(0.005) end
      local code, sig = spam_int(child)
      got[#got + 1] = tostring(code) .. "/" .. tostring(sig)
    end
    for i, g in ipairs(got) do assert.equals("1/nil", g, "run " .. i .. ": " .. table.concat(got, " ")) end
  end)
end)

describe("repeated SIGINT while the engine exits, against a real HAProxy", function()
  local env
  setup(function() env = live.env() end)
  teardown(function() if env then env.stop() end end)

  it("rolls back and exits 1 with one outcome, every time", function()
    for i = 1, 4 do
      fs.rmtree(env.journal_dir); assert(live.router(env):set_weights{ baseline = 100, canary = 0 })
      local run = live.start(env)
      live.wait_for(env, function(evs) return live.find(evs, "weight_confirmed", function(e) return e.canary == 10 end) end,
        30, "10 %")
      local code, sig = spam_int(run.child)
      local evs = live.events(env)
      assert.equals(1, code, "run " .. i .. ": exit " .. tostring(code) .. " signal " .. tostring(sig) .. "\n" .. run:stderr())
      assert.equals(1, live.count(evs, "outcome"))
      assert.equals("rolled_back", live.outcome(evs).outcome)
      local w = live.router(env):get_weights()
      assert.equals(0, w.canary)
    end
  end)
end)

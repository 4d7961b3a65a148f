-- The engine's shape (issue 18): rollout.engine is the state machine, and its parts under
-- lua/rollout/engine/ (signals, triggers, hooks, preflight, gate, traffic) install their
-- methods on the one engine class. Checked here: the public surface other modules and specs
-- use is still rollout.engine's, no method is defined twice, no part requires rollout.engine
-- (no cycle), every require is a top-level `local x = require(...)`, and every file states
-- its error policy in its header. Behaviour is the engine specs' business (engine_spec,
-- safety_*, hook_budget, preflight_signals, ...).
local fs = require("rollout.fs")

local PARTS = { "signals", "triggers", "hooks", "preflight", "gate", "traffic" }

local function files()
  local out = { "lua/rollout/engine.lua" }
  for _, p in ipairs(PARTS) do out[#out + 1] = "lua/rollout/engine/" .. p .. ".lua" end
  return out
end

-- the header: the comment lines before the first line of code
local function header(src)
  local lines = {}
  for line in src:gmatch("[^\n]*") do
    if not line:match("^%-%-") then break end
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n")
end

describe("engine parts: the public surface", function()
  it("rollout.engine still exposes new, EXIT, the budgets, compact, trigger_text and Engine", function()
    local engine = require("rollout.engine")
    assert.equals("function", type(engine.new))
    assert.same({ promoted = 0, rolled_back = 1, paused = 3, aborted = 3, failed = 3 }, engine.EXIT)
    assert.same({ instructions = 1e9, time = 900, memory = 256 * 1024 * 1024 }, engine.HOOK_BUDGET)
    assert.same({ instructions = 1e7, time = 1, memory = 64 * 1024 * 1024 }, engine.CHECK_BUDGET)
    assert.equals(3, engine.TRIGGER_ERROR_LIMIT)
    assert.is_nil(engine.compact(nil))
    assert.same({ requests = 10, error_rate = 0.5 }, engine.compact({ requests = 10, error_rate = 0.5, extra = 1 }))
    assert.equals("alert severity=critical", engine.trigger_text({ kind = "alert", alert = { severity = "critical" } }))
    -- the methods other modules call (no_return, observe, blue_green, control, cmd/*, fleet)
    for _, m in ipairs({ "elapsed", "emit", "status", "signals", "provides", "interrupt", "take_interrupt",
      "command", "set_weight", "apply_override", "stop", "await_record", "wait_until", "tick",
      "reset_triggers", "collect_alerts", "trigger_value", "evaluate_triggers", "check_share",
      "hook_ctx", "run_hook", "run_hook_pausable", "shift", "reverify", "run_check", "preflight",
      "capture_baseline", "threshold_limit", "evaluate_gate", "run_stage", "pause", "finish",
      "rollback", "confirm_full", "promote", "handle", "run_protected", "fail_safe", "run",
      "run_stages", "run_resumed" }) do
      assert.equals("function", type(engine.Engine[m]), "E:" .. m)
    end
  end)

  it("every part's methods are installed on the engine class, and no name is defined twice", function()
    local engine = require("rollout.engine")
    local owner = {}
    for _, p in ipairs(PARTS) do
      local part = require("rollout.engine." .. p)
      assert.equals("table", type(part.methods), p)
      local n = 0
      for name, fn in pairs(part.methods) do
        n = n + 1
        assert.is_nil(owner[name], "E:" .. name .. " in " .. p .. " and " .. tostring(owner[name]))
        owner[name] = p
        assert.equals(fn, engine.Engine[name], "E:" .. name .. " (" .. p .. ") is installed")
      end
      assert(n > 0, p .. " defines no method")
    end
    -- and the state machine defines none of them itself
    local src = assert(fs.read("lua/rollout/engine.lua"))
    for name in src:gmatch("\nfunction E:([%w_]+)") do
      assert.is_nil(owner[name], "E:" .. name .. " is in engine.lua and in " .. tostring(owner[name]))
    end
  end)
end)

describe("engine parts: structure", function()
  it("no part requires rollout.engine: each loads without it (no require cycle)", function()
    for _, p in ipairs(PARTS) do
      local src = assert(fs.read("lua/rollout/engine/" .. p .. ".lua"))
      assert.is_nil(src:match("require%s*%(?%s*[\"']rollout%.engine[\"']"), p .. " requires rollout.engine")
    end
    -- loaded afresh, the parts never pull in the state machine
    local saved = {}
    for _, name in ipairs({ "rollout.engine", "rollout.engine.signals", "rollout.engine.triggers",
      "rollout.engine.hooks", "rollout.engine.preflight", "rollout.engine.gate", "rollout.engine.traffic" }) do
      saved[name] = package.loaded[name]
      package.loaded[name] = nil
    end
    local ok, err = pcall(function()
      for _, p in ipairs(PARTS) do
        require("rollout.engine." .. p)
        assert.is_nil(package.loaded["rollout.engine"], "loading rollout.engine." .. p .. " loaded rollout.engine")
      end
    end)
    for name, v in pairs(saved) do package.loaded[name] = v end
    assert(ok, err)
  end)

  it("every require is at the top of its file (`local x = require(...)`), none inside a function", function()
    for _, path in ipairs(files()) do
      local src = assert(fs.read(path))
      local n = 0
      for line in src:gmatch("[^\n]*") do
        n = n + 1
        local code = line:gsub("%-%-.*$", "")
        if code:find("require%s*[%(\"']") then
          assert(code:match("^local [%w_]+ = ") and not code:match("^%s"),
            path .. ":" .. n .. ": a require that is not a top-level local: " .. line)
        end
      end
    end
  end)

  it("every file states its concern and its error policy in its header", function()
    for _, path in ipairs(files()) do
      local h = header(assert(fs.read(path)))
      local mod = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/", ".")
      assert.matches("^%-%- " .. mod:gsub("%.", "%%.") .. ": ", h, path)
      assert.matches("Error policy:", h, path)
    end
  end)
end)

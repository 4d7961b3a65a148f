-- The command line's conventions, through the real binary: every command's --help, -h and
-- `rollout help CMD` (from its declaration in lua/rollout/cmd/<name>.lua, rollout.args),
-- "did you mean" for mistyped commands and flags (exit 2), --version, NO_COLOR and a
-- non-terminal stdout (no colour, no redraws), and the live view's width from the terminal
-- (TIOCGWINSZ, then $COLUMNS, then 80), in a pseudo-terminal made by script(1).
local proc = require("rollout.proc")
local args = require("rollout.args")
local fs = require("rollout.fs")

local function run(argv, env)
  local a = { rollout.exe }
  for _, x in ipairs(argv) do a[#a + 1] = x end
  return assert(proc.run({ argv = a, timeout = 30, env = env }))
end

-- The commands `rollout --help` lists: a command another change adds is covered too.
local function listed_commands()
  local r = run({ "--help" })
  local out, on = {}, false
  for line in r.stdout:gmatch("[^\n]*") do
    if line == "commands:" then on = true
    elseif on and line == "" then break
    elseif on then
      local name = line:match("^  (%S+)")
      if name then out[#out + 1] = name end
    end
  end
  return out
end

-- Run a shell command line in a pseudo-terminal of the given size; its output as typed.
local function in_pty(cols, cmdline)
  local r = assert(proc.run({ argv = { "script", "-qec", "stty cols " .. cols .. " rows 30; " .. cmdline, "/dev/null" },
    env = { TERM = "xterm" }, timeout = 60 })) -- a terminal that draws, whatever TERM make test ran under
  return r.stdout, r
end

local SIM = rollout.exe .. " simulate playbooks/canary.lua --scenario scenarios/error-spike.lua"

describe("rollout --help and --version", function()
  it("lists every command, ends with a newline, exits 0", function()
    local r = run({ "--help" })
    assert.equals(0, r.code)
    assert.equals("\n", r.stdout:sub(-1))
    assert.equals("", r.stderr)
    local names = listed_commands()
    for _, c in ipairs({ "run", "check", "simulate", "replay", "scrape", "repl", "attach", "ctl", "report",
      "agent", "submit", "list", "test", "version" }) do
      local found = false
      for _, n in ipairs(names) do if n == c then found = true end end
      assert.truthy(found, c .. " is not listed by rollout --help")
    end
    assert.same(r.stdout, run({ "-h" }).stdout)
    assert.same(r.stdout, run({ "help" }).stdout)
  end)

  it("prints the version with --version and version", function()
    local a, b = run({ "--version" }), run({ "version" })
    assert.equals(0, a.code)
    assert.equals(0, b.code)
    assert.matches("^rollout %d+%.%d+%.%d+%S*\n$", a.stdout)
    assert.equals(a.stdout, b.stdout)
  end)
end)

describe("every command's usage", function()
  for _, name in ipairs(listed_commands()) do
    it(name .. " --help, -h and help " .. name .. " print the same usage with every flag explained", function()
      local long, short, via = run({ name, "--help" }), run({ name, "-h" }), run({ "help", name })
      for _, r in ipairs({ long, short, via }) do
        assert.equals(0, r.code, r.stderr)
        assert.equals("", r.stderr)
      end
      assert.equals(long.stdout, short.stdout)
      assert.equals(long.stdout, via.stdout)
      local text = long.stdout
      assert.matches("^usage: rollout " .. name:gsub("%p", "%%%0") .. "[%s\n]", text)
      assert.equals("\n", text:sub(-1))
      if name ~= "help" then
        local mod = require("rollout.cmd." .. name)
        assert.truthy(type(mod.summary) == "string" and #mod.summary > 0, name .. ": M.summary is missing")
        assert.truthy(mod.usage, name .. ": M.usage is missing")
        assert.truthy(type(mod.options) == "table", name .. ": M.options is missing (rollout.args)")
        for _, o in ipairs(mod.options) do
          assert.truthy(type(o[2]) == "string" and #o[2] > 10, name .. " " .. o[1] .. ": no explanation")
          local flag = o[1]:match("^(%S+)")
          assert.truthy(text:find("\n  " .. o[1], 1, true), name .. " --help does not explain " .. flag)
        end
        assert.truthy(text:find("-h, --help", 1, true))
      end
    end)
  end
end)

describe("mistakes", function()
  it("suggests the command meant, exit 2", function()
    for typo, meant in pairs({ simualte = "simulate", chekc = "check", reprot = "report", lsit = "list" }) do
      for _, argv in ipairs({ { typo }, { "help", typo } }) do
        local r = run(argv)
        assert.equals(2, r.code)
        assert.equals("", r.stdout)
        assert.truthy(r.stderr:find("unknown command '" .. typo .. "' (did you mean '" .. meant .. "'?)", 1, true), r.stderr)
      end
    end
    local r = run({ "frobnicate" })
    assert.equals(2, r.code)
    assert.is_nil(r.stderr:find("did you mean", 1, true))
  end)

  it("suggests the flag meant, for every command that takes flags, exit 2", function()
    for _, name in ipairs(listed_commands()) do
      local ok, mod = pcall(require, "rollout.cmd." .. name)
      local first = ok and mod.options and mod.options[1]
      if first then
        local flag = first[1]:match("^%-%-(%S+)")
        -- swap the first two letters: one edit away
        local typo = flag:sub(2, 2) .. flag:sub(1, 1) .. flag:sub(3)
        local r = run({ name, "--" .. typo })
        assert.equals(2, r.code, name .. " --" .. typo .. ": " .. r.stderr)
        assert.truthy(r.stderr:find("unknown option '--" .. typo .. "' (did you mean '--" .. flag .. "'?)", 1, true),
          name .. ": " .. r.stderr)
        assert.truthy(r.stderr:find("Try 'rollout " .. name .. " --help'.", 1, true), r.stderr)
      end
    end
    local r = run({ "--verison" })
    assert.equals(2, r.code)
    assert.truthy(r.stderr:find("did you mean '--version'?", 1, true), r.stderr)
  end)

  it("finds suggestions by edit distance, and none for unrelated words", function()
    assert.equals(3, args.distance("kitten", "sitting"))
    assert.equals(1, args.distance("simualte", "simulate"))
    assert.equals("simulate", args.suggest("simualte", { "run", "simulate", "submit" }))
    assert.equals("metrics-listen", args.suggest("metrics", { "json", "metrics-listen" }))
    assert.is_nil(args.suggest("frobnicate", { "run", "check", "simulate" }))
  end)
end)

describe("colour, redraws and width", function()
  it("draws the live view in colour on a terminal, and with NO_COLOR neither colour nor redraws", function()
    local out = in_pty(80, SIM)
    assert.truthy(out:find("\27[1A", 1, true) or out:find("\27[", 1, true), "no escape sequences on a terminal")
    assert.truthy(out:find("\27%[[%d;]*m"), "no colour on a terminal")
    local plain = in_pty(80, "NO_COLOR=1 " .. SIM)
    assert.is_nil(plain:find("\27", 1, true), "NO_COLOR output has escape sequences")
    assert.truthy(plain:find("outcome: rolled_back (trigger:error_rate)", 1, true))
    local empty = in_pty(80, "NO_COLOR= " .. SIM)
    assert.truthy(empty:find("\27", 1, true), "an empty NO_COLOR is as if unset")
  end)

  it("writes plain lines when stdout is not a terminal", function()
    local r = assert(proc.run({ argv = { rollout.exe, "simulate", "playbooks/canary.lua", "--scenario",
      "scenarios/error-spike.lua" }, timeout = 30 }))
    assert.equals(1, r.code)
    assert.is_nil(r.stdout:find("\27", 1, true))
    assert.truthy(r.stdout:find("outcome: rolled_back", 1, true))
  end)

  it("fits the live view to the terminal's width (TIOCGWINSZ before $COLUMNS)", function()
    local function widest_bar(out)
      local w = 0
      for l in out:gmatch("[^\r\n]+") do
        local plain = l:gsub("\27%[[%d;?]*[A-Za-z]", "")
        if plain:find("%] +%d+%%") then w = math.max(w, utf8.len(plain) or #plain) end
      end
      return w
    end
    local narrow = widest_bar(in_pty(61, "COLUMNS=90 " .. SIM))
    local wide = widest_bar(in_pty(100, "COLUMNS=70 " .. SIM))
    assert.truthy(narrow > 0 and narrow <= 60, "bar " .. narrow .. " columns in a 61-column terminal")
    assert.truthy(wide > 70 and wide <= 99, "bar " .. wide .. " columns in a 100-column terminal")
  end)

  it("takes the width from $COLUMNS without a terminal, else 80", function()
    local d = fs.mkdtemp("cli")
    local script = d .. "/w.lua"
    assert(fs.write_atomic(script, 'print(require("rollout.term").width(1))\n'))
    local function width(env)
      local r = assert(proc.run({ argv = { "env", "-u", "COLUMNS", env or "X=1", rollout.exe, script }, timeout = 10 }))
      return r.stdout
    end
    assert.equals("57\n", width("COLUMNS=57"))
    assert.equals("80\n", width())
    assert.equals("80\n", width("COLUMNS=zero"))
    local tty = in_pty(73, "COLUMNS=57 " .. rollout.exe .. " " .. script)
    fs.rmtree(d)
    assert.truthy(tty:find("^73") or tty:find("\n73"), "in a 73-column terminal: " .. tty)
  end)
end)

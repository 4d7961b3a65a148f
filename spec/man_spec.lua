-- The man pages and the command-line reference: rollout(1) and docs/cli.md are generated
-- from the commands' declarations and must be current (tools/cli_docs.lua --check); both
-- pages render with man -l and groff without a warning; rollout(1) names every command and
-- option, rollout-playbook(5) every top-level playbook key and every hook, and its example
-- is a valid playbook.
local proc = require("rollout.proc")
local fs = require("rollout.fs")

local function render(page)
  local r = assert(proc.run({ argv = { "man", "--warnings", "-l", page }, timeout = 30,
    env = { MANWIDTH = "100", MANPAGER = "cat", PAGER = "cat", LC_ALL = "C.UTF-8", PATH = os.getenv("PATH") } }))
  return r
end

-- Rendered text without overstrike or escape sequences, hyphenation joined back.
local function plain(text)
  text = text:gsub(".\b", ""):gsub("\27%[[%d;]*m", "")
  text = text:gsub("\u{2010}\n%s*", ""):gsub("\u{2010}", "-"):gsub("\u{2212}", "-")
  return text
end

local function listed_commands()
  local r = assert(proc.run({ argv = { rollout.exe, "--help" }, timeout = 30 }))
  local out, on = {}, false
  for line in r.stdout:gmatch("[^\n]*") do
    if line == "commands:" then on = true
    elseif on and line == "" then break
    elseif on then
      local name = line:match("^  (%S+)")
      if name and name ~= "help" then out[#out + 1] = name end
    end
  end
  return out
end

describe("man pages", function()
  it("docs/cli.md and man/rollout.1 match the commands' declarations", function()
    local r = assert(proc.run({ argv = { rollout.exe, "tools/cli_docs.lua", "--check" }, timeout = 60 }))
    assert.equals(0, r.code, r.stderr)
  end)

  for _, page in ipairs({ "man/rollout.1", "man/rollout-playbook.5" }) do
    it(page .. " renders with man -l and groff without warnings", function()
      local r = render(page)
      assert.equals(0, r.code, r.stderr)
      assert.equals("", r.stderr)
      assert.truthy(#r.stdout > 2000)
      local g = assert(proc.run({ argv = { "groff", "-man", "-Tutf8", "-ww", "-z", page }, timeout = 30 }))
      assert.equals(0, g.code)
      assert.equals("", g.stderr, page .. ": " .. g.stderr)
    end)
  end

  it("rollout(1) explains every command and every option", function()
    local text = plain(render("man/rollout.1").stdout)
    for _, name in ipairs(listed_commands()) do
      assert.truthy(text:find("\n   " .. name .. "\n", 1, true), "rollout(1) has no section for " .. name)
      for _, o in ipairs(require("rollout.cmd." .. name).options or {}) do
        local flag = o[1]:match("^(%S+)")
        assert.truthy(text:find(flag, 1, true), "rollout(1) does not explain " .. name .. " " .. flag)
      end
    end
    for _, section in ipairs({ "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "NO_COLOR", "COLUMNS" }) do
      assert.truthy(text:find(section, 1, true), section)
    end
  end)

  it("rollout-playbook(5) names every top-level key and every hook, and its example validates", function()
    local text = plain(render("man/rollout-playbook.5").stdout)
    local src = assert(fs.read("lua/rollout/playbook.lua"))
    local top = assert(src:match("\nlocal TOP = (%b{})"), "local TOP = {...} not found in playbook.lua")
    local n = 0
    for key in top:gmatch("[{,]%s*([%a_][%w_]*)%s*=") do
      n = n + 1
      assert.truthy(text:find(key, 1, true), "rollout-playbook(5) does not mention " .. key)
    end
    assert.truthy(n >= 20, "found only " .. n .. " top-level keys")
    local hooks = assert(src:match("local HOOK_NAMES = (%b{})"))
    for h in hooks:gmatch('"([%w_]+)"') do
      assert.truthy(text:find(h, 1, true), "rollout-playbook(5) does not mention the hook " .. h)
    end
    local roff = assert(fs.read("man/rollout-playbook.5"))
    local example = assert(roff:match("%.SH EXAMPLE\n%.nf\n(.-)\n%.fi"))
    local d = fs.mkdtemp("man")
    assert(fs.write_atomic(d .. "/example.lua", example .. "\n"))
    local r = assert(proc.run({ argv = { rollout.exe, "check", d .. "/example.lua", "--offline" }, timeout = 30 }))
    fs.rmtree(d)
    assert.equals(0, r.code, r.stderr)
  end)
end)

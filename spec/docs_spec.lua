-- The docs people read first: the README stays a short guide, and every complete playbook
-- it shows (a ```lua block that returns a playbook) passes `rollout check --offline`.
local fs = require("rollout.fs")
local proc = require("rollout.proc")
local json = require("rollout.json")

local function lua_blocks(text)
  local out = {}
  for block in text:gmatch("\n```lua\n(.-)\n```") do out[#out + 1] = block end
  return out
end

describe("README.md", function()
  local readme = assert(fs.read("README.md"))

  it("is a guide of at most ~300 lines", function()
    local n = select(2, readme:gsub("\n", ""))
    assert.truthy(n <= 300, "README.md has " .. n .. " lines; move reference material into docs/")
  end)

  it("shows complete playbooks for HAProxy, NGINX and Istio that pass rollout check --offline", function()
    local d = fs.mkdtemp("readme")
    local types = {}
    for i, block in ipairs(lua_blocks(readme)) do
      if block:find("return playbook", 1, true) then
        local path = d .. "/readme-" .. i .. ".lua"
        assert(fs.write_atomic(path, block .. "\n"))
        local r = assert(proc.run({ argv = { rollout.exe, "check", path, "--offline" }, timeout = 30 }))
        assert.equals(0, r.code, "README playbook #" .. i .. " fails rollout check --offline:\n" .. r.stdout .. r.stderr)
        types[block:match('router%s*=%s*{%s*type%s*=%s*"(%w+)"')] = true
        -- the rehearsal the README promises: healthy promotes (or waits at a manual gate),
        -- an error spike rolls back
        for sc, want in pairs({ healthy = { promoted = true, paused = "manual_gate" },
                                ["error-spike"] = { rolled_back = true } }) do
          local s = assert(proc.run({ argv = { rollout.exe, "simulate", path, "--scenario", "scenarios/" .. sc .. ".lua",
            "--json" }, timeout = 60 }))
          local summary = json.decode(s.stdout:match("([^\n]+)\n?$") or "null")
          assert.truthy(type(summary) == "table", "README playbook #" .. i .. " on " .. sc .. ": " .. s.stderr)
          local ok = want[summary.outcome]
          assert.truthy(ok == true or (ok and summary.reason == ok),
            "README playbook #" .. i .. " on scenarios/" .. sc .. ".lua: " .. summary.outcome .. " " .. tostring(summary.reason))
        end
      end
    end
    fs.rmtree(d)
    for _, t in ipairs({ "haproxy", "nginx", "istio" }) do
      assert.truthy(types[t], "the README has no complete " .. t .. " playbook")
    end
  end)

  it("shows what its tour's commands really print", function()
    local n = 0
    for block in readme:gmatch("\n```sh\n(.-)\n```") do
      local cmd, want = nil, {}
      local function check()
        if cmd and #want > 0 then
          local r = assert(proc.run({ argv = { "sh", "-c", cmd }, timeout = 60 }))
          local out = r.stdout .. r.stderr
          for _, w in ipairs(want) do
            assert.truthy(out:find(w, 1, true), "README: `" .. cmd .. "` does not print: " .. w .. "\n" .. out)
            n = n + 1
          end
        end
        cmd, want = nil, {}
      end
      for line in (block .. "\n"):gmatch("([^\n]*)\n") do
        if line:match("^%./rollout ") then
          check()
          cmd = rollout.exe .. line:gsub("%s+#.*$", ""):sub(#"./rollout" + 1)
        elseif cmd and line:match("^# ") and line ~= "# ..." then
          want[#want + 1] = line:sub(3)
        end
      end
      check()
    end
    assert.truthy(n >= 6, "expected the tour's outputs, checked " .. n .. " lines")
  end)

  it("links every page in docs/ (a new page gets a row in its Documentation table)", function()
    for _, name in ipairs(fs.list("docs") or {}) do
      if name:match("%.md$") then
        assert.truthy(readme:find("(docs/" .. name .. ")", 1, true), "README.md does not link docs/" .. name)
      end
    end
  end)

  it("links only to files that exist", function()
    local missing = {}
    for target in readme:gmatch("%]%(([^)#%s]+)[^)]*%)") do
      if not target:match("^%a+:") and not fs.stat(target) then missing[#missing + 1] = target end
    end
    assert.equals(0, #missing, "README.md links to missing files: " .. table.concat(missing, ", "))
  end)
end)

describe("docs/playbooks.md", function()
  it("has a row for every top-level playbook key and every hook", function()
    local text = assert(fs.read("docs/playbooks.md"))
    local src = assert(fs.read("lua/rollout/playbook.lua"))
    local top = assert(src:match("\nlocal TOP = (%b{})"), "local TOP = {...} not found in playbook.lua")
    local hooks = assert(src:match("local HOOK_NAMES = (%b{})"), "HOOK_NAMES not found in playbook.lua")
    -- the keys at the first level of TOP (not those of the tables and functions inside it)
    local keys, depth, body = {}, 0, top:sub(2, -2):gsub("%-%-[^\n]*", ""):gsub('"[^"]*"', '""')
    local i = 1
    while i <= #body do
      local c = body:sub(i, i)
      if c == "{" or c == "(" then depth = depth + 1
      elseif c == "}" or c == ")" then depth = depth - 1
      elseif depth == 0 then
        local key, j = body:match("^([%a_][%w_]*)%s*=()", i)
        if key and not body:sub(i - 1, i - 1):match("[%w_.]") and body:sub(j, j) ~= "=" then
          keys[#keys + 1] = key
          i = j - 1
        end
      end
      i = i + 1
    end
    assert.truthy(#keys >= 20, "found only " .. #keys .. " top-level keys")
    for _, key in ipairs(keys) do
      assert.truthy(text:find("\n| `" .. key, 1, true) or text:find(", `" .. key .. "`", 1, true),
        "docs/playbooks.md has no row for the key " .. key)
    end
    for h in hooks:gmatch('"([%w_]+)"') do
      assert.truthy(text:find("\n| `" .. h .. "` |", 1, true), "docs/playbooks.md's hooks table has no row for " .. h)
    end
  end)

  it("its hook, trigger and pre-flight examples validate inside a playbook", function()
    local text = assert(fs.read("docs/playbooks.md"))
    local base = [[
return playbook {
  name = "example",
  versions = { baseline = { name = "baseline" }, canary = { name = "canary" } },
  router = { type = "haproxy", socket = "/run/haproxy/admin.sock", backend = "be", baseline = "baseline", canary = "canary" },
  sources = { { type = "scrape" } },
  stages = { { weight = 10, hold = "1m" }, { weight = 100, hold = "1m" } },
%s
}
]]
    local d = fs.mkdtemp("pbdoc")
    local n = 0
    for block in text:gmatch("\n```lua\n(.-)\n```") do
      local key = block:match("^(%a+) = {")
      if key == "hooks" or key == "triggers" or key == "preflight" then
        n = n + 1
        local path = d .. "/fragment-" .. n .. ".lua"
        assert(fs.write_atomic(path, base:format(block)))
        local r = assert(proc.run({ argv = { rollout.exe, "check", path, "--offline" }, timeout = 30 }))
        assert.equals(0, r.code, "docs/playbooks.md `" .. key .. "` example:\n" .. r.stderr)
      end
    end
    fs.rmtree(d)
    assert.truthy(n >= 3, "expected the hooks, triggers and preflight examples, found " .. n)
  end)
end)

describe("docs/", function()
  it("link only to files that exist", function()
    local missing = {}
    for _, name in ipairs(fs.list("docs") or {}) do
      if name:match("%.md$") then
        local text = fs.read("docs/" .. name)
        for target in text:gmatch("%]%(([^)#%s]+)[^)]*%)") do
          if not target:match("^%a+:") and not fs.stat("docs/" .. target) then
            missing[#missing + 1] = "docs/" .. name .. " -> " .. target
          end
        end
      end
    end
    assert.equals(0, #missing, "broken links:\n" .. table.concat(missing, "\n"))
  end)

  it("say nothing written for the team rather than for users", function()
    local hits = {}
    for _, name in ipairs(fs.list("docs") or {}) do
      if name:match("%.md$") then
        local text = fs.read("docs/" .. name):lower()
        for _, phrase in ipairs({ "the lead", "readme section", "helper" }) do
          if text:find(phrase, 1, true) then hits[#hits + 1] = "docs/" .. name .. ": " .. phrase end
        end
      end
    end
    assert.equals(0, #hits, table.concat(hits, "\n"))
  end)
end)

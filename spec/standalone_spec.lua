-- The repository stands alone: no file it ships reads or names anything beside the clone
-- (the folder its authors kept their background notes in, one level up).
local fs = require("rollout.fs")
local proc = require("rollout.proc")

local OUTSIDE = "shared" .. "/"   -- spelled in two parts so this file does not name it
local SKIP = { [".git"] = true, build = true, ["build-asan"] = true, ["build-fuzz"] = true, [".rollout"] = true }

-- The files of the repository: what git tracks, or (a tarball) every file but build outputs.
local function files()
  local r = proc.run({ argv = { "git", "ls-files", "-z" }, timeout = 30 })
  if r and r.code == 0 and #r.stdout > 0 then
    local out = {}
    for p in r.stdout:gmatch("([^%z]+)") do out[#out + 1] = p end
    return out
  end
  local out = {}
  local function walk(dir)
    for _, name in ipairs(fs.list(dir) or {}) do
      local p = dir == "." and name or dir .. "/" .. name
      local st = fs.stat(p)
      if st and st.type == "dir" then
        if not SKIP[name] then walk(p) end
      elseif st and st.type == "file" then
        out[#out + 1] = p
      end
    end
  end
  walk(".")
  return out
end

describe("the repository", function()
  it("names nothing outside itself", function()
    local list = files()
    assert.truthy(#list > 100, "expected the repository's files, found " .. #list)
    local hits = {}
    for _, p in ipairs(list) do
      local text = fs.read(p)
      if text and not text:find("%z") then
        local n = 0
        for line in (text .. "\n"):gmatch("([^\n]*)\n") do
          n = n + 1
          if line:find(OUTSIDE, 1, true) then hits[#hits + 1] = p .. ":" .. n .. ": " .. line:sub(1, 120) end
        end
      end
    end
    assert.equals(0, #hits, "files that point outside the repository:\n" .. table.concat(hits, "\n"))
  end)

  it("ships its labelled scenarios", function()
    local n = 0
    for _, name in ipairs(fs.list("scenarios") or {}) do
      if name:match("%.lua$") then
        n = n + 1
        local sc = dofile("scenarios/" .. name)
        assert.truthy(type(sc.expect) == "table" and sc.expect.outcome, name .. " has no expect.outcome")
      end
    end
    assert.truthy(n >= 8, "expected at least 8 labelled scenarios in scenarios/, found " .. n)
  end)
end)

-- The shape of lua/rollout that docs/architecture.md ("Layers") promises, checked on every
-- module's source: the commands are the top layer, so no module below them requires a
-- command (rollout.cmd.*). The sources are read with a small Lua tokenizer (comments and
-- strings skipped, function nesting counted), not by running them.
local fs = require("rollout.fs")

-- Modules allowed to require a command, with the reason.
local MAY_REQUIRE_COMMANDS = {
  ["lua/rollout/cli.lua"] = "the dispatcher: it loads lua/rollout/cmd/<name>.lua for the command asked for",
}

local function lua_files(dir, out)
  for _, name in ipairs(fs.list(dir) or {}) do
    local p = dir .. "/" .. name
    local st = fs.stat(p)
    if st and st.type == "dir" then lua_files(p, out)
    elseif name:match("%.lua$") then out[#out + 1] = p end
  end
  table.sort(out)
  return out
end

-- The module name after a `require` at pos: require("m"), require "m", pcall(require, "m");
-- a name built at run time ("rollout.cmd." .. name) gives its literal prefix and dynamic = true.
local function required_name(src, pos)
  local q, name, rest = src:match("^require%s*%(?%s*(['\"])([%w_.]*)%1%s*(%.?%.?)", pos)
  if not q then q, name, rest = src:match("^require%s*,%s*(['\"])([%w_.]*)%1%s*(%.?%.?)", pos) end
  if not q then return nil, true end
  return name, rest == ".."
end

--- requires(src) -> {{line =, depth = (functions around it), name =, dynamic =}, ...}, open blocks
local function requires(src)
  local i, n, line = 1, #src, 1
  local stack, fdepth, out, prev = {}, 0, {}, nil
  local function lines_in(s, e) for _ in src:sub(s, e):gmatch("\n") do line = line + 1 end end
  local function long_end(at, eq)
    local _, e = src:find("]" .. eq .. "]", at, true)
    return e or n
  end
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then line = line + 1; i = i + 1
    elseif c:match("%s") then i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local eq = src:match("^%[(=*)%[", i + 2)
      local e = eq and long_end(i + 2, eq) or ((src:find("\n", i, true) or n + 1) - 1)
      lines_in(i, e); i = e + 1
    elseif c == "[" and src:match("^%[=*%[", i) then
      local e = long_end(i, src:match("^%[(=*)%[", i))
      lines_in(i, e); i = e + 1; prev = "string"
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then j = j + 2
        elseif d == c or d == "\n" then break
        else j = j + 1 end
      end
      lines_in(i, j); i = j + 1; prev = "string"
    elseif c:match("[%a_]") then
      local w = src:match("^[%w_]+", i)
      if prev ~= "." and prev ~= ":" then -- a field or method name is no keyword
        if w == "function" then stack[#stack + 1] = "f"; fdepth = fdepth + 1
        elseif w == "if" or w == "do" or w == "repeat" then stack[#stack + 1] = "b" -- while/for open with `do`
        elseif w == "end" or w == "until" then
          if table.remove(stack) == "f" then fdepth = fdepth - 1 end
        elseif w == "require" then
          local name, dynamic = required_name(src, i)
          out[#out + 1] = { line = line, depth = fdepth, name = name, dynamic = dynamic }
        end
      end
      prev = w; i = i + #w
    elseif c:match("%d") then
      i = i + #src:match("^[%w_.]+", i); prev = "number"
    elseif src:sub(i, i + 1) == "::" then prev = "::"; i = i + 2
    elseif src:sub(i, i + 2) == "..." then prev = "..."; i = i + 3
    elseif src:sub(i, i + 1) == ".." then prev = ".."; i = i + 2
    else prev = c; i = i + 1 end
  end
  return out, #stack
end

describe("module structure: the scanner", function()
  it("finds requires at the top and inside functions, past comments and strings", function()
    local found, open = requires(table.concat({
      'local a = require("rollout.a") -- require("not.this")',
      'local s = "require(\'nor.this\')" .. [[ require("nor.that") ]]',
      '--[==[ require("no") ]==]',
      'local function f()',
      '  if x then for _ = 1, 2 do local b = require "rollout.b" end end',
      '  ::continue:: return t.end_ and pcall(require, "rollout.c")',
      'end',
      'local d = require("rollout.cmd." .. name)',
    }, "\n"))
    assert.are.equal(0, open)
    assert.are.same({
      { line = 1, depth = 0, name = "rollout.a", dynamic = false },
      { line = 5, depth = 1, name = "rollout.b", dynamic = false },
      { line = 6, depth = 1, name = "rollout.c", dynamic = false },
      { line = 8, depth = 0, name = "rollout.cmd.", dynamic = true },
    }, found)
  end)

  it("balances every block of every module under lua/rollout", function()
    for _, path in ipairs(lua_files("lua/rollout", {})) do
      local _, open = requires(fs.read(path))
      assert(open == 0, path .. ": " .. open .. " blocks the scanner did not see closed")
    end
  end)
end)

describe("module structure: the layers", function()
  it("no module under lua/rollout except the commands requires a command (rollout.cmd.*)", function()
    local bad, seen = {}, 0
    for _, path in ipairs(lua_files("lua/rollout", {})) do
      if not path:match("^lua/rollout/cmd/") then
        for _, r in ipairs((requires(fs.read(path)))) do
          if r.name and (r.name == "rollout.cmd" or r.name:match("^rollout%.cmd%.")) then
            if MAY_REQUIRE_COMMANDS[path] then seen = seen + 1
            else bad[#bad + 1] = string.format("%s:%d requires %s", path, r.line, r.name) end
          end
        end
      end
    end
    assert(#bad == 0, "a library depends on a command:\n  " .. table.concat(bad, "\n  "))
    assert.are.equal(1, seen) -- cli.lua's dispatch is found: the check sees dynamic names too
  end)
end)

-- The C side's naming conventions (docs/architecture.md, "C conventions"), checked on the
-- sources and on the running binary:
--   * every userdata metatable is named "rollout.<module>.<type>", where rollout.<module> is
--     the C module that defines it, and the name is written once, as a #define ..._MT;
--   * every C function Lua calls (a namespace function, a method, a metamethod) is named
--     l_<namespace>_<name> or l_<type>_<method>, so `l_http_get` is http.get and nothing
--     that is not a binding starts with l_;
--   * every lua_CFunction (and continuation) says its stack effect in the comment right above
--     it, as lua-ev does: "[-pops, +pushes, errors]", e.g. "/* fs.read(path) -> data  [-0, +1|2, e] */".
local fs = require("rollout.fs")
local json = require("rollout.json")
local yaml = require("rollout.yaml")

local C_DIRS = { "src", "bench/c" }
-- Lua's own: the io library's file handles and lauxlib's buffer box
local LUA_OWN = { ["FILE*"] = true, ["_UBOX*"] = true }

local function c_files()
  local out = {}
  for _, dir in ipairs(C_DIRS) do
    for _, name in ipairs(assert(fs.list(dir))) do
      if name:match("%.c$") then out[#out + 1] = dir .. "/" .. name end
    end
  end
  return out
end

-- The C modules the binary (or ./rollout-bench) registers, by require name.
local function c_modules()
  local mods = {}
  for name in pairs(package.preload) do
    if name:match("^rollout%.") then mods[name] = true end
  end
  return mods
end

-- "rollout.<module>.<type>" with rollout.<module> a registered C module; nil, why otherwise.
local function check_name(name, mods)
  local module, type_ = name:match("^(rollout%..+)%.([a-z_]+)$")
  if not module then return nil, name .. " is not rollout.<module>.<type>" end
  -- rollout.journal.core defines the journal's types: the module is the Lua namespace
  if not (mods[module] or mods[module .. ".core"]) then
    return nil, name .. ": " .. module .. " is no C module"
  end
  return type_
end

describe("C metatable names", function()
  it("are defined once each, as #define X_MT \"rollout.<module>.<type>\"", function()
    local mods, seen, bad = c_modules(), {}, {}
    for _, path in ipairs(c_files()) do
      local src = assert(fs.read(path))
      for macro, name in src:gmatch("#define%s+([%w_]+_MT)%s+\"([^\"]*)\"") do
        local ok, why = check_name(name, mods)
        if not ok and not (path:match("^bench/") and name:match("^rollout%.bench%.")) then bad[#bad + 1] = path .. ": " .. why end
        if seen[name] then bad[#bad + 1] = name .. " defined in " .. seen[name] .. " and " .. path end
        seen[name] = path
        assert.is_truthy(macro)
      end
      -- the luaL_* metatable calls name a macro (or a helper's parameter), never a literal
      for call, arg in src:gmatch("(luaL_%a+metatable)%(L, ([^)]*)%)") do
        if arg:match("\"") then bad[#bad + 1] = path .. ": " .. call .. "(L, " .. arg .. ")" end
      end
      for call, arg in src:gmatch("(luaL_%a+udata)%(L, [^,]+, ([^)]*)%)") do
        if arg:match("\"") then bad[#bad + 1] = path .. ": " .. call .. "(..., " .. arg .. ")" end
      end
    end
    assert.same({}, bad)
    assert.is_true(next(seen) ~= nil, "found no _MT definitions at all")
  end)

  it("are what the running binary registers", function()
    local mods = c_modules()
    for name in pairs(mods) do require(name) end
    -- the metatables made on first use: the encoder's buffer, load_file's FILE box
    assert.equals("[]", json.encode(json.array({})))
    local dir = assert(fs.mkdtemp("c-style"))
    assert(fs.write_atomic(dir .. "/a.yaml", "a: 1\n"))
    assert.equals(1, assert(yaml.load_file(dir .. "/a.yaml")).a)
    fs.rmtree(dir)
    local names, bad = {}, {}
    for k, v in pairs(debug.getregistry()) do
      if type(k) == "string" and type(v) == "table" and rawget(v, "__name") == k and not LUA_OWN[k] then
        names[#names + 1] = k
        local ok, why = check_name(k, mods)
        if not ok then bad[#bad + 1] = why end
      end
    end
    table.sort(bad)
    assert.same({}, bad)
    assert.is_true(#names >= 15, "only " .. #names .. " metatables: " .. table.concat(names, ", "))
    assert.matches("^rollout%.json%.array: ", tostring(json.array({})))
  end)
end)

-- The C functions a source file hands to Lua: luaL_Reg entries and metamethods.
local function bindings(src)
  local out = {}
  for body in src:gmatch("luaL_Reg%s+[%w_]+%[%]%s*=%s*(%b{})") do
    for name, fn in body:gmatch('{%s*"([^"]+)",%s*([%w_]+)%s*}') do out[#out + 1] = { fn = fn, what = name } end
  end
  for fn, mm in src:gmatch("lua_pushcfunction%(L, ([%w_]+)%);%s*lua_setfield%(L, %-2, \"(__%w+)\"%)") do
    out[#out + 1] = { fn = fn, what = mm }
  end
  return out
end

describe("C bindings", function()
  it("are named l_<namespace>_<name> or l_<type>_<method>", function()
    local bad, n = {}, 0
    for _, path in ipairs(c_files()) do
      local src = assert(fs.read(path))
      for _, b in ipairs(bindings(src)) do
        n = n + 1
        -- (a helper's lua_CFunction parameter is checked where the helper is called)
        local defined = src:find("int " .. b.fn .. "(lua_State *L", 1, true) ~= nil
        if defined and not b.fn:match("^l_[a-z]+_[%w_]+$") then bad[#bad + 1] = path .. ": " .. b.what .. " is " .. b.fn end
      end
      -- and what starts with l_ is a lua_CFunction or its continuation (lua_KFunction)
      for ret, fn, params in src:gmatch("\n[%w_ ]-([%w_]+)%s+%**(l_[%w_]+)%(([^)]*)%)%s*{") do
        if ret ~= "int" or not params:match("^lua_State %*L") then bad[#bad + 1] = path .. ": " .. fn .. "(" .. params .. ")" end
      end
    end
    assert.same({}, bad)
    assert.is_true(n > 150, "found only " .. n .. " bindings")
  end)
end)

-- The comment block that ends on the line before `i` (nil when there is none).
local function comment_above(lines, i)
  if not (lines[i - 1] or ""):match("%*/%s*$") then return nil end
  local j = i - 1
  while j > 1 and not lines[j]:match("^%s*/%*") do j = j - 1 end
  return table.concat(lines, "\n", j, i - 1)
end

describe("C functions Lua calls", function()
  it("say their stack effect in the comment above them", function()
    local missing, n = {}, 0
    for _, path in ipairs(c_files()) do
      local lines = {}
      for line in (assert(fs.read(path)) .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
      for i, line in ipairs(lines) do
        local fn = line:match("^static int ([%w_]+)%(lua_State %*L%)") or line:match("^int ([%w_]+)%(lua_State %*L%)")
          or line:match("^static int ([%w_]+)%(lua_State %*L, int status, lua_KContext ctx%)")
        if fn then
          n = n + 1
          local c = comment_above(lines, i)
          if not (c and c:match("%[%-[%d?|]+, %+[%d?|]+, [-mev]%]")) then missing[#missing + 1] = path .. ":" .. i .. " " .. fn end
        end
      end
    end
    assert.same({}, missing)
    assert.is_true(n > 180, "found only " .. n .. " functions")
  end)
end)

-- The shape of lua/rollout that docs/architecture.md ("Layers") and docs/contributing.md
-- promise, checked on every module's source:
-- - the commands are the top layer: no module below them requires a command (rollout.cmd.*);
-- - every module is in one of the layers (LAYERS below) and its top-level requires point
--   to its own layer or below;
-- - requires sit at the top of the file, where a reader sees a module's edges; one inside a
--   function body says why with a `-- lazy:` comment on its line or the comment lines right
--   above it (a require cycle it breaks, a module picked by name at run time);
-- - the top-level requires form no cycle;
-- - every module's header (the comment block it starts with) states its error policy on a
--   line starting `-- Error policy:` (what raises, with a key path; what returns nil, err;
--   what is journaled).
-- The sources are read with a small Lua tokenizer (comments and strings skipped, function
-- nesting counted), not by running them.
local fs = require("rollout.fs")

-- The layers of docs/architecture.md, lowest first. A module's top-level requires point to
-- its own layer or below. A module is placed by its name, or by the longest prefix of it
-- listed here (a folder); a required name with no Lua file is the host API in C (layer 1).
local LAYERS = { "foundation", "statistics", "adapters", "policy input", "engine", "operations", "commands" }
local LAYER_OF = {}
for layer, names in ipairs({
  { "rollout", "rollout.schema", "rollout.srcmap", "rollout.redact", "rollout.args", "rollout.term",
    "rollout.pretty", "rollout.sandbox", "rollout.datetime", "rollout.window", "rollout.exit" },
  { "rollout.analysis", "rollout.judge", "rollout.proportion", "rollout.reservoir" },
  { "rollout.routers", "rollout.sources", "rollout.sim.router", "rollout.sim.source", "rollout.etcd", "rollout.k8s" },
  { "rollout.playbook", "rollout.config", "rollout.sim.scenario", "rollout.notify_options" },
  { "rollout.engine", "rollout.observe", "rollout.no_return", "rollout.safety", "rollout.strategies" },
  { "rollout.control", "rollout.journal", "rollout.fleet", "rollout.fleet_sim", "rollout.notify",
    "rollout.metrics_endpoint", "rollout.output", "rollout.progress", "rollout.report", "rollout.assemble",
    "rollout.simulation", "rollout.verify", "rollout.backtest", "rollout.watch", "rollout.watch_view",
    "rollout.repl", "rollout.testing", "rollout.fingerprint" },
  { "rollout.cli", "rollout.cmd" },
}) do
  for _, n in ipairs(names) do LAYER_OF[n] = layer end
end

--- layer_of(name) -> layer index, or nil for a Lua module no layer holds
local function layer_of(name)
  local n = name
  while n do
    if LAYER_OF[n] and (n == name or n ~= "rollout") then return LAYER_OF[n] end
    n = n:match("^(.*)%.[^.]+$")
  end
end

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

  it("every module is in a layer, and its top-level requires point to its layer or below", function()
    local bad, lua, edges = {}, {}, 0
    local files = lua_files("lua/rollout", {})
    for _, path in ipairs(files) do
      lua[(path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", "."))] = path
    end
    for name, path in pairs(lua) do
      local mine = layer_of(name)
      if not mine then bad[#bad + 1] = path .. ": in no layer (add it to LAYERS here and to docs/architecture.md)"
      else
        for _, r in ipairs((requires(fs.read(path)))) do
          if r.name and not r.dynamic then -- a lazy require (inside a function) is an edge too
            local theirs = lua[r.name] and layer_of(r.name) or 1
            edges = edges + 1
            if theirs and theirs > mine then
              bad[#bad + 1] = string.format("%s:%d (%s) requires %s (%s)", path, r.line, LAYERS[mine], r.name, LAYERS[theirs])
            end
          end
        end
      end
    end
    table.sort(bad)
    assert(#bad == 0, "requires against the layers:\n  " .. table.concat(bad, "\n  "))
    assert.truthy(edges > 300, "the check saw " .. edges .. " requires")
    -- and a lazy require is checked as a top-level one: the foundation's sandbox loading
    -- rollout.k8s (adapters) inside a function would be found
    local inner = requires('local function f()\n  return require("rollout.k8s") -- lazy: on first use\nend\n')
    assert.are.same({ { line = 2, depth = 1, name = "rollout.k8s", dynamic = false } }, inner)
    assert.truthy(layer_of(inner[1].name) > layer_of("rollout.sandbox"))
    -- and the check can fail: an engine part that required the journal would be found
    assert.truthy(layer_of("rollout.journal") > layer_of("rollout.engine.gate"))
    assert.are.equal(1, layer_of("rollout.schema"))
    assert.is_nil(layer_of("rollout.unplaced"))
    assert.are.equal(3, layer_of("rollout.routers.haproxy"))
  end)
end)

-- Requires inside a function without a `-- lazy:` reason: {"file:line: text", ...}
local function unexplained(path, src)
  local lines = {}
  for l in (src .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  local out = {}
  for _, r in ipairs((requires(src))) do
    if r.depth > 0 then
      local why = lines[r.line]:find("-- lazy:", 1, true)
      local k = r.line - 1
      while not why and k >= 1 and lines[k]:match("^%s*%-%-") do
        why = lines[k]:find("-- lazy:", 1, true)
        k = k - 1
      end
      if not why then out[#out + 1] = string.format("%s:%d: %s", path, r.line, (lines[r.line]:gsub("^%s+", ""))) end
    end
  end
  return out
end

describe("module structure: requires at the top", function()
  it("a require inside a function without a -- lazy: reason is found", function()
    local bad = unexplained("x.lua", table.concat({
      'local a = require("rollout.a")',
      'local function f()',
      '  local b = require("rollout.b")',
      '  -- lazy: rollout.c requires this module',
      '  local c = require("rollout.c")',
      '  return a, b, c, require("rollout.d") -- lazy: picked by name',
      'end',
    }, "\n"))
    assert.are.same({ 'x.lua:3: local b = require("rollout.b")' }, bad)
  end)

  it("every module under lua/rollout requires at its top, or says why not (-- lazy:)", function()
    local bad = {}
    for _, path in ipairs(lua_files("lua/rollout", {})) do
      for _, b in ipairs(unexplained(path, fs.read(path))) do bad[#bad + 1] = b end
    end
    assert(#bad == 0, #bad .. " requires inside functions without a -- lazy: reason:\n  " .. table.concat(bad, "\n  "))
  end)

  it("so does every file under playbooks/, tools/, bench/ and spec/support/", function()
    local bad, files = {}, 0
    for _, dir in ipairs({ "playbooks", "tools", "bench", "spec/support" }) do
      for _, path in ipairs(lua_files(dir, {})) do
        files = files + 1
        for _, b in ipairs(unexplained(path, fs.read(path))) do bad[#bad + 1] = b end
      end
    end
    assert(#bad == 0, #bad .. " requires inside functions without a -- lazy: reason:\n  " .. table.concat(bad, "\n  "))
    assert.truthy(files > 20, "the check saw " .. files .. " files")
  end)

  it("the top-level requires of the modules under lua/rollout form no cycle", function()
    local edges, files = {}, {}
    for _, path in ipairs(lua_files("lua/rollout", {})) do
      local name = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      files[name] = path
      edges[name] = {}
      for _, r in ipairs((requires(fs.read(path)))) do
        if r.depth == 0 and r.name and not r.dynamic then edges[name][#edges[name] + 1] = r.name end
      end
    end
    local state, stack, cycles = {}, {}, {}
    local function visit(m)
      state[m] = "open"; stack[#stack + 1] = m
      for _, to in ipairs(edges[m]) do
        if state[to] == "open" then
          local from = #stack
          while stack[from] ~= to do from = from - 1 end
          cycles[#cycles + 1] = table.concat(stack, " -> ", from) .. " -> " .. to
        elseif not state[to] and edges[to] then visit(to) end
      end
      state[m] = "done"; stack[#stack] = nil
    end
    local names = {}
    for m in pairs(edges) do names[#names + 1] = m end
    table.sort(names)
    for _, m in ipairs(names) do if not state[m] then visit(m) end end
    assert(#cycles == 0, "require cycles:\n  " .. table.concat(cycles, "\n  "))
    assert(files["rollout.assemble"] and #edges["rollout.assemble"] >= 2) -- the graph has its edges
  end)
end)

-- The comment block a file starts with, and whether it has a line `-- Error policy: ...`.
local function header_policy(src)
  local header = {}
  for l in (src .. "\n"):gmatch("([^\n]*)\n") do
    if not l:match("^%-%-") then break end
    header[#header + 1] = l
  end
  for _, l in ipairs(header) do if l:match("^%-%-+%s*Error policy:") then return true, #header end end
  return false, #header
end

describe("module structure: headers", function()
  it("a header without an error-policy line is found", function()
    assert.is_false((header_policy("-- rollout.x: a module.\n-- It never fails.\nlocal M = {}\n-- Error policy: too late\n")))
    assert.is_false((header_policy("local M = {}\n-- Error policy: not a header\n")))
    assert.is_true((header_policy("-- rollout.x: a module.\n--\n-- Error policy: raises on bad input.\nlocal M = {}\n")))
  end)

  it("every module under lua/rollout states its error policy in its header comment", function()
    local bad = {}
    for _, path in ipairs(lua_files("lua/rollout", {})) do
      local ok, lines = header_policy(fs.read(path))
      if not ok then bad[#bad + 1] = path .. (lines == 0 and " (no header comment)" or "") end
    end
    assert(#bad == 0, #bad .. " modules without an `-- Error policy:` line in their header:\n  " .. table.concat(bad, "\n  "))
  end)
end)

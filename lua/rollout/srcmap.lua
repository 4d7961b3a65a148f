-- rollout.srcmap: the source line of a key path in a Lua playbook.
--
-- A playbook is a Lua file that returns a table, so when `stages[3].hold` is wrong the
-- value alone cannot say where it was written. This reads the source once with a small
-- Lua lexer, records every table constructor with the line of each entry (named,
-- ["string"] and positional), follows the top-level `return` (and top-level locals it
-- names), and answers the line of the deepest part of a path it can find.
--
-- Error policy: never raises. A file it cannot read or lex maps nothing: line() is nil and
-- the error is shown without a line, never hidden.
local M = {}

-- ---- lexer ------------------------------------------------------------------------

local function lex(src)
  local toks, i, line, n = {}, 1, 1, #src
  local function push(kind, value, l) toks[#toks + 1] = { kind = kind, value = value, line = l } end
  local function count_lines(s) local _, c = s:gsub("\n", ""); return c end
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then line = line + 1; i = i + 1
    elseif c:match("%s") then i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local eq = src:match("^%[(=*)%[", i + 2)
      if eq then
        local close = "]" .. eq .. "]"
        local j = src:find(close, i, true) or n
        line = line + count_lines(src:sub(i, j))
        i = j + #close
      else
        local j = src:find("\n", i, true) or n + 1
        i = j
      end
    elseif c == "[" and src:match("^%[=*%[", i) then
      local eq = src:match("^%[(=*)%[", i)
      local close = "]" .. eq .. "]"
      local j = src:find(close, i, true) or n
      local l0 = line
      line = line + count_lines(src:sub(i, j))
      push("string", src:sub(i + #eq + 2, j - 1), l0)
      i = j + #close
    elseif c == '"' or c == "'" then
      local j, l0, buf = i + 1, line, {}
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then buf[#buf + 1] = src:sub(j, j + 1); if src:sub(j + 1, j + 1) == "\n" then line = line + 1 end; j = j + 2
        elseif d == c then break
        elseif d == "\n" then line = line + 1; j = j + 1
        else buf[#buf + 1] = d; j = j + 1 end
      end
      push("string", table.concat(buf), l0)
      i = j + 1
    elseif c:match("[%a_]") then
      local w = src:match("^[%w_]+", i)
      push("name", w, line)
      i = i + #w
    elseif c:match("%d") or (c == "." and src:sub(i + 1, i + 1):match("%d")) then
      local num = src:match("^0[xX][%x%.pP%+%-]+", i) or src:match("^[%d%.]+[eE][%+%-]?%d+", i) or src:match("^[%d%.]+", i)
      push("number", num, line)
      i = i + #num
    else
      local three, two = src:sub(i, i + 2), src:sub(i, i + 1)
      if three == "..." then push("op", three, line); i = i + 3
      elseif two == "==" or two == "~=" or two == "<=" or two == ">=" or two == ".." or two == "::" or two == "//" or two == "<<" or two == ">>" then
        push("op", two, line); i = i + 2
      else push("op", c, line); i = i + 1 end
    end
  end
  return toks
end

-- ---- constructor tree -------------------------------------------------------------

local OPEN = { ["{"] = "}", ["("] = ")", ["["] = "]" }

-- Parse the constructor whose "{" is toks[i]; returns the node and the index after "}".
local function parse_table(toks, i)
  local node = { line = toks[i].line, named = {}, positional = {} }
  i = i + 1
  local pos = 0
  while toks[i] and not (toks[i].kind == "op" and toks[i].value == "}") do
    local t = toks[i]
    local entry = { line = t.line }
    local key
    if t.kind == "name" and toks[i + 1] and toks[i + 1].kind == "op" and toks[i + 1].value == "=" then
      key = t.value
      i = i + 2
    elseif t.kind == "op" and t.value == "[" and toks[i + 1] and toks[i + 1].kind == "string"
        and toks[i + 2] and toks[i + 2].value == "]" and toks[i + 3] and toks[i + 3].value == "=" then
      key = toks[i + 1].value
      i = i + 4
    elseif t.kind == "op" and t.value == "[" then
      -- [expr] = value: skip the key expression
      local depth = 0
      repeat
        local v = toks[i].value
        if toks[i].kind == "op" and OPEN[v] then depth = depth + 1
        elseif toks[i].kind == "op" and (v == "]" or v == ")" or v == "}") then depth = depth - 1 end
        i = i + 1
      until depth == 0 or not toks[i]
      if toks[i] and toks[i].value == "=" then i = i + 1 end
      key = false
    else
      pos = pos + 1
      key = pos
    end
    -- the value: up to the next , ; or } at this depth; its first constructor is its child
    local depth = 0
    if toks[i] and toks[i].kind == "name" and toks[i + 1] and toks[i + 1].kind == "op"
        and (toks[i + 1].value == "," or toks[i + 1].value == ";" or toks[i + 1].value == "}") then
      entry.ref = toks[i].value -- a bare name: maybe a top-level local table
    end
    while toks[i] do
      local v, k = toks[i].value, toks[i].kind
      if k == "op" and depth == 0 and (v == "," or v == ";" or v == "}") then break end
      if k == "op" and v == "{" and depth == 0 and not entry.child then
        entry.child, i = parse_table(toks, i)
      elseif k == "name" and v == "function" then
        -- skip a function body: count block openers and closers
        local blocks = 1
        i = i + 1
        while toks[i] and blocks > 0 do
          local w = toks[i].kind == "name" and toks[i].value
          if w == "function" or w == "do" or w == "then" or w == "repeat" then blocks = blocks + 1
          elseif w == "end" or w == "until" or w == "elseif" then blocks = blocks - 1 end
          i = i + 1
        end
      else
        if k == "op" and OPEN[v] then depth = depth + 1
        elseif k == "op" and (v == ")" or v == "]" or v == "}") then depth = depth - 1 end
        i = i + 1
      end
    end
    if key then
      if type(key) == "number" then node.positional[key] = entry else node.named[key] = entry end
    end
    if toks[i] and toks[i].kind == "op" and (toks[i].value == "," or toks[i].value == ";") then i = i + 1 end
  end
  return node, i + 1
end

-- Walk the top level: remember `local NAME = {` tables and the returned constructor.
local function top_level(toks)
  local locals, root, root_ref, root_line = {}, nil, nil, nil
  local blocks, i = 0, 1
  while toks[i] do
    local t = toks[i]
    local w = t.kind == "name" and t.value
    if blocks == 0 and t.kind == "name" and toks[i + 1] and toks[i + 1].kind == "op" and toks[i + 1].value == "=" then
      -- NAME = {...} or NAME = lib.ctor{...} / lib.ctor("x", {...})
      local name, j = t.value, i + 2
      while toks[j] and (toks[j].kind == "name" and toks[j].value ~= "function" or toks[j].kind == "string"
          or (toks[j].kind == "op" and (toks[j].value == "." or toks[j].value == ":" or toks[j].value == "(" or toks[j].value == ","))) do
        j = j + 1
      end
      if toks[j] and toks[j].kind == "op" and toks[j].value == "{" then
        local node, after = parse_table(toks, j)
        locals[name] = node
        i = after
        goto continue
      end
    end
    if blocks == 0 and w == "return" then
      root_line = t.line
      local j = i + 1
      if toks[j] and toks[j].kind == "name" and (not toks[j + 1] or toks[j + 1].kind == "op" and toks[j + 1].value ~= "(" and toks[j + 1].value ~= "{" and toks[j + 1].value ~= ".") then
        root_ref = toks[j].value
      else
        while toks[j] and not (toks[j].kind == "op" and toks[j].value == "{") do j = j + 1 end
        if toks[j] then root = parse_table(toks, j) end
      end
      break
    end
    if w == "function" or w == "do" or w == "then" or w == "repeat" then blocks = blocks + 1
    elseif w == "end" or w == "until" or w == "elseif" then blocks = blocks - 1 end
    i = i + 1
    ::continue::
  end
  if not root and root_ref then root = locals[root_ref] end
  return root, locals, root_line
end

-- ---- queries ----------------------------------------------------------------------

local Map = {}
Map.__index = Map

--- M.load(path) -> map | nil (a file that cannot be read gives a map that answers nil)
function M.load(path)
  local f = io.open(path, "r")
  if not f then return setmetatable({}, Map) end
  local src = f:read("a")
  f:close()
  return M.from_source(src)
end

function M.from_source(src)
  local ok, toks = pcall(lex, src)
  if not ok then return setmetatable({}, Map) end
  local ok2, root, locals, root_line = pcall(top_level, toks)
  if not ok2 then return setmetatable({}, Map) end
  return setmetatable({ root = root, locals = locals or {}, root_line = root_line }, Map)
end

--- map:line(path) -> the line of the deepest resolvable part of path (a list of keys), or
--- the line of the returned table, or nil.
function Map:line(path)
  local node = self.root
  if not node then return self.root_line end
  local best = node.line
  for _, key in ipairs(path) do
    local entry = type(key) == "number" and node.positional[key] or node.named[key]
    if not entry then return best end
    best = entry.line
    node = entry.child or (entry.ref and self.locals[entry.ref])
    if not node then return best end
  end
  return best
end

M._lex = lex
return M

-- Writes docs/cli.md and man/rollout.1 from the commands' own declarations (M.summary,
-- M.usage, M.description, M.options, M.exit in lua/rollout/cmd/*.lua; rollout.args), so the
-- reference, the man page and `rollout CMD --help` say the same thing.
--
--   ./rollout tools/cli_docs.lua            rewrite docs/cli.md and man/rollout.1
--   ./rollout tools/cli_docs.lua --check    exit 1 (naming the file) when either is stale
--
-- The command list is `rollout --help`'s (lua/rollout/cli.lua). spec/man_spec.lua
-- runs --check.
local fs = require("rollout.fs")
local proc = require("rollout.proc")

local M = {}

local function commands()
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

local function usages(mod)
  return type(mod.usage) == "table" and mod.usage or { mod.usage }
end

local function paragraphs(text)
  local out = {}
  for para in ((text or "") .. "\n\n"):gmatch("(.-)\n\n+") do
    if para ~= "" then out[#out + 1] = para end
  end
  return out
end

-- ---- Markdown ----------------------------------------------------------------------------

local function md_cell(s) return (s:gsub("|", "\\|")) end

function M.markdown(names)
  local L = {}
  local function add(s) L[#L + 1] = s end
  add("# Command line")
  add("")
  add("<!-- Written by tools/cli_docs.lua from lua/rollout/cmd/*.lua: edit the command's declaration, then run")
  add("     ./rollout tools/cli_docs.lua (spec/man_spec.lua fails while this file is stale). -->")
  add("")
  add("```")
  add("rollout [--clock=real|virtual] COMMAND [ARGS...]")
  add("rollout [--clock=real|virtual] FILE.lua [ARGS...]     run a script with the host API (`arg` as lua.c sets it)")
  add("rollout --help | --version")
  add("rollout help COMMAND | rollout COMMAND --help | rollout COMMAND -h")
  add("```")
  add("")
  add("Every command explains itself with `rollout COMMAND --help` (the same text as below) and `man rollout`")
  add("has it all. An unknown command or flag exits 2 with one line of error, a suggestion when one is")
  add("close (`unknown option '--jsno' (did you mean '--json'?)`), and a hint. A script's syntax error")
  add("exits 2 before anything runs; a runtime error prints `file:line: message` and a traceback and exits 3.")
  add("Exit codes in general: 0 promoted or ok, 1 rolled back, 2 usage or configuration error (nothing was")
  add("done), 3 paused, aborted or failed ([operations](operations.md#exit-codes)).")
  add("")
  add("| command | what it does |")
  add("|---------|--------------|")
  local mods = {}
  for _, n in ipairs(names) do
    mods[n] = require("rollout.cmd." .. n) -- lazy: each command's module, by name
    add(string.format("| [`%s`](#rollout-%s) | %s |", n, n, md_cell(mods[n].summary or "")))
  end
  add("")
  add("The runbook's procedures are scripts run the same way: `rollout playbooks/rollback.lua PLAYBOOK")
  add("[--reason TEXT] [--set ...]` (manual rollback) and `rollout playbooks/finalize.lua PLAYBOOK [--set ...]`")
  add("([runbook](runbook.md)).")
  for _, n in ipairs(names) do
    local mod = mods[n]
    add("")
    add("## rollout " .. n)
    add("")
    add("```")
    for _, u in ipairs(usages(mod)) do add(u) end
    add("```")
    add("")
    for _, p in ipairs(paragraphs(mod.description or mod.summary)) do
      if p:find("^  ") then add("```"); add((p:gsub("\n  ", "\n"):gsub("^  ", ""))); add("```")
      else add(p) end
      add("")
    end
    if #(mod.options or {}) > 0 then
      add("| option | meaning |")
      add("|--------|---------|")
      for _, o in ipairs(mod.options) do
        add(string.format("| `%s` | %s |", o[1], md_cell(o[2])))
      end
      add("")
    end
    if mod.exit then add("Exit codes: " .. mod.exit .. ".") add("") end
    if mod.docs then add("More: " .. mod.docs .. ".") add("") end
  end
  while L[#L] == "" do L[#L] = nil end
  return table.concat(L, "\n") .. "\n"
end

-- ---- roff (man(7)) -----------------------------------------------------------------------

-- Escape text for roff: backslashes, hyphens in options, and a leading . or '.
local function roff(s)
  s = s:gsub("\\", "\\e")
  s = s:gsub("%-", "\\-")
  s = s:gsub("\n([.'])", "\n\\&%1")
  if s:match("^[.']") then s = "\\&" .. s end
  return s
end

local function header()
  return fs.read("man/rollout.1.in")
end

function M.man(names)
  local L = {}
  local function add(s) L[#L + 1] = s end
  local head = assert(header(), "man/rollout.1.in is missing")
  local before, after = head:match("^(.-)@COMMANDS@\n(.*)$")
  assert(before, "man/rollout.1.in has no @COMMANDS@ line")
  add((before:gsub("\n$", "")))
  for _, n in ipairs(names) do
    local mod = require("rollout.cmd." .. n) -- lazy: each command's module, by name
    add(".SS " .. n)
    for i, u in ipairs(usages(mod)) do
      if i > 1 then add(".br") end
      add(roff(u))
    end
    for _, p in ipairs(paragraphs(mod.description or mod.summary)) do
      if p:find("^  ") then
        add(".PP")
        add(".nf")
        add(".RS 4")
        add(roff((p:gsub("\n  ", "\n"):gsub("^  ", ""))))
        add(".RE")
        add(".fi")
      else
        add(".PP")
        add(roff(p))
      end
    end
    for _, o in ipairs(mod.options or {}) do
      add(".TP")
      local name, metavar = o[1]:match("^(%S+)%s*(.*)$")
      add(metavar ~= "" and (".BI \"" .. roff(name) .. " \" " .. roff(metavar)) or (".B " .. roff(name)))
      add(roff(o[2]))
    end
    if mod.exit then
      add(".PP")
      add("Exit status: " .. roff(mod.exit) .. ".")
    end
  end
  add((after:gsub("\n$", "")))
  return table.concat(L, "\n") .. "\n"
end

function M.main(argv)
  local check = argv[1] == "--check"
  local names = commands()
  local files = { { "docs/cli.md", M.markdown(names) }, { "man/rollout.1", M.man(names) } }
  local stale = 0
  for _, f in ipairs(files) do
    if check then
      if fs.read(f[1]) ~= f[2] then
        io.stderr:write(f[1], " is stale: run ./rollout tools/cli_docs.lua and commit the result\n")
        stale = stale + 1
      end
    else
      assert(fs.write_atomic(f[1], f[2]))
      print("wrote " .. f[1])
    end
  end
  return stale == 0 and 0 or 1
end

if arg and arg[0] and arg[0]:match("cli_docs%.lua$") then return M.main(arg) end
return M

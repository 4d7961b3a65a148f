-- luacheck configuration: `make check-lua`
std = "lua54"
max_line_length = 220
unused_args = false
ignore = { "581" } -- `not (a < b)`: written so on purpose where NaN must fail a comparison
-- the host API scripts and playbooks get as globals
read_globals = { "rollout", "http", "json", "yaml", "proc", "fs", "units", "net", "promtext", "histogram", "stats",
  "playbook", "include", "PLAYBOOK_DIR" }
files["spec/"] = { std = "+busted", read_globals = { "finally" }, max_line_length = false }
files["lua/rollout/cli.lua"] = { globals = { "rollout", "arg" } }
files["tools/"] = { globals = { "arg" } }
files["demo/"] = { globals = { "arg" } }
exclude_files = { "spec/fixtures/playbooks/broken.lua" }
-- tables grown on purpose until a memory budget stops them
files["spec/hook_budget_spec.lua"] = { std = "+busted", ignore = { "241" }, max_line_length = false }

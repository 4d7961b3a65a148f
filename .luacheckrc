-- luacheck configuration: `make check-lua`
std = "lua54"
max_line_length = 140
-- the host API scripts and playbooks get as globals
read_globals = { "rollout", "http", "json", "yaml", "proc", "fs", "units", "net", "promtext", "histogram", "stats",
  "playbook", "include", "PLAYBOOK_DIR" }
files["spec/"] = { std = "+busted", read_globals = { "finally" } }
files["lua/rollout/cli.lua"] = { globals = { "rollout", "arg" } }
exclude_files = { "spec/fixtures/playbooks/broken.lua" }

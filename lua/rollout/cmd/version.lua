-- rollout version: prints "rollout VERSION" (the same as `rollout --version`). Exit 0.
-- Error policy: a usage error (an argument) returns 2; nothing else can fail.
local rollout = require("rollout")
local args = require("rollout.args")
local exit = require("rollout.exit")

local M = {}
M.summary = "print the version"
M.usage = "rollout version"
M.description = "Prints `rollout VERSION`, as `rollout --version` does."
M.options = {}
M.exit = exit.describe({ { "OK", "done" }, { "USAGE", "usage error" } })

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("version", pos, M.usage) end
  if #pos > 0 then return args.usage_error("version", "unexpected argument '" .. pos[1] .. "'", M.usage) end
  print("rollout " .. rollout.version)
  return 0
end

return M

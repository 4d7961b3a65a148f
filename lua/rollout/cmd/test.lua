-- rollout test [PATH...] [-j N] [--filter TEXT] [--timeout SECONDS] [--timings]
-- Runs the specs inside the real binary (rollout.testing). Exit 0 when every test passed,
-- 1 when one failed, 2 usage error.
-- Error policy: usage errors return 2; a failing spec is a result (exit 1), reported by
-- rollout.testing with its file and message.
local args = require("rollout.args")
local testing = require("rollout.testing")
local exit = require("rollout.exit")

local M = {}
M.summary = "run the specs (spec/*_spec.lua) inside the real binary"
M.usage = "rollout test [PATH...] [-j N] [--filter TEXT] [--timeout SECONDS] [--timings]"
M.description = "Runs busted-style spec files (describe, it, before_each, assert.*) inside this binary, "
  .. "each `it` as its own task under a timeout. PATH is a spec file or a directory searched for "
  .. "*_spec.lua files (default: spec). The last line is `tests: N passed, N failed`."
M.options = {
  { "--jobs N", "-j N: run N spec files at once, each in its own process with its own temp dir, "
    .. "run dir and port range; each file's output is printed whole, the counts summed (default 1)" },
  { "--filter TEXT", "run only the tests whose full name (describe > it) contains TEXT" },
  { "--timeout SECONDS", "how long one test may take before it fails (default 120)" },
  { "--timings", "end with where the time went: each file's wall and CPU seconds, the slowest "
    .. "files and tests, and the sums" },
}
M.exit = exit.describe({ { "OK", "every test passed" }, { "UNMET", "a test failed" }, { "USAGE", "usage error" } })

function M.main(argv)
  local norm = {} -- -j N and -jN are --jobs N
  for i = 1, #argv do
    local a = argv[i]
    local n = type(a) == "string" and a:match("^%-j(%d*)$")
    if n == "" then norm[#norm + 1] = "--jobs" elseif n then norm[#norm + 1] = "--jobs=" .. n else norm[#norm + 1] = a end
  end
  argv = norm
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("test", pos, M.usage) end
  if opts.timeout and not tonumber(opts.timeout) then
    return args.usage_error("test", "--timeout: expected seconds, got '" .. opts.timeout .. "'", M.usage)
  end
  return testing.main(argv)
end

return M

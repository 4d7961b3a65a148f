-- bench/run.lua: `make bench`. Runs every bench/*_bench.lua in turn, each as its own
-- `rollout` process (so one benchmark's servers, memory and GC do not colour the next),
-- and prints each one's output, which carries its own anchor from the same run.
-- Usage: ./rollout bench/run.lua [NAME...]   (NAME: "http" runs bench/http_bench.lua)
local fs = require("rollout.fs")
local rollout = require("rollout")

local exe = arg and arg[-1] or "./rollout"
local dir = (arg and arg[0] or "bench/run.lua"):match("^(.*)/[^/]*$") or "bench"

local wanted = {}
for _, name in ipairs(arg or {}) do wanted[name:gsub("_bench%.lua$", ""):gsub("^.*/", "")] = true end

local files = {}
for _, name in ipairs(assert(fs.list(dir))) do
  local base = name:match("^(.-)_bench%.lua$")
  if base and (next(wanted) == nil or wanted[base]) then files[#files + 1] = name end
end
if #files == 0 then
  io.stderr:write("bench: no bench/*_bench.lua matched\n")
  return 2
end

local function run_one(path)
  -- lazy: optional, the rollout binary's host API (absent under a plain lua interpreter)
  local ok, proc = pcall(require, "rollout.proc")
  if ok and proc.run then -- the loop keeps running while the benchmark does
    local res, err = proc.run({ argv = { exe, path }, timeout = 600, max_output = "16Mi" })
    if not res then return false, err end
    io.write(res.stdout, res.stderr)
    return res.code == 0, res.code and ("exit code " .. res.code) or ("killed by " .. tostring(res.signal))
  end
  local okx, how, code = os.execute(string.format("%q %q", exe, path))
  return okx == true, how .. " " .. tostring(code)
end

local failed = {}
for _, name in ipairs(files) do
  local path = dir .. "/" .. name
  print("== " .. path)
  io.stdout:flush()
  local t0 = rollout.now()
  local ok, why = run_one(path)
  print(string.format("   (%.1f s)%s\n", rollout.now() - t0, ok and "" or "  FAILED: " .. tostring(why)))
  io.stdout:flush()
  if not ok then failed[#failed + 1] = name end
end
if #failed > 0 then
  print("bench: failed: " .. table.concat(failed, ", "))
  return 1
end
return 0

-- rollout.fleet.bundle: what `rollout submit` stores in etcd — the playbook, the .lua files
-- of its directory, --set values, an optional config and scenario — and writing it back to
-- files on the agent that takes the rollout.
-- Error policy: bad arguments raise; file-system failures and bundles that are too large or
-- carry a bad file name return nil, err.
local rollout = require("rollout")
local json = require("rollout.json")
local fs = require("rollout.fs")

local M = {}

M.MAX_BUNDLE = 1024 * 1024 -- etcd refuses requests above 1.5 MiB by default

local function basename(p) return p:match("([^/]+)$") end
local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end

--- bundle(playbook_path, {sets=, config=, scenario=, simulated_router=, who=}) -> bundle | nil, err
--- The playbook file and every .lua file of its directory travel, so include() works on
--- any agent; a config or scenario file travels under its own name.
function M.bundle(path, opts)
  opts = opts or {}
  local files = {}
  local total = 0
  local function add(name, p)
    local data, err = fs.read(p)
    if not data then return nil, err end
    files[name] = data
    total = total + #data
    return true
  end
  local ok, err = add(basename(path), path)
  if not ok then return nil, err end
  local dir = dirname(path)
  for _, n in ipairs(fs.list(dir) or {}) do
    if n:match("%.lua$") and not files[n] then
      local st = fs.stat(dir .. "/" .. n)
      if st and st.type == "file" then add(n, dir .. "/" .. n) end
    end
  end
  local b = { playbook = basename(path), files = files, sets = json.array(opts.sets or {}),
    submitted_by = opts.who, submitted_at = rollout.time(), simulated_router = opts.simulated_router or nil }
  for _, k in ipairs({ "config", "scenario" }) do
    if opts[k] then
      local data, rerr = fs.read(opts[k])
      if not data then return nil, rerr end
      b[k] = { name = basename(opts[k]), content = data }
      total = total + #data
    end
  end
  if total > M.MAX_BUNDLE then
    return nil, string.format("the playbook's directory holds %d bytes of .lua files; fleet mode stores at most %d per rollout",
      total, M.MAX_BUNDLE)
  end
  return b
end

--- materialize(bundle, dir) -> playbook path, config path|nil, scenario path|nil | nil, err
function M.materialize(b, dir)
  local ok, err = fs.mkdir(dir, 448, true)
  if not ok and not fs.stat(dir) then return nil, err end
  for name, data in pairs(b.files or {}) do
    if name:find("/", 1, true) or name:sub(1, 1) == "." then return nil, "bundle: bad file name '" .. name .. "'" end
    local wok, werr = fs.write_atomic(dir .. "/" .. name, data, 384)
    if not wok then return nil, werr end
  end
  local extra = {}
  for _, k in ipairs({ "config", "scenario" }) do
    if b[k] then
      local p = dir .. "/_" .. k .. "." .. (b[k].name:match("%.([%w]+)$") or "txt")
      local wok, werr = fs.write_atomic(p, b[k].content, 384)
      if not wok then return nil, werr end
      extra[k] = p
    end
  end
  return dir .. "/" .. b.playbook, extra.config, extra.scenario
end

return M

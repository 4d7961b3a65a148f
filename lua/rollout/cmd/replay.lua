-- rollout replay PLAYBOOK --from TIME --to TIME [--prometheus URL] [--json] [--set k=v ...]
-- Runs a playbook's decisions against metrics a Prometheus recorded, in virtual time: t = 0
-- is --from, and every query of the playbook's prometheus source is evaluated at
-- from + t (the HTTP API's `time` parameter), so a rollout of an hour replays in seconds.
-- The router is simulated (weights are recorded, nothing moves) and the signals are what
-- the versions really did at the time, whatever share of traffic they had then. Alert
-- sources cannot be replayed (Alertmanager keeps no history) and are left out, said so.
-- A replay that reaches --to before the rollout ends stops paused, reason
-- inconclusive:end_of_recording. TIME: epoch seconds, RFC 3339 (2026-11-27T04:00:00Z),
-- or relative to now ("-30m").
local rollout = require("rollout")
local args = require("rollout.args")
local playbook = require("rollout.playbook")
local engine = require("rollout.engine")
local output = require("rollout.output")
local units = require("rollout.units")

local M = {}
local USAGE = "rollout replay PLAYBOOK --from TIME --to TIME [--prometheus URL] [--json] [--verbose] [--set key=value ...] [--config FILE]"

--- parse_time(s, now) -> epoch seconds | nil, err
function M.parse_time(s, now)
  if s:match("^%d+%.?%d*$") then return tonumber(s) end
  local sign, rel = s:match("^([%-+])(.+)$")
  if sign then
    local d, err = units.parse("duration", rel)
    if not d then return nil, err end
    return now + (sign == "-" and -d or d)
  end
  local y, mo, d, h, mi, sec, frac = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)(%.?%d*)Z$")
  if not y then return nil, "malformed time '" .. s .. "' (epoch seconds, 2026-11-27T04:00:00Z or -30m)" end
  -- days since the epoch for a proleptic Gregorian date (no dependence on the local zone)
  local yy, mm = tonumber(y), tonumber(mo)
  if mm <= 2 then yy, mm = yy - 1, mm + 12 end
  local days = 365 * yy + yy // 4 - yy // 100 + yy // 400 + (153 * (mm - 3) + 2) // 5 + tonumber(d) - 719469
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec) + (tonumber(frac ~= "" and frac or "0") or 0)
end

function M.main(argv)
  local opts, pos = args.parse(argv, { from = "value", to = "value", prometheus = "value", json = "flag",
    verbose = "flag", set = "list", config = "value" })
  if not opts then return args.usage_error("replay", pos, USAGE) end
  if #pos ~= 1 or not opts.from or not opts.to then return args.usage_error("replay", "expected a playbook, --from and --to", USAGE) end
  local wall = rollout.time()
  local from, ferr = M.parse_time(opts.from, wall)
  local to, terr = M.parse_time(opts.to, wall)
  if not from or not to then return args.usage_error("replay", ferr or terr, USAGE) end
  if to <= from then return args.usage_error("replay", "--to must be after --from", USAGE) end
  local sets = opts.set or {}
  local pb, errs = playbook.load(pos[1], { sets = sets, config = opts.config })
  if not pb then
    for _, e in ipairs(errs) do io.stderr:write(playbook.format_error(e), "\n") end
    return 2
  end
  local sources_mod = require("rollout.sources")
  local list = {}
  for _, cfg in ipairs(pb.sources) do
    if cfg.type == "prometheus" then
      local c = {}
      for k, v in pairs(cfg) do c[k] = v end
      if opts.prometheus then c.url = opts.prometheus end
      local ok, src = pcall(sources_mod.new, c, { versions = pb.versions, service = pb.service })
      if not ok then io.stderr:write("rollout replay: ", tostring(src), "\n"); return 2 end
      list[#list + 1] = src
    else
      io.stderr:write("rollout replay: source ", tostring(cfg.type), " cannot be replayed and is left out\n")
    end
  end
  if #list == 0 then
    io.stderr:write("rollout replay: the playbook has no prometheus source to replay\n")
    return 2
  end
  rollout.clock("virtual")
  local t0 = rollout.now()
  for _, src in ipairs(list) do src.time_of = function(now) return from + (now - t0) end end
  local router = require("rollout.sim.router").new({})
  local printer = output.printer({ json = opts.json, verbose = opts.verbose })
  local e = engine.new(pb, { router = router, sources = list, emit = printer, simulate = true, who = "replay",
    preflight = {} })
  local stopper = rollout.spawn(function()
    rollout.sleep(to - from)
    e:interrupt({ action = "stop_paused", reason = "inconclusive:end_of_recording" })
  end)
  local outcome = e:run()
  stopper:cancel()
  output.summary(outcome, { json = opts.json })
  return engine.EXIT[outcome.outcome] or 3
end

return M

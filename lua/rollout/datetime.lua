-- rollout.datetime: the one place times are written and read as text.
--   iso8601(epoch) -> "2026-11-27T04:00:00Z" (UTC, whole seconds) | nil for nil
--   parse(s [, now]) -> epoch seconds | nil, err. Accepts epoch seconds ("1764216000",
--     "1764216000.5"), ISO 8601 / RFC 3339 in UTC or with an offset ("2026-11-27T04:00:00Z",
--     "2026-11-27 04:00:00+02:00", "2026-11-27T04:00:00.250Z", "... UTC"), a bare date
--     (midnight UTC), and, when `now` is given, a time relative to it ("-30m", "+2h").
--   deployment_id(service, epoch [, explicit]) -> the runbook's "<service>-canary-YYYYMMDD-HHMMSS"
--     of the UTC start, or `explicit` when one was given.
-- No dependence on the local time zone (civil dates are computed, not looked up).
-- Error policy: malformed text returns nil, err naming the accepted forms; nothing raises.
local units = require("rollout.units")

local M = {}

function M.iso8601(ts)
  return ts and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(ts)) or nil
end

-- Days since the epoch for a proleptic Gregorian date (Howard Hinnant's algorithm).
local function days_from_civil(y, mo, d)
  local yy = mo <= 2 and y - 1 or y
  local era = (yy >= 0 and yy or yy - 399) // 400
  local yoe = yy - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local FORMS = "epoch seconds, 2026-11-27T04:00:00Z, 2026-11-27 04:00:00+02:00, 2026-11-27"

function M.parse(s, now)
  if type(s) == "number" then return s end
  if type(s) ~= "string" then return nil, "not a time: " .. tostring(s) end
  if s:match("^%d+%.?%d*$") then return tonumber(s) end
  local sign, rel = s:match("^([%-+])(.+)$")
  if sign then
    if not now then return nil, "relative time '" .. s .. "' needs a reference time" end
    local d, err = units.parse("duration", rel)
    if not d then return nil, "malformed relative time '" .. s .. "': " .. tostring(err) end
    return now + (sign == "-" and -d or d)
  end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):?(%d*%.?%d*)(.*)$")
  if not y then
    y, mo, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
    if not y then return nil, "malformed time '" .. s .. "' (" .. FORMS .. (now and ", or -30m" or "") .. ")" end
    h, mi, sec, rest = 0, 0, "0", "Z"
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or tonumber(h) > 23 or tonumber(mi) > 59 then
    return nil, "time out of range '" .. s .. "'"
  end
  local t = days_from_civil(y, mo, d) * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + (tonumber(sec) or 0)
  local osign, oh, om = rest:match("^%s*([%+%-])(%d%d):?(%d%d)$")
  if osign then
    local off = tonumber(oh) * 3600 + tonumber(om) * 60
    return osign == "+" and t - off or t + off
  end
  if rest ~= "" and rest ~= "Z" and not rest:match("^%s*UTC$") then
    return nil, "malformed time '" .. s .. "': unknown zone '" .. rest .. "' (Z, UTC or +hh:mm)"
  end
  return t
end

function M.deployment_id(service, ts, explicit)
  if explicit and explicit ~= "" then return explicit end
  return string.format("%s-canary-%s", service or "rollout", os.date("!%Y%m%d-%H%M%S", math.floor(ts or 0)))
end

return M

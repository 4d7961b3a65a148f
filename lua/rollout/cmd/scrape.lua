-- rollout scrape URL|FILE [--json] [--timeout D]
-- Prints what a /metrics target exposes: each family (name, type, help) with its samples
-- (labels, value, timestamp), then the counts. Parses with promtext, as the scrape source
-- does, so a target that this command reads is one the source can read.
--
-- --json prints one object: {"families": N, "samples": M, "target": "...", "data": [
--   {"name":, "type":, "help":, "samples": [{"name":, "labels": {}, "value":, "timestamp":}]}]}
-- with the counts first. Values that JSON cannot carry (NaN, +Inf, -Inf) are strings.
--
-- Exit codes: 0 read and printed, 2 usage error, 3 the target cannot be read (transport
-- failure, non-2xx status, unreadable file, malformed exposition: the message names the
-- URL or file and the reason, e.g. "line 12: unterminated label value").
-- Error policy: the exit codes above, the reason on stderr; nothing raises.
local args = require("rollout.args")
local fs = require("rollout.fs")
local http = require("rollout.http")
local json = require("rollout.json")
local promtext = require("rollout.promtext")
local units = require("rollout.units")
local exit = require("rollout.exit")

local M = {}
M.summary = "print what a /metrics target exposes (families, samples, labels, values)"
M.usage = "rollout scrape URL|FILE [--json] [--timeout DURATION]"
M.description = "Reads a Prometheus text exposition from URL (or a FILE) with the parser the scrape "
  .. "source uses, and prints each family (name, type, help) with its samples, then the counts: a target "
  .. "this command reads is one the source can read."
M.options = {
  { "--json", "print one object {families, samples, target, data = [{name, type, help, samples}]}; "
    .. "NaN and infinities are strings" },
  { "--timeout DURATION", "how long the request may take (default 10s)" },
}
M.exit = exit.describe({ { "OK", "read and printed" }, { "USAGE", "usage error" },
  { "UNREACHABLE", "the target cannot be read (the message says why)" } })

local function read_target(target, timeout)
  if target:match("^https?://") then
    local resp, err = http.get(target, { timeout = timeout, headers = { accept = "text/plain;version=0.0.4" } })
    if not resp then return nil, err end
    if resp.status < 200 or resp.status > 299 then return nil, "HTTP " .. resp.status end
    return resp.body
  end
  local data, err = fs.read(target)
  if not data then return nil, err or "cannot read" end
  return data
end

local function format_value(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
  for _, f in ipairs({ "%.15g", "%.16g" }) do
    local s = string.format(f, v)
    if tonumber(s) == v then return s end
  end
  return string.format("%.17g", v)
end

local function label_text(labels)
  local keys = {}
  for k in pairs(labels) do keys[#keys + 1] = k end
  if #keys == 0 then return "" end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do
    parts[i] = k .. '="' .. labels[k]:gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"') .. '"'
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function print_text(result)
  local out = {}
  for _, f in ipairs(result.families) do
    out[#out + 1] = string.format("%s (%s, %d sample%s)%s", f.name, f.type, #f.samples,
      #f.samples == 1 and "" or "s", f.help and ("  " .. f.help) or "")
    for _, s in ipairs(f.samples) do
      out[#out + 1] = "  " .. s.name .. label_text(s.labels) .. " " .. format_value(s.value)
        .. (s.timestamp and (" " .. s.timestamp) or "")
    end
  end
  out[#out + 1] = string.format("%d families, %d samples", result.nfamilies, result.nsamples)
  io.stdout:write(table.concat(out, "\n"), "\n")
end

local function json_value(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  return v
end

local function print_json(result, target)
  local data = json.array()
  for i, f in ipairs(result.families) do
    local samples = json.array()
    for j, s in ipairs(f.samples) do
      samples[j] = { name = s.name, labels = s.labels, value = json_value(s.value), timestamp = s.timestamp }
    end
    data[i] = { name = f.name, type = f.type, help = f.help, samples = samples }
  end
  -- The counts first (an object's keys are otherwise sorted): readers see the shape at once.
  io.stdout:write(string.format('{"families":%d,"samples":%d,"target":%s,"data":%s}\n', result.nfamilies,
    result.nsamples, json.encode(target), json.encode(data, { sort = true })))
end

function M.main(argv)
  local opts, pos = args.parse(argv, M.options)
  if not opts then return args.usage_error("scrape", pos, M.usage) end
  if #pos ~= 1 then return args.usage_error("scrape", "expected one URL or file", M.usage) end
  local timeout = 10
  if opts.timeout then
    local t, err = units.parse("duration", opts.timeout)
    if not t or t <= 0 then return args.usage_error("scrape", "--timeout: " .. (err or "must be > 0"), M.usage) end
    timeout = t
  end
  local target = pos[1]
  local text, err = read_target(target, timeout)
  if not text then
    -- say the target once: http's and fs's messages carry it too
    local plain = err:gsub(" %(" .. target:gsub("%p", "%%%0") .. "%)$", "")
    if plain:sub(1, #target + 2) == target .. ": " then plain = plain:sub(#target + 3) end
    io.stderr:write("rollout scrape: ", target, ": ", plain, "\n")
    return 3
  end
  local result, perr = promtext.parse(text)
  if not result then
    io.stderr:write("rollout scrape: ", target, ": ", perr, "\n")
    return 3
  end
  if opts.json then print_json(result, target) else print_text(result) end
  return 0
end

return M

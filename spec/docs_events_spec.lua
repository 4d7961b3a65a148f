-- docs/events.md lists every event kind the Lua sources (lua/rollout, playbooks) can write.
-- The kinds are found where they are written with a literal name: emit("kind", ...), self:emit("kind", ...),
-- self:_emit("kind", ...), common.emit(ctx, "kind", ...), emitter("kind"),
-- fleet_event[_sync]("kind", ...), pcall(self.fleet_event, self, "kind", ...),
-- self:report("kind", ...) and records written whole, { event = "kind", ... }.
local fs = require("rollout.fs")

-- Literal kinds that are not events, with the reason.
local NOT_EVENTS = {
  status = "fleet/runner.lua passes { event = \"status\" } to status_value(): a control answer, not a journal line",
}

local PATTERNS = {
  '[%w_]*emit[%w_]*%s*%(%s*"([%w_]+)"',                  -- emit("k"), :emit("k"), :_emit("k"), emitter("k")
  '[%w_]*emit%s*%(%s*[%w_.]+%s*,%s*"([%w_]+)"',           -- common.emit(ctx, "k")
  'fleet_event[%w_]*%s*%(%s*"([%w_]+)"',                  -- fleet_event("k"), fleet_event_sync("k")
  'fleet_event[%w_]*%s*,%s*[%w_.]+%s*,%s*"([%w_]+)"',     -- pcall(self.fleet_event, self, "k")
  ':report%s*%(%s*"([%w_]+)"',                            -- notify: self:report("k")
  '{%s*event%s*=%s*"([%w_]+)"',                           -- { event = "k", ... } written whole
}

local function lua_files(dir, out)
  for _, name in ipairs(fs.list(dir) or {}) do
    local p = dir .. "/" .. name
    local st = fs.stat(p)
    if st and st.type == "dir" then lua_files(p, out)
    elseif name:match("%.lua$") then out[#out + 1] = p end
  end
  return out
end

--- kinds() -> { kind = "file:line" (the first place it is written) }
local function kinds()
  local found = {}
  local files = lua_files("playbooks", lua_files("lua/rollout", {})) -- playbooks/rollback.lua journals too
  table.sort(files)
  for _, path in ipairs(files) do
    local n = 0
    for line in (fs.read(path) .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      local code = line:gsub("^%s*%-%-.*$", "")
      for _, pat in ipairs(PATTERNS) do
        for k in code:gmatch(pat) do
          if not NOT_EVENTS[k] and not found[k] then found[k] = path .. ":" .. n end
        end
      end
    end
  end
  return found
end

local function documented(doc, kind)
  return doc:find("\n| `" .. kind .. "` |", 1, true) ~= nil
end

describe("docs/events.md", function()
  local doc = assert(fs.read("docs/events.md"))
  local found = kinds()

  it("finds the kinds the engine writes (the patterns still match the sources)", function()
    for _, k in ipairs({ "rollout_started", "gate", "trigger_fired", "outcome", "weight_confirmed",
      "engine_started", "journal_repaired", "restart", "owner_acquired", "fleet_error", "notification_failed" }) do
      assert.truthy(found[k], "the scan no longer finds '" .. k .. "': update PATTERNS in spec/docs_events_spec.lua")
    end
  end)

  it("documents every event kind the sources can write", function()
    local missing = {}
    for k, where in pairs(found) do
      if not documented(doc, k) then
        missing[#missing + 1] = string.format("  %s (written at %s): add a row  | `%s` | <fields> | <when> |  to the"
          .. " matching table in docs/events.md", k, where, k)
      end
    end
    table.sort(missing)
    assert.equals(0, #missing, "event kinds not documented in docs/events.md:\n" .. table.concat(missing, "\n"))
  end)

  it("documents no kind that nothing writes", function()
    local stale = {}
    for k in doc:gmatch("\n| `([%w_]+)` |") do
      if not found[k] and k ~= "event" and k ~= "t" and k ~= "ts" and k ~= "stage" and k ~= "seq" then
        stale[#stale + 1] = k
      end
    end
    assert.equals(0, #stale, "docs/events.md documents kinds no source writes (remove them, or the scan misses"
      .. " how they are written: extend PATTERNS in spec/docs_events_spec.lua): " .. table.concat(stale, ", "))
  end)
end)

-- One outcome set: rollout.engine.OUTCOMES. The exit codes (engine.EXIT), the outcomes a
-- scenario may expect (rollout.verify) and the ones that end a rollout for good
-- (rollout.journal.TERMINAL: all but paused) agree with it.
local engine = require("rollout.engine")
local journal = require("rollout.journal")
local verify = require("rollout.verify")

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function sorted(list, without)
  local out = {}
  for _, v in ipairs(list) do if v ~= without then out[#out + 1] = v end end
  table.sort(out)
  return out
end

describe("the outcome set", function()
  it("is engine.OUTCOMES, and EXIT, verify and the journal's TERMINAL derive from it", function()
    assert.same({ "aborted", "failed", "paused", "promoted", "rolled_back" }, sorted(engine.OUTCOMES))
    assert.same(sorted(engine.OUTCOMES), keys(engine.EXIT))
    assert.same({ promoted = 0, rolled_back = 1, paused = 3, aborted = 3, failed = 3 }, engine.EXIT)
    assert.same(sorted(engine.OUTCOMES), keys(verify.OUTCOMES))
    assert.same(sorted(engine.OUTCOMES, "paused"), keys(journal.TERMINAL))
  end)
end)

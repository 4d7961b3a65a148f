-- spec/datetime_spec.lua: the one time parser and writer (rollout.datetime), which report,
-- replay, notify and DORA share.
local datetime = require("rollout.datetime")

describe("rollout.datetime", function()
  it("reads epoch seconds, UTC and offset times, bare dates and relative times", function()
    assert.equals(1795751000, datetime.parse("1795751000"))
    assert.equals(1795751000.5, datetime.parse("1795751000.5"))
    assert.equals(1795752000, datetime.parse("2026-11-27T04:00:00Z"))
    assert.equals(1795752000, datetime.parse("2026-11-27 04:00:00 UTC"))
    assert.equals(1795752000, datetime.parse("2026-11-27T06:00:00+02:00"))
    assert.equals(1795752000, datetime.parse("2026-11-26T23:30:00-0430"))
    assert.equals(1795752000.25, datetime.parse("2026-11-27T04:00:00.25Z"))
    assert.equals(1795737600, datetime.parse("2026-11-27"))
    assert.equals(951782400, datetime.parse("2000-02-29"))            -- a leap day
    assert.equals(1000 - 1800, datetime.parse("-30m", 1000))
    assert.equals(1000 + 7200, datetime.parse("+2h", 1000))
  end)

  it("refuses what it cannot read, naming the forms it can", function()
    for _, s in ipairs({ "yesterday", "2026-13-01T00:00:00Z", "2026-11-27T04:00:00 CET", "-30x" }) do
      local v, err = datetime.parse(s, 0)
      assert.is_nil(v, s)
      assert.matches("time", err)
    end
    local v, err = datetime.parse("-30m")
    assert.is_nil(v)
    assert.matches("needs a reference time", err)
  end)

  it("writes ISO 8601 in UTC and the runbook's deployment id", function()
    assert.equals("2026-11-27T04:00:00Z", datetime.iso8601(1795752000.9))
    assert.is_nil(datetime.iso8601(nil))
    assert.equals("checkout-canary-20261127-040000", datetime.deployment_id("checkout", 1795752000))
    assert.equals("given", datetime.deployment_id("checkout", 1795752000, "given"))
    -- a round trip through both
    assert.equals(1795752000, datetime.parse(datetime.iso8601(1795752000)))
  end)
end)

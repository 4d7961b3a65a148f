-- Blue-green: green passes both analyses (promoted at 15 m) and fails at 17 m, while blue
-- is still up for the 5 m scale-down delay. The triggers are still armed: traffic switches
-- back to blue instead of the scale_down hook retiring it.
return {
  seed = 6,
  traffic = { rps = 400 },
  preview = { rps = 5 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = {
    error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" },
    changes = { { at = "17m", error_rate = 0.10 } },
  },
  expect = { outcome = "rolled_back", reason = "trigger:error_rate", at = { "17m30s", "18m30s" } },
}

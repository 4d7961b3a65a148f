-- From 12m, in Ramp-Up (25 %), the canary fails 8 % of its requests. The error_rate
-- trigger (above 5 % for 2 m, read over the 1 m trigger window) fires roughly 2 m 40 s
-- later, well before the stage's gate would run.
return {
  seed = 2,
  traffic = { rps = 400 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = {
    error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" },
    changes = { { at = "12m", error_rate = 0.08 } },
  },
  expect = { outcome = "rolled_back", reason = "trigger:error_rate", at = { "14m20s", "15m10s" } },
}

-- From 20m, in Half (50 %), the canary's p99 rises to 1.5 s. The latency_p99 trigger
-- (above 1 s for 5 m) fires a little over 5 m later, before Half's gate at 30 m.
return {
  seed = 3,
  traffic = { rps = 400 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = {
    error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" },
    changes = { { at = "20m", latency = { p50 = "300ms", p99 = "1500ms" } } },
  },
  expect = { outcome = "rolled_back", reason = "trigger:latency_p99", at = { "25m", "26m" } },
}

-- The metric source answers with errors from 20m to 23m, in Half. Once more than 4
-- evaluations in a row have failed, the rollout is inconclusive and pauses: missing data
-- never counts as healthy.
return {
  seed = 8,
  traffic = { rps = 400 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" } },
  source_errors = { { from = "20m", to = "23m" } },
  expect = { outcome = "paused", reason = "inconclusive", at = { "20m30s", "21m10s" } },
}

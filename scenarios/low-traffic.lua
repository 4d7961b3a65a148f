-- Only 20 requests/s reach the service. Initial needs 1000 canary samples and 100 req/s,
-- so its hold is extended up to max_hold (2 x 5 m); then the stage is inconclusive and,
-- by the playbook's policy, the rollout pauses for a person.
return {
  seed = 6,
  traffic = { rps = 20 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" } },
  expect = { outcome = "paused", reason = "inconclusive", at = { "10m", "10m30s" } },
}

-- The canary fails 1.5 % of its requests from the start. No trigger fires (their limit is
-- 5 %), but Initial's gate allows at most 1 %, so the gate at the end of Initial rolls back.
return {
  seed = 5,
  traffic = { rps = 400 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = 0.015, latency = { p50 = "41ms", p99 = "185ms" } },
  expect = { outcome = "rolled_back", reason = "gate:error_rate", at = { "5m", "5m20s" } },
}

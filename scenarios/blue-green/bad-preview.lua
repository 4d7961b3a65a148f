-- Blue-green: green fails 8 % of its preview requests. The error_rate trigger (> 5 % for
-- 30 s) is armed during the preview, so green is rejected before any user reaches it.
return {
  seed = 4,
  traffic = { rps = 400 },
  preview = { rps = 5 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = 0.08, latency = { p50 = "41ms", p99 = "185ms" } },
  expect = { outcome = "rolled_back", reason = "trigger:error_rate", at = { "1m", "2m" } },
}

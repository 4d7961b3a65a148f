-- A canary as good as its baseline (same error rate, p99 within a few ms). Every one of
-- the five stages passes its gate and the rollout is promoted after about 55 minutes.
return {
  seed = 1,
  traffic = { rps = 400 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" } },
  expect = { outcome = "promoted", reason = nil, at = { "55m", "56m" } },
}

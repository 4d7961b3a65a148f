-- Blue-green (playbooks/blue-green.lua): a healthy green. 5 requests/s of preview traffic
-- (the `canary: true` header) for the 5 m pre-promotion analysis, the switch at 5 m, 10 m
-- of post-promotion analysis at 100 %, then blue stays up for the 5 m scale-down delay.
return {
  seed = 3,
  traffic = { rps = 400 },
  preview = { rps = 5 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" } },
  expect = { outcome = "promoted", at = { "20m", "21m" } },
}

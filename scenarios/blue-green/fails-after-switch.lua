-- Blue-green: green passes its preview, then fails 10 % of requests 2 m after the switch
-- (at 7 m), under the users' full load. The trigger (> 5 % for 30 s) switches everything
-- back to blue: pending at the first evaluation whose 1 m window crosses 5 %, fired 30 s on.
return {
  seed = 5,
  traffic = { rps = 400 },
  preview = { rps = 5 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = {
    error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" },
    changes = { { at = "7m", error_rate = 0.10 } },
  },
  expect = { outcome = "rolled_back", reason = "trigger:error_rate", at = { "7m30s", "8m30s" } },
}

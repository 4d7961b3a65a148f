-- Half (50 %) sees 6 % errors for 90 s, from 17m to 18m30s. The error_rate trigger needs
-- more than 5 % for 2 m, so it never fires, and by the gate at the end of Half the burst
-- has left the 5 m gate window. Expected: promoted, like a healthy canary.
return {
  seed = 4,
  traffic = { rps = 400 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = {
    error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" },
    changes = { { at = "17m", error_rate = 0.06 }, { at = "18m30s", error_rate = 0.002 } },
  },
  expect = { outcome = "promoted", reason = nil, at = { "55m", "56m" } },
}

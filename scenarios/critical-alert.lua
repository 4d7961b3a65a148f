-- At 31m, during Majority (75 %), Alertmanager reports a critical alert for the service.
-- The critical_alert trigger has no duration: it fires at the next evaluation and rolls back.
return {
  seed = 7,
  traffic = { rps = 400 },
  baseline = { error_rate = 0.002, latency = { p50 = "40ms", p99 = "180ms" } },
  canary = { error_rate = 0.002, latency = { p50 = "41ms", p99 = "185ms" } },
  alerts = { { at = "31m", severity = "critical", name = "DWCPCanaryDown" } },
  expect = { outcome = "rolled_back", reason = "trigger:critical_alert", at = { "31m", "31m20s" } },
}

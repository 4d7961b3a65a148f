-- playbooks/canary.lua with the statistical judge in place of the quality thresholds:
-- error rate and latency limits (golden and per stage) removed, so every stage with a
-- baseline to compare with is judged canary against baseline; traffic (min_rps,
-- min_samples), health and saturation limits and all five triggers stay. Used by
-- tools/eval.lua's "judge only" column.
local pb = include("../../playbooks/canary.lua")
local QUALITY = { error_rate = true, p50 = true, p95 = true, p99 = true }
for k in pairs(QUALITY) do pb.thresholds[k] = nil end
for _, st in ipairs(pb.stages) do
  for k in pairs(QUALITY) do st.thresholds[k] = nil end
end
pb.judge = { stages = true }
pb.ab_test.gate = false -- the judge alone (canary.lua's abTest would gate Half)
return pb

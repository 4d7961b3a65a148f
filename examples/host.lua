-- A tour of the host: tasks, timers, the clock. Run: ./rollout examples/host.lua
-- (and ./rollout --clock=virtual examples/host.lua to see an hour pass at once).
local t0 = rollout.now()
local ticks = 0
local ticker = rollout.every("100ms", function() ticks = ticks + 1 end)
local workers = {}
for i = 1, 3 do
  workers[i] = rollout.spawn(function()
    rollout.sleep(0.1 * i)
    return "worker " .. i .. " slept " .. (0.1 * i) .. " s"
  end)
end
for _, r in ipairs(rollout.wait_all(workers)) do print(r[1]) end
ticker:cancel()
print(string.format("%d ticks; %.2f s on the %s clock", ticks, rollout.now() - t0, rollout.clock()))
rollout.sleep("1h")
print(string.format("after sleeping 1h: now() = %.0f s", rollout.now() - t0))

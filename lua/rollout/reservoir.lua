-- rollout.reservoir: bounded uniform samples of a stream (Vitter's Algorithm R), and the
-- merge of several such samples into one that represents their union.
--
-- The judge compares raw request latencies, but a source sees millions of requests per
-- stage. A source keeps one reservoir of at most `size` values per version per interval
-- (every request has the same chance, size/seen, of being in it) and records how many
-- requests it saw; merge() then combines the intervals of a window so that each interval
-- counts in proportion to its requests, not to its reservoir, and caps the result. Memory
-- is bounded by size x intervals kept, whatever the traffic.
--
--   reservoir.new(size [, seed]) -> r      r:add(v)   r:values() -> list   r:seen() -> n
--   reservoir.merge(parts, cap) -> list    parts = {{values = list, n = requests}, ...}
--
-- Randomness comes from rollout.rng's seeded generator, so runs are reproducible.
-- Error policy: a size that is not a positive integer raises (a programming error);
-- nothing else fails.
local rng = require("rollout.rng")

local M = {}
local R = {}
R.__index = R

function M.new(size, seed)
  if math.type(size) ~= "integer" or size < 1 then error("reservoir size must be a positive integer", 2) end
  return setmetatable({ size = size, n = 0, items = {}, rng = rng.new(seed or 1) }, R)
end

--- add(v): the i-th value replaces a random slot with probability size/i.
function R:add(v)
  local n = self.n + 1
  self.n = n
  if n <= self.size then
    self.items[n] = v
  else
    local j = math.floor(self.rng:uniform() * n) + 1
    if j <= self.size then self.items[j] = v end
  end
end

function R:values() return self.items end
function R:seen() return self.n end

function R:reset()
  self.n, self.items = 0, {}
end

-- Evenly spaced picks of m out of a list: the list is already a uniform sample, so any
-- choice that does not look at the values keeps it one.
local function pick(list, m, out)
  local len = #list
  if m >= len then
    for i = 1, len do out[#out + 1] = list[i] end
    return
  end
  for t = 0, m - 1 do out[#out + 1] = list[math.floor((t + 0.5) * len / m) + 1] end
end

--- merge(parts, cap) -> list: at most `cap` values, taking from each part a share
--- proportional to its `n` (the requests it stands for). The total is the largest that
--- keeps the proportions with what each part holds, so a window whose intervals kept
--- everything returns everything (up to cap).
function M.merge(parts, cap)
  local total_n, total_v = 0, 0
  local scale = math.huge
  for _, p in ipairs(parts) do
    local n, k = p.n or #p.values, #p.values
    if n > 0 and k > 0 then
      total_n, total_v = total_n + n, total_v + k
      scale = math.min(scale, k / n)
    end
  end
  local out = {}
  if total_n == 0 then return out end
  local want = math.min(cap or math.huge, total_v, math.floor(total_n * math.min(scale, 1) + 1e-9))
  -- largest remainders, so the shares add up to exactly `want`
  local shares, rest, given = {}, {}, 0
  for i, p in ipairs(parts) do
    local n = p.n or #p.values
    if n > 0 and #p.values > 0 then
      local exact = want * n / total_n
      shares[i] = math.min(#p.values, math.floor(exact))
      given = given + shares[i]
      rest[#rest + 1] = { i = i, frac = exact - math.floor(exact) }
    end
  end
  table.sort(rest, function(a, b) if a.frac ~= b.frac then return a.frac > b.frac end return a.i < b.i end)
  for _, r in ipairs(rest) do
    if given >= want then break end
    if shares[r.i] < #parts[r.i].values then shares[r.i] = shares[r.i] + 1; given = given + 1 end
  end
  for i, p in ipairs(parts) do
    if shares[i] and shares[i] > 0 then pick(p.values, shares[i], out) end
  end
  return out
end

return M

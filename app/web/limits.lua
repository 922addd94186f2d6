-- KEYS: the n window counters, then one marker per session id of the request (new sessions).
-- ARGV: n, the session markers' TTL (s), then per window: cost (-1: the number of new sessions),
--       limit, window length (ms).
-- Every limit of one request (app/web/limits.py), checked and counted at once: refuses the request
-- whole (counts nothing) when any window would pass its limit.
-- Returns {over, new sessions, then per window: cost, count, pttl}.
local n = tonumber(ARGV[1])
local new = 0
for j = n + 1, #KEYS do
  if redis.call('EXISTS', KEYS[j]) == 0 then new = new + 1 end
end
local counts, ttls, costs = {}, {}, {}
local over = 0
for i = 1, n do
  local cost = tonumber(ARGV[3 * i])
  if cost < 0 then cost = new end
  costs[i] = cost
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  ttls[i] = redis.call('PTTL', KEYS[i])
  if ttls[i] < 0 then counts[i] = 0 end
  if cost > 0 and counts[i] + cost > tonumber(ARGV[3 * i + 1]) then over = 1 end
end
if over == 0 then
  for i = 1, n do
    if costs[i] > 0 then
      counts[i] = redis.call('INCRBY', KEYS[i], costs[i])
      if ttls[i] < 0 then
        redis.call('PEXPIRE', KEYS[i], ARGV[3 * i + 2])
        ttls[i] = tonumber(ARGV[3 * i + 2])
      end
    end
  end
  for j = n + 1, #KEYS do redis.call('SET', KEYS[j], '1', 'EX', ARGV[2]) end
end
local out = {over, new}
for i = 1, n do
  out[#out + 1] = costs[i]
  out[#out + 1] = counts[i]
  out[#out + 1] = ttls[i]
end
return out

-- KEYS: zset. ARGV: now. Every member becomes due now (order kept): a destination is back.
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local n = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], all[i]); n = n + 1
  end
end
return n

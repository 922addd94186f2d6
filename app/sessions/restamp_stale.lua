-- KEYS: bucket outbox zset. ARGV: stale_before_ms, now_ms, limit.
-- Re-stamps stale entries so each is re-enqueued once per stale period, not once per sweep.
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(stale) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m) end
return stale

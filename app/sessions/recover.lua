-- KEYS: live hash, final snapshot hash, bucket outbox zset, done tombstone, version counter
-- ARGV: version, now_ms, final_ttl_s, outbox member, batches, ver_ttl_s
-- Rebuilds the frozen snapshot of a version Redis no longer knows (ClickHouse has its batches, no
-- `sessions` row) and queues it, unless Redis knows it: still live, frozen, queued or just completed.
if redis.call('HGET', KEYS[1], 'version') == ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('ZSCORE', KEYS[3], ARGV[4]) then return 0 end
redis.call('HSET', KEYS[2], 'version', ARGV[1], 'batches', ARGV[5], 'pending', 0, 'reason', 'idle',
           'finalized_ms', ARGV[2], 'recovered', 1)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
local cur = tonumber(redis.call('GET', KEYS[5]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[5], ARGV[1], 'EX', tonumber(ARGV[6])) end
return 1

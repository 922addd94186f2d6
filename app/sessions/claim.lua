-- KEYS: live hash, bucket deadline zset, bucket outbox zset, final snapshot hash, version counter,
--       the bucket's claim counts of the project and day
-- ARGV: member, expected version, now_ms, final_ttl_s, outbox member, watermark_ms, ver_ttl_s,
--       minute of now_ms, claim counts ttl_s
-- The claim is counted here, with the claim itself: a sweep killed right after it cannot lose
-- the count (the loss ledger's ``finalized``).
-- The counter keeps the claimed version for the next one to start above it until ClickHouse
-- has its rows (ver_ttl_s, hours); while a session is live its hash holds the version.
-- A session is due when its deadline is behind the watermark (now minus the pipeline's lag).
-- Returns 1 claimed, 0 not due / gone, -1 version moved on (caller re-reads).
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if (not due) or tonumber(due) > tonumber(ARGV[6]) then return 0 end
local v = redis.call('HGET', KEYS[1], 'version')
if not v then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if v ~= ARGV[2] then return -1 end
redis.call('RENAME', KEYS[1], KEYS[4])
redis.call('HSET', KEYS[4], 'finalized_ms', ARGV[3])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[4]))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
if KEYS[5] and tonumber(redis.call('GET', KEYS[5]) or '0') < tonumber(v) then
  redis.call('SET', KEYS[5], v, 'EX', tonumber(ARGV[7]))
end
redis.call('HINCRBY', KEYS[6], ARGV[8], 1)
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[9]))
return 1

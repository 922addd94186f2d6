-- KEYS: bucket outbox zset, final snapshot hash, done tombstone. ARGV: outbox member, tombstone_ttl_s.
-- The tombstone keeps the reconciliation sweep off a version in the moment between this call and
-- its `sessions` row reaching ClickHouse.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], '1', 'EX', tonumber(ARGV[2]))
return redis.call('DEL', KEYS[2])

-- KEYS: lock. ARGV: token. Deletes the lock only while it holds this token, so a holder that
-- outlived its lock never frees the lock a newer holder took since. Returns 1 released, 0 not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0

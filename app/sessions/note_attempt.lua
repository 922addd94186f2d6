-- KEYS: a claimed version's snapshot hash. ARGV: field, value.
-- Adds one delivery attempt to the snapshot only while it exists (a finished or expired version
-- must not come back as a hash without an expiry).
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0

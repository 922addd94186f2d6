-- KEYS: applied marker, live hash, final snapshot hash of that version. ARGV: version, marker_ttl_s.
-- Once per counted batch (the marker flips to "<v>:w"): the version has one batch fewer to wait for,
-- wherever it is now (still live, or frozen by a claim). Returns 1 live, 2 frozen, 0 nothing to do.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
-- Written: ClickHouse's session_batches remembers the batch now, the marker need only outlast a
-- redelivery of its message (BATCH_MARKER_TTL).
redis.call('SET', KEYS[1], ARGV[1] .. ':w', 'EX', tonumber(ARGV[2]))
if redis.call('HGET', KEYS[2], 'version') == ARGV[1] then
  redis.call('HINCRBY', KEYS[2], 'pending', -1)
  return 1
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'pending', -1)
  return 2
end
return 0

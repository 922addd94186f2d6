-- KEYS: [1] the flush's marker, [2..] the ledger hashes it adds to (one project: one slot).
-- ARGV[1]: TTL of hashes and marker; then triples (index into KEYS, field, n).
-- Applies a flush once: a retry after a timeout (the first try may have run, e.g. on a Redis that
-- was paused, not lost) finds the marker and adds nothing. Returns 1 when applied, 0 when seen.
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  return 0
end
for i = 2, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], tonumber(ARGV[i + 2]))
end
for k = 2, #KEYS do
  redis.call('EXPIRE', KEYS[k], tonumber(ARGV[1]))
end
return 1

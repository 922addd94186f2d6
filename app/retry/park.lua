-- KEYS: zset, item key. ARGV: member, due, payload, ttl. A member parked twice (a redelivered
-- message, a journal re-publish) keeps the earlier due time and the higher attempt count, so a
-- duplicate never postpones a retry nor gives a refused batch its retry schedule again.
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not cur) or tonumber(ARGV[2]) < tonumber(cur) then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
local body = ARGV[3]
local old = redis.call('GET', KEYS[2])
if old then
  local ok_old, o = pcall(cjson.decode, old)
  local ok_new, n = pcall(cjson.decode, body)
  if ok_old and ok_new and type(o) == 'table' and type(n) == 'table'
     and tonumber(o['attempt']) and tonumber(n['attempt']) and tonumber(o['attempt']) > tonumber(n['attempt']) then
    body = old
  end
end
redis.call('SET', KEYS[2], body, 'EX', tonumber(ARGV[4]))
-- The index outlives its newest item (every park renews it), so an index nothing parks on any
-- more expires with its last item instead of staying for ever.
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1

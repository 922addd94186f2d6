-- KEYS: circuit hash. ARGV: now, threshold, ttl, then the pauses: ARGV[4 + k] is the pause after
-- the circuit opened k times before (app.retry.backoff.doubling_schedule); the last one holds
-- for every later opening.
-- Returns open_until (0 while closed). 'failing_since' keeps the first failure after the last
-- success (a success deletes the hash): how long the destination has failed without one.
local f = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSETNX', KEYS[1], 'failing_since', ARGV[1])
local opened_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if f >= tonumber(ARGV[2]) then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened') or '0')
  local pause = tonumber(ARGV[4 + math.min(opened, #ARGV - 4)])
  opened_until = tonumber(ARGV[1]) + pause
  redis.call('HSET', KEYS[1], 'open_until', tostring(opened_until), 'opened', opened + 1)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return tostring(opened_until)

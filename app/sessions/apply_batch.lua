-- KEYS: live hash, version counter, applied marker, bucket deadline zset
-- ARGV: activity_ms (when the API received the batch), idle_ms, max_ms, n_events, first_ts, last_ts,
--       member, pending_marker_ttl_s, live_ttl_s, version_floor (-1: not read yet),
--       counted_version (optional; the version ClickHouse's session_batches already maps this batch
--       and session to, -1/absent when none: a redelivery that outlived its marker counts nothing)
-- Returns {version, 1} newly counted, {version, 0} already counted (marker or ClickHouse), {0, -1} when
-- a new version must start and the caller has not passed the floor ClickHouse knows (it reads it, calls again).
-- The marker holds "<version>" until the batch's session_batches row is written, then "<version>:w";
-- 'pending' counts this version's batches counted but not yet written. Unwritten, it is the only
-- record of the count (ClickHouse has no row yet), so it lives as long as the version's frozen
-- snapshot may wait (pending_marker_ttl_s), however long storage is away; mark_written.lua
-- shortens it to BATCH_MARKER_TTL once the row is written and ClickHouse remembers the batch.
local applied = redis.call('GET', KEYS[3])
if applied then return {tonumber(string.match(applied, '^%d+')), 0} end
local counted = tonumber(ARGV[11] or '-1')
if counted >= 0 then return {counted, 0} end
local act = tonumber(ARGV[1])
local v = redis.call('HGET', KEYS[1], 'version')
if not v then
  local floor = tonumber(ARGV[10])
  if floor < 0 then return {0, -1} end
  -- never below what ClickHouse knows (a lost or expired counter must not reuse a webhook-id),
  -- nor below the last claimed version (its session_batches rows may not be written yet).
  -- The counter is written by claim.lua only: a live session keeps its version in its hash.
  v = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), floor) + 1
  redis.call('HSET', KEYS[1], 'version', v, 'started_ms', act, 'last_seen_ms', act, 'first_ts', ARGV[5],
             'last_ts', ARGV[6], 'batches', 0, 'events', 0, 'pending', 0)
end
redis.call('HINCRBY', KEYS[1], 'batches', 1)
redis.call('HINCRBY', KEYS[1], 'pending', 1)
redis.call('HINCRBY', KEYS[1], 'events', tonumber(ARGV[4]))
if tonumber(ARGV[5]) < tonumber(redis.call('HGET', KEYS[1], 'first_ts')) then
  redis.call('HSET', KEYS[1], 'first_ts', ARGV[5])
end
if tonumber(ARGV[6]) > tonumber(redis.call('HGET', KEYS[1], 'last_ts')) then
  redis.call('HSET', KEYS[1], 'last_ts', ARGV[6])
end
-- batches may be processed out of order: activity is the latest receive time seen
local started = math.min(tonumber(redis.call('HGET', KEYS[1], 'started_ms')), act)
local last = math.max(tonumber(redis.call('HGET', KEYS[1], 'last_seen_ms')), act)
local idle_at = last + tonumber(ARGV[2])
local max_at = started + tonumber(ARGV[3])
local deadline, reason = idle_at, 'idle'
if max_at < idle_at then deadline, reason = max_at, 'max_duration' end
redis.call('HSET', KEYS[1], 'started_ms', started, 'last_seen_ms', last, 'deadline', deadline, 'reason', reason)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[9]))
redis.call('ZADD', KEYS[4], deadline, ARGV[7])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[9]))
redis.call('SET', KEYS[3], v, 'EX', tonumber(ARGV[8]))
return {tonumber(v), 1}

"""The Lua scripts. Every key a script touches arrives through KEYS and shares one hash tag."""

# KEYS: live hash, version counter, applied marker, bucket deadline zset
# ARGV: activity_ms (when the API received the batch), idle_ms, max_ms, n_events, first_ts, last_ts,
#       member, marker_ttl_s, live_ttl_s, (unused: was ver_ttl_s), version_floor (-1: not read yet),
#       counted_version (optional; the version ClickHouse's session_batches already maps this batch
#       and session to, -1/absent when none: a redelivery that outlived its marker counts nothing)
# Returns {version, 1} newly counted, {version, 0} already counted (marker or ClickHouse), {0, -1} when
# a new version must start and the caller has not passed the floor ClickHouse knows (it reads it, calls again).
# The marker holds "<version>" until the batch's session_batches row is written, then "<version>:w";
# 'pending' counts this version's batches counted but not yet written.
APPLY_BATCH = """
local applied = redis.call('GET', KEYS[3])
if applied then return {tonumber(string.match(applied, '^%d+')), 0} end
local counted = tonumber(ARGV[12] or '-1')
if counted >= 0 then return {counted, 0} end
local act = tonumber(ARGV[1])
local v = redis.call('HGET', KEYS[1], 'version')
if not v then
  local floor = tonumber(ARGV[11])
  if floor < 0 then return {0, -1} end
  -- never below what ClickHouse knows (a lost or expired counter must not reuse a webhook-id),
  -- nor below the last claimed version (its session_batches rows may not be written yet).
  -- The counter is written by CLAIM only: a live session keeps its version in its hash.
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
"""

# KEYS: applied marker, live hash, final snapshot hash of that version. ARGV: version.
# Once per counted batch (the marker flips to "<v>:w"): the version has one batch fewer to wait for,
# wherever it is now (still live, or frozen by a claim). Returns 1 live, 2 frozen, 0 nothing to do.
MARK_WRITTEN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ':w', 'KEEPTTL')
if redis.call('HGET', KEYS[2], 'version') == ARGV[1] then
  redis.call('HINCRBY', KEYS[2], 'pending', -1)
  return 1
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'pending', -1)
  return 2
end
return 0
"""

# KEYS: live hash, bucket deadline zset, bucket outbox zset, final snapshot hash, version counter
# ARGV: member, expected version, now_ms, final_ttl_s, outbox member, watermark_ms, ver_ttl_s
# The counter keeps the claimed version for the next one to start above it until ClickHouse
# has its rows (ver_ttl_s, hours); while a session is live its hash holds the version.
# A session is due when its deadline is behind the watermark (now minus the pipeline's lag).
# Returns 1 claimed, 0 not due / gone, -1 version moved on (caller re-reads).
CLAIM = """
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
return 1
"""

# KEYS: bucket outbox zset, final snapshot hash, done tombstone. ARGV: outbox member, tombstone_ttl_s.
# The tombstone keeps the reconciliation sweep off a version in the moment between this call and
# its `sessions` row reaching ClickHouse.
COMPLETE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], '1', 'EX', tonumber(ARGV[2]))
return redis.call('DEL', KEYS[2])
"""

# KEYS: bucket outbox zset. ARGV: stale_before_ms, now_ms, limit.
# Re-stamps stale entries so each is re-enqueued once per stale period, not once per sweep.
RESTAMP_STALE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(stale) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m) end
return stale
"""

# KEYS: live hash, final snapshot hash, bucket outbox zset, done tombstone, version counter
# ARGV: version, now_ms, final_ttl_s, outbox member, batches, ver_ttl_s
# Rebuilds the frozen snapshot of a version Redis no longer knows (ClickHouse has its batches, no
# `sessions` row) and queues it, unless Redis knows it: still live, frozen, queued or just completed.
RECOVER = """
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
"""

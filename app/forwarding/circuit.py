"""A circuit per destination, shared by every forward worker through Redis.

Closed: every delivery is attempted. After ``threshold`` consecutive retryable failures it
opens: deliveries are parked until the pause ends, then one worker at a time sends a probe
(a real delivery). The pause doubles per failed probe up to ``max_pause``. The first success
closes it, and the caller releases every parked delivery at the drain rate. So while UFSE is
down it sees one probe per pause, not one request per waiting session.
"""
from __future__ import annotations

import time

from app.storage.redis import RedisClient

# KEYS: circuit hash. ARGV: now, threshold, base_pause, max_pause, ttl.
# Returns open_until (0 while closed).
_FAILURE = """
local f = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local opened_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if f >= tonumber(ARGV[2]) then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened') or '0')
  local pause = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * (2 ^ opened))
  opened_until = tonumber(ARGV[1]) + pause
  redis.call('HSET', KEYS[1], 'open_until', tostring(opened_until), 'opened', opened + 1)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return tostring(opened_until)
"""
# KEYS: circuit hash, probe lock. Returns 1 when the circuit was open.
_SUCCESS = """
local was = redis.call('HGET', KEYS[1], 'open_until')
redis.call('DEL', KEYS[1], KEYS[2])
if was and tonumber(was) > 0 then return 1 end
return 0
"""


class Circuit:
    """The circuit of one destination (e.g. the UFSE host)."""

    def __init__(self, redis: RedisClient, prefix: str, name: str, *, threshold: int, max_pause: float,
                 base_pause: float = 5.0, scale: float = 1.0, ttl_s: int = 2 * 86400) -> None:
        self.r = redis
        tag = f"{prefix}circuit:{{{name}}}"
        self.key, self.probe_key = tag, f"{tag}:probe"
        self.threshold = threshold
        self.max_pause = max_pause * scale
        self.base_pause = base_pause * scale
        self.ttl = ttl_s
        self._failure = redis.register_script(_FAILURE)
        self._success = redis.register_script(_SUCCESS)

    def open_until(self) -> float:
        """Epoch seconds until which the circuit is open (0 when closed)."""
        return float(self.r.hget(self.key, "open_until") or 0)

    def allow(self, now: float | None = None) -> tuple[bool, float, bool]:
        """(may send now?, wait until, is this a probe?). Past the pause one caller probes."""
        now = time.time() if now is None else now
        until = self.open_until()
        if until <= 0:
            return True, 0.0, False
        if now < until:
            return False, until, False
        # The probe lock outlives one delivery attempt; a crashed prober frees it by expiry.
        if self.r.set(self.probe_key, "1", nx=True, px=int(max(self.base_pause, 1.0) * 1000 * 6)):
            return True, 0.0, True
        return False, now + self.base_pause, False

    def failure(self, now: float | None = None) -> float:
        """Count a retryable failure; returns open_until (0 while still closed)."""
        now = time.time() if now is None else now
        until = self._failure(keys=[self.key],
                              args=[f"{now:.3f}", self.threshold, self.base_pause, self.max_pause, self.ttl])
        self.r.delete(self.probe_key)
        return float(until)

    def success(self) -> bool:
        """Close the circuit; True when it had been open (parked deliveries can be released)."""
        return bool(self._success(keys=[self.key, self.probe_key]))

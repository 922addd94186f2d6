"""A circuit per destination, shared by every forward worker through Redis.

Closed: every delivery is attempted. After ``threshold`` consecutive retryable failures it
opens: deliveries are parked until the pause ends, then one worker at a time sends a probe
(a real delivery). The pause doubles per failed probe up to ``max_pause``. The first success
closes it, and the caller releases every parked delivery at the drain rate. So while UFSE is
down it sees one probe per pause, not one request per waiting session.
"""
from __future__ import annotations

import time
from typing import Any, cast

from app.retry.backoff import doubling_schedule
from app.storage import lua, redis_keys
from app.storage.redis_clients import RedisClient


class Circuit:
    """The circuit of one destination (e.g. the UFSE host)."""

    def __init__(self, redis: RedisClient, prefix: str, name: str, *, threshold: int, max_pause: float,
                 base_pause: float = 5.0, scale: float = 1.0, ttl_s: int = 2 * 86400) -> None:
        self.r = redis
        self.prefix = prefix
        self.key, self.probe_key = redis_keys.circuit(prefix, name), redis_keys.circuit_probe(prefix, name)
        self.threshold = threshold
        self.max_pause = max_pause * scale
        self.base_pause = base_pause * scale
        self.ttl = ttl_s
        # The pause after each opening, computed here so the script does no backoff arithmetic.
        self.pauses = doubling_schedule(base=self.base_pause, cap=self.max_pause)
        self._failure = redis.register_script(lua.load(__file__, "circuit_failure"))
        self._success = redis.register_script(lua.load(__file__, "circuit_success"))

    def adopt(self, old_name: str) -> bool:
        """Take over the state an earlier name of this destination kept, and delete its keys.

        Before the circuit was named by the destination's origin it was named by the URL's
        netloc, user info included: a ``user:pass@`` in UFSE_URL sat in a Redis key name. An
        open circuit under that name moves here (unless this one has state already), so an
        upgrade neither forgets an outage nor leaves the credentials in Redis.
        """
        old, old_probe = redis_keys.circuit(self.prefix, old_name), redis_keys.circuit_probe(self.prefix, old_name)
        if old == self.key:
            return False
        state = cast(dict[Any, Any], self.r.hgetall(old))
        if state and not self.r.exists(self.key):
            self.r.hset(self.key, mapping=state)
            self.r.expire(self.key, self.ttl)
        # One key per call: the old and new names hash to different Redis Cluster slots.
        self.r.delete(old)
        self.r.delete(old_probe)
        return bool(state)

    def open_until(self) -> float:
        """Epoch seconds until which the circuit is open (0 when closed)."""
        return float(self.r.hget(self.key, "open_until") or 0)

    def failing_since(self) -> float | None:
        """Epoch seconds of the first failure since the last success (None: none since)."""
        value = self.r.hget(self.key, "failing_since")
        return float(value) if value else None

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
        until = self._failure(keys=[self.key], args=[f"{now:.3f}", self.threshold, self.ttl, *self.pauses])
        self.r.delete(self.probe_key)
        return float(until)

    def success(self) -> bool:
        """Close the circuit; True when it had been open (parked deliveries can be released)."""
        return bool(self._success(keys=[self.key, self.probe_key]))

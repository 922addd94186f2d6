"""The due-time index: retries that wait minutes to hours, kept durably in Redis, not in messages.

A Celery countdown is an unacked message held by a worker; with the Redis broker it comes back
to another worker once the visibility timeout (60 s) passes, so no wait may be longer than
that. Long waits are parked here instead: a sorted set of ``member -> due time`` and, per
member, its JSON payload. Beat's maintenance sweep re-publishes what is due. Both keys of an
index share one hash tag, so every call stays in one Redis Cluster slot.

Re-publishing is at least once (a crash between publish and ``done`` publishes again); every
consumer of these messages is idempotent (batch markers, the session snapshot).
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import cast

from app.storage.redis import RedisClient

# KEYS: zset, item key. ARGV: member, due, payload, ttl. Keeps the earlier due time of a member
# parked twice, so a duplicate never postpones a retry.
_PARK = """
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not cur) or tonumber(ARGV[2]) < tonumber(cur) then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
return 1
"""
# KEYS: zset. ARGV: now. Every member becomes due now (order kept): a destination is back.
_RELEASE_ALL = """
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local n = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], all[i]); n = n + 1
  end
end
return n
"""


def jittered(delay: float, scale: float = 1.0, rng: Callable[[], float] = random.random) -> float:
    """``delay`` scaled, with jitter in [delay/2, delay] so retries of many items spread out."""
    return max(0.0, delay * scale * (0.5 + 0.5 * rng()))


def schedule_delay(schedule: tuple[float, ...], attempt: int, scale: float = 1.0,
                   rng: Callable[[], float] = random.random) -> float | None:
    """Delay before retry number ``attempt`` (0-based), or None once the schedule is spent."""
    if attempt >= len(schedule):
        return None
    return jittered(schedule[attempt], scale, rng)


class DueIndex:
    """One named index (``events``, ``forward``) on one Redis."""

    def __init__(self, redis: RedisClient, prefix: str, name: str, item_ttl_s: int = 14 * 86400) -> None:
        self.r = redis
        base = f"{prefix}due:{{{name}}}:"
        self.zset = f"{base}index"
        self.item_prefix = f"{base}item:"
        self.item_ttl = item_ttl_s
        self._park = redis.register_script(_PARK)
        self._release = redis.register_script(_RELEASE_ALL)

    def park(self, member: str, payload: dict, due_at: float) -> None:
        """Keep ``payload`` until ``due_at`` (epoch seconds); the sweep re-publishes it then."""
        body = json.dumps(payload, separators=(",", ":"))
        self._park(keys=[self.zset, self.item_prefix + member], args=[member, f"{due_at:.3f}", body, self.item_ttl])

    def due(self, now: float | None = None, limit: int = 500) -> list[tuple[str, dict | None]]:
        """Up to ``limit`` members due by ``now``, earliest first, with their payloads."""
        now = time.time() if now is None else now
        # The clients decode responses (app/storage/redis.py): members are str.
        members = cast(list[str], self.r.zrangebyscore(self.zset, "-inf", f"{now:.3f}", start=0, num=limit))
        if not members:
            return []
        bodies = self.r.mget([self.item_prefix + m for m in members])
        return [(m, json.loads(b) if b else None) for m, b in zip(members, bodies, strict=True)]

    def done(self, members: list[str]) -> None:
        """Forget members that were re-published (or need nothing more)."""
        if not members:
            return
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(self.zset, *members)
        pipe.delete(*[self.item_prefix + m for m in members])
        pipe.execute()

    def due_at(self, member: str) -> float | None:
        """When ``member`` is due, or None when it is not parked."""
        score = self.r.zscore(self.zset, member)
        return None if score is None else float(score)

    def release_all(self, now: float | None = None) -> int:
        """Make every parked member due now (its destination answers again); returns how many moved."""
        return int(self._release(keys=[self.zset], args=[f"{time.time() if now is None else now:.3f}"]))

    def size(self) -> int:
        """How many members are parked."""
        return int(self.r.zcard(self.zset))

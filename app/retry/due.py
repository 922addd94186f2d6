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
import time
from typing import cast

from app.storage import lua, redis_keys
from app.storage.redis_clients import RedisClient


class DueIndex:
    """One named index (``events``, ``forward``) on one Redis."""

    def __init__(self, redis: RedisClient, prefix: str, name: str, item_ttl_s: int = 14 * 86400) -> None:
        self.r = redis
        self.zset = redis_keys.due_index(prefix, name)
        self.item_prefix = redis_keys.due_item_prefix(prefix, name)
        self.item_ttl = item_ttl_s
        self._park = redis.register_script(lua.load(__file__, "park"))
        self._release = redis.register_script(lua.load(__file__, "release_all"))

    def park(self, member: str, payload: dict, due_at: float) -> None:
        """Keep ``payload`` until ``due_at`` (epoch seconds); the sweep re-publishes it then."""
        body = json.dumps(payload, separators=(",", ":"))
        self._park(keys=[self.zset, self.item_prefix + member], args=[member, f"{due_at:.3f}", body, self.item_ttl])

    def due(self, now: float | None = None, limit: int = 500) -> list[tuple[str, dict | None]]:
        """Up to ``limit`` members due by ``now``, earliest first, with their payloads."""
        now = time.time() if now is None else now
        # The clients decode responses (app/storage/redis_clients.py): members are str.
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

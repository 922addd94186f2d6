"""A Redis lock for one holder at a time (the maintenance sweep): SET NX PX with a random token,
released by a compare-and-delete, so a holder slower than its TTL cannot free a newer holder's lock."""
from __future__ import annotations

import uuid

from app.storage import lua
from app.storage.redis_clients import RedisClient


class RedisLock:
    """One lock key; ``ttl_ms`` bounds how long a holder that died keeps it."""

    def __init__(self, redis: RedisClient, key: str, ttl_ms: int) -> None:
        self.r = redis
        self.key = key
        self.ttl_ms = int(ttl_ms)
        self.token = uuid.uuid4().hex
        self._release = redis.register_script(lua.load(__file__, "release_lock"))

    def acquire(self) -> bool:
        """Take the lock; False when another holder has it."""
        return bool(self.r.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def release(self) -> None:
        """Free the lock if it is still ours (expired and taken by another: left alone)."""
        self._release(keys=[self.key], args=[self.token])

"""Per-process TTL cache of key lookups, misses included (bad-key floods stay off PostgreSQL)."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

from app.keys import model
from app.observability import metrics

_MISS = object()


class KeyCache:
    """Bounded LRU of digest -> KeyInfo|None, each entry valid for ``ttl`` seconds."""

    def __init__(self, loader: Callable[[str], model.KeyInfo | None], ttl: float, max_entries: int = 50_000, clock=time.monotonic) -> None:
        self.loader = loader
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[bytes, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> model.KeyInfo | None:
        """Cached lookup; a revoked key disappears within ``ttl``."""
        if not model.well_formed(key):
            metrics.KEY_CACHE.labels("malformed").inc()
            return None
        d = model.digest(key)
        now = self.clock()
        with self._lock:
            hit = self._data.get(d)
            if hit and hit[0] > now:
                self._data.move_to_end(d)
                metrics.KEY_CACHE.labels("hit").inc()
                return None if hit[1] is _MISS else hit[1]  # type: ignore[return-value]
        info = self.loader(key)  # outside the lock: a slow database must not serialize requests
        metrics.KEY_CACHE.labels("load").inc()
        with self._lock:
            self._data[d] = (now + self.ttl, info if info is not None else _MISS)
            self._data.move_to_end(d)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return info

"""Per-process TTL cache of key lookups, misses included, that fails static on PostgreSQL.

Entries are fresh for ``ttl`` seconds (a revoked key stops within that once PostgreSQL
answers). When a refresh fails because PostgreSQL is unreachable, a key this process knew
keeps its last answer for up to ``stale_max`` seconds after it was last loaded; the refresh
is retried every few seconds, not on every request. A key never seen before cannot be
checked, which is :class:`KeyStoreUnavailable` (the API answers 503 with Retry-After).

Misses (unknown or revoked keys) live in their own, smaller LRU: anyone can send random keys,
and they must not push the valid keys out (a valid key that fell out of the cache would answer
503 during the next PostgreSQL blip instead of being served from it). Before a key that is not
known valid is loaded, ``before_load`` may refuse the lookup (the per-client-IP budget).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from app.keys import model
from app.observability import metrics

log = logging.getLogger(__name__)
_MISS = object()
_RETRY_S = 5.0  # while PostgreSQL is away, one refresh attempt per key this often
# Misses kept: a revoked key still deployed on a site is asked about once per TTL, not per request;
# random keys only churn this LRU, never the valid keys'.
MAX_MISSES = 10_000


class KeyStoreUnavailable(RuntimeError):
    """The key store could not be asked and this key is not in the cache."""


class KeyCache:
    """Two bounded LRUs of digest -> (fresh until, KeyInfo|None, loaded at): valid keys, misses."""

    def __init__(self, loader: Callable[[str], model.KeyInfo | None], ttl: float, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic, stale_max: float = 3600.0,
                 unavailable: tuple[type[BaseException], ...] = (Exception,), max_misses: int = MAX_MISSES) -> None:
        self.loader = loader
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_misses = max_misses
        self.clock = clock
        self.stale_max = stale_max
        self.unavailable = unavailable
        self._data: OrderedDict[bytes, tuple[float, object, float]] = OrderedDict()
        self._misses: OrderedDict[bytes, tuple[float, object, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, before_load: Callable[[], None] | None = None) -> model.KeyInfo | None:
        """Cached lookup; raises KeyStoreUnavailable only for an unknown key during an outage.

        ``before_load`` runs before the loader for a key this process does not hold as valid
        (never seen, or a miss whose entry expired); it may raise to refuse the lookup."""
        if not model.well_formed(key):
            metrics.KEY_CACHE.labels("malformed").inc()
            return None
        d = model.digest(key)
        now = self.clock()
        with self._lock:
            hit = self._data.get(d)
            table = self._data
            if hit is None:
                hit, table = self._misses.get(d), self._misses
            if hit and hit[0] > now:
                table.move_to_end(d)
                metrics.KEY_CACHE.labels("hit").inc()
                return _value(hit[1])
        if before_load is not None and (hit is None or hit[1] is _MISS):
            before_load()
        try:
            info = self.loader(key)  # outside the lock: a slow database must not serialize requests
        except self.unavailable as exc:
            return self._stale(d, hit, now, exc)
        metrics.KEY_CACHE.labels("load").inc()
        self._put(d, (now + self.ttl, info if info is not None else _MISS, now))
        return info

    def _stale(self, d: bytes, hit: tuple[float, object, float] | None, now: float,
               exc: BaseException) -> model.KeyInfo | None:
        if hit is None or now - hit[2] > self.stale_max:
            metrics.KEY_CACHE.labels("unavailable").inc()
            raise KeyStoreUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc
        metrics.KEY_CACHE_STALE.inc()
        log.warning("key store unreachable; serving the cached answer", extra={"age_s": round(now - hit[2], 1)})
        # Keep the original load time, so staleness stays bounded by stale_max.
        self._put(d, (now + min(self.ttl, _RETRY_S), hit[1], hit[2]))
        return _value(hit[1])

    def _put(self, d: bytes, entry: tuple[float, object, float]) -> None:
        valid = entry[1] is not _MISS
        table, other, bound = ((self._data, self._misses, self.max_entries) if valid
                               else (self._misses, self._data, self.max_misses))
        with self._lock:
            other.pop(d, None)  # a key revoked (or restored) moves between the two
            table[d] = entry
            table.move_to_end(d)
            while len(table) > bound:
                table.popitem(last=False)


def _value(v: object) -> model.KeyInfo | None:
    return None if v is _MISS else v  # type: ignore[return-value]

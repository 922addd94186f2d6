"""Ingest suppression of people whose data is being deleted.

Redis (the sessions role) holds every running suppression in one hash, ``{p}suppress:{sup}``: field
``<project>\\x1f<a|s>\\x1f<anonymous_id|session_id>`` -> epoch seconds it ends, and a version
counter ``{p}suppress:{sup}:ver`` (the same hash tag) bumped by every change. A web process reads
the counter at most once a second (one GET, on the request that finds its copy older than a
second) and the hash only when the counter moved, so the ingest path pays no Redis round trip
on most requests, then a lookup per event in its project's sets (most projects have none). PostgreSQL's
``deletion_requests`` stays the record: the maintenance job writes the hash again when Redis lost it.
Both keys expire when the last suppression does.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.storage import redis_clients, redis_keys
from app.storage.redis_clients import RedisClient

log = logging.getLogger(__name__)
SEP = "\x1f"  # cannot occur in a project name, a session_id or an anonymous_id (all validated)
_CODE = {"anonymous_id": "a", "session_id": "s"}
REFRESH_S = 1.0


def suppress_seconds(dedup_window: int, timestamp_max_past: int) -> int:
    """How long a person stays suppressed: as long as an SDK may resend a stored event (its queue
    expires after dedupWindow, at most one day) or the API accepts its timestamp, plus an hour."""
    return max(86400, dedup_window, timestamp_max_past) + 3600


def add(r: RedisClient, prefix: str, entries: Iterable[tuple[str, str, str, float]]) -> int:
    """Write suppressions ``(project, kind, subject, until_epoch_s)``; returns how many."""
    rows = list(entries)
    if not rows:
        return 0
    # Both keys live as long as the latest suppression (never shortened by an earlier one).
    key = redis_keys.suppressions(prefix)
    ttl = max(int(max(until for *_, until in rows) - time.time()) + 60, int(r.ttl(key)), 1)
    pipe = r.pipeline(transaction=True)
    pipe.hset(key, mapping={f"{p}{SEP}{_CODE[k]}{SEP}{s}": f"{u:.0f}" for p, k, s, u in rows})
    pipe.incr(redis_keys.suppressions_version(prefix))
    pipe.expire(redis_keys.suppressions(prefix), ttl)
    pipe.expire(redis_keys.suppressions_version(prefix), ttl)
    pipe.execute()
    return len(rows)


def resync(r: RedisClient, prefix: str, running: list[tuple[str, str, str, float]]) -> int:
    """Write PostgreSQL's running suppressions again when Redis lost them and prune ended ones;
    returns how many were written."""
    now = time.time()
    fields = cast(dict[str, str], r.hgetall(redis_keys.suppressions(prefix)))
    ended = [f for f, until in fields.items() if float(until) <= now]
    if ended:
        r.hdel(redis_keys.suppressions(prefix), *ended)
        r.incr(redis_keys.suppressions_version(prefix))
    missing = [e for e in running if f"{e[0]}{SEP}{_CODE[e[1]]}{SEP}{e[2]}" not in fields and e[3] > now]
    return add(r, prefix, missing)


def request_path_client(url: str) -> RedisClient:
    """A client for the request path: 1 s timeouts and no retry inside redis-py (its default
    retries a timeout three times), so a Redis that does not answer costs one request a second
    at most; a Redis Cluster URL gets the shared cluster client."""
    if redis_clients.is_cluster(url):
        return redis_clients.client(url)
    pool = redis.ConnectionPool.from_url(url, max_connections=16, socket_timeout=1, socket_connect_timeout=1,
                                         retry=Retry(NoBackoff(), 0), decode_responses=True)
    return redis.Redis(connection_pool=pool)


class Suppressions:
    """A web process's copy of the running suppressions, refreshed at most once a second."""

    def __init__(self, r: RedisClient, prefix: str, refresh_s: float = REFRESH_S) -> None:
        self.r = r
        self.prefix = prefix
        self.refresh_s = refresh_s
        self._checked = float("-inf")
        self._version: Any = None
        self._by_project: dict[str, tuple[frozenset, frozenset, float]] = {}
        self._lock = threading.Lock()

    def _refresh(self, now: float) -> None:
        # One thread refreshes; the others go on with the last copy instead of queueing behind a
        # Redis that does not answer (a frozen server held every request of the process).
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._refresh_locked(now)
        finally:
            self._lock.release()

    def _refresh_locked(self, now: float) -> None:
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        try:
            version = self.r.get(redis_keys.suppressions_version(self.prefix))
            if version == self._version:
                return
            # The clients decode responses (app/storage/redis_clients.py): fields are str.
            key = redis_keys.suppressions(self.prefix)
            fields = cast(dict[str, str], self.r.hgetall(key)) if version is not None else {}
        except redis.RedisError as exc:  # keep the last copy (fail static); try again in a second
            log.warning("suppressions not refreshed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            return
        anon: dict[str, set] = {}
        sids: dict[str, set] = {}
        ends: dict[str, float] = {}
        for field, until in fields.items():
            project, code, subject = field.split(SEP, 2)
            if float(until) <= now:
                continue
            (anon if code == "a" else sids).setdefault(project, set()).add(subject)
            ends[project] = max(ends.get(project, 0.0), float(until))
        self._by_project = {p: (frozenset(anon.get(p, ())), frozenset(sids.get(p, ())), ends[p]) for p in ends}
        self._version = version

    def of(self, project: str, now: float | None = None) -> tuple[frozenset, frozenset] | None:
        """``(anonymous_ids, session_ids)`` suppressed in ``project``, None for none (most projects)."""
        now = time.time() if now is None else now
        if now - self._checked >= self.refresh_s:
            self._refresh(now)
        entry = self._by_project.get(project)
        return None if entry is None else (entry[0], entry[1])


def suppressed(sup: tuple[frozenset, frozenset], event: dict) -> bool:
    """True when ``event`` (as validated) belongs to a suppressed person of its project."""
    anon, sids = sup
    return event["session_id"] in sids or (event.get("anonymous_id") or "") in anon

"""A live tail of one project's ingest verdicts, costing nothing while no one tails.

A tailing client (``flask --app app tail --project P``) registers the project in one hash
(``{p}tails``: project -> until, epoch ms), renewing it every few seconds, and subscribes to the
project's channel. Each web process reads that hash once a second from its ledger thread (no
request waits for it); only for a registered project does ingest publish, after its answer is
decided, one message per request: the accepted events (type, event_id, session_id, name) and the
rejected ones with their code. Capped: at most ``PER_REQUEST`` events listed per message (the rest
counted), at most ``PER_SECOND`` messages per process per second (the rest counted as skipped in
the next message), so a busy project cannot flood Redis for one watcher.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import redis

from app.storage import redis_clients, redis_keys
from app.storage.redis_clients import RedisClient

log = logging.getLogger(__name__)

PER_REQUEST = 20
PER_SECOND = 50
REGISTRATION_S = 15.0


class Tails:
    """Which projects are tailed now, refreshed in the background; publishes their verdicts."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url, self.prefix = redis_url, prefix
        self.projects: frozenset[str] = frozenset()
        self._window = (0, 0)  # (second, messages sent in it)
        self._skipped = 0
        self._lock = threading.Lock()
        self._pid = 0

    def refresh(self) -> None:
        """Read the registrations (called once a second by the ledger thread)."""
        try:
            regs = redis_clients.client(self.redis_url).hgetall(redis_keys.tails(self.prefix))
            now = time.time() * 1000
            self.projects = frozenset(str(p) for p, until in regs.items() if float(until) > now)
        except redis.RedisError:
            pass
        finally:
            self._pid = os.getpid()  # read (or failed) in this process: a request never waits on it twice

    def publish(self, r: RedisClient, project: str, request_id: str, accepted: list[dict], rejected: list[dict],
                raw_events: list, status: int) -> None:
        """Send one request's verdicts to the project's watchers (only when it has some)."""
        if self._pid != os.getpid():
            self.refresh()  # this process's first look; the ledger thread keeps it fresh from now on
        if project not in self.projects:
            return
        second = int(time.time())
        with self._lock:
            sec, n = self._window
            if sec != second:
                sec, n = second, 0
            if n >= PER_SECOND:
                self._skipped += 1
                self._window = (sec, n)
                return
            self._window = (sec, n + 1)
            skipped, self._skipped = self._skipped, 0
        events: list[dict[str, Any]] = [
            {"verdict": "accepted", "type": e.get("type"), "event_id": e.get("event_id"),
             "session_id": e.get("session_id"), "name": e.get("name") or ""} for e in accepted[:PER_REQUEST]]
        room = max(0, PER_REQUEST - len(events))
        for rej in rejected[:room]:
            i = rej.get("index")
            raw = raw_events[i] if isinstance(i, int) and 0 <= i < len(raw_events) else {}
            raw = raw if isinstance(raw, dict) else {}
            events.append({"verdict": "rejected", "code": rej.get("code"), "type": _short(raw.get("type")),
                           "event_id": _short(raw.get("event_id")), "errors": rej.get("errors")})
        msg = {"at": round(time.time(), 3), "request_id": request_id, "status": status,
               "accepted": len(accepted), "rejected": len(rejected), "events": events,
               "not_listed": len(accepted) + len(rejected) - len(events), "skipped_requests": skipped}
        try:
            r.publish(redis_keys.tail_channel(self.prefix, project), json.dumps(msg, default=str))
        except redis.RedisError as exc:
            log.warning("tail publish failed", extra={"error": str(exc)[:200]})


def _short(v: Any) -> str | None:
    return v if isinstance(v, str) and len(v) <= 128 else None


def register(r: RedisClient, prefix: str, project: str) -> None:
    """(The tailing client) keep ``project`` tailed for the next REGISTRATION_S seconds."""
    r.hset(redis_keys.tails(prefix), project, str(int((time.time() + REGISTRATION_S) * 1000)))
    r.expire(redis_keys.tails(prefix), int(REGISTRATION_S * 4))


_tails: dict[tuple[str, str], Tails] = {}


def tails(redis_url: str, prefix: str) -> Tails:
    key = (redis_url, prefix)
    if key not in _tails:
        _tails[key] = Tails(redis_url, prefix)
    return _tails[key]

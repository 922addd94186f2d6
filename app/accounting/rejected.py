"""Rejected events, kept (not only counted) for a week: what was refused, why, in which request.

One Redis stream per project on the sessions Redis (``{p}rejected:{<project>}``), capped at
``MAX_KEPT`` entries and expiring ``KEEP_S`` after the last write. An entry keeps the event's
identifying fields only (event_id, type, session_id, each if it is a short string) with the
rejection code, the validation messages and the request id: never the URL, name or metadata,
which may hold what the privacy scrub exists to remove (a rejected event was never scrubbed).
``trace`` finds an event here; ``report`` and ``tail`` show the codes.
"""
from __future__ import annotations

import json
import logging
from typing import Any, cast

import redis

from app.storage import redis_keys
from app.storage.redis_clients import RedisClient

log = logging.getLogger(__name__)

KEEP_S = 7 * 86400
MAX_KEPT = 10_000
_ID_FIELDS = ("event_id", "type", "session_id")


def entry(raw: Any, rejection: dict, request_id: str, at_ms: int) -> dict[str, str]:
    """The stored form of one rejected event."""
    out = {"at_ms": str(at_ms), "request_id": request_id, "code": str(rejection.get("code", "")),
           "errors": json.dumps(rejection.get("errors", {}), separators=(",", ":"))[:1000]}
    if isinstance(raw, dict):
        for f in _ID_FIELDS:
            v = raw.get(f)
            if isinstance(v, str) and len(v) <= 128:
                out[f] = v
    return out


def keep(r: RedisClient, prefix: str, project: str, raw_events: list, rejections: list[dict], request_id: str,
         at_ms: int) -> None:
    """Store a request's rejected events (best effort: a Redis error is logged, never raised)."""
    if not rejections:
        return
    key = redis_keys.rejected(prefix, project)
    try:
        pipe = r.pipeline(transaction=False)
        for rej in rejections[:100]:  # a request holds at most MAX_EVENTS_PER_REQUEST; keep a bounded sample
            i = rej.get("index")
            raw = raw_events[i] if isinstance(i, int) and 0 <= i < len(raw_events) else None
            fields: dict[Any, Any] = entry(raw, rej, request_id, at_ms)
            pipe.xadd(key, fields, maxlen=MAX_KEPT, approximate=True)
        pipe.expire(key, KEEP_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("rejected events not kept", extra={"error": str(exc)[:200], "count": len(rejections)})


def find(r: RedisClient, prefix: str, project: str | None, event_id: str, projects: list[str]) -> list[dict]:
    """Every kept rejection of ``event_id`` (in ``project``, or in each of ``projects``)."""
    out = []
    for p in ([project] if project else projects):
        for fields in _entries(r, redis_keys.rejected(prefix, p), MAX_KEPT):
            if fields.get("event_id") == event_id:
                out.append({"project": p, **fields})
    return out


def _entries(r: RedisClient, key: str, count: int) -> list[dict[str, str]]:
    """The newest ``count`` entries' fields (the clients decode responses: str)."""
    rows = cast(list[tuple[str, dict[str, str]]], r.xrevrange(key, count=count) or [])
    return [dict(fields or {}) for _id, fields in rows]


def recent(r: RedisClient, prefix: str, project: str, count: int = 20) -> list[dict]:
    """The newest kept rejections of ``project``."""
    return _entries(r, redis_keys.rejected(prefix, project), count)

"""Reads and writes of Observer's ClickHouse tables (events, session_batches, sessions).

Every read deduplicates by key (GROUP BY event_id, uniqExact, FINAL), so an event stored
twice -- a redelivered batch whose marker was lost -- counts once in every result.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterable

EVENT_COLUMNS = (
    "project", "session_id", "event_id", "type", "ts_ms", "received_at_ms",
    "url", "name", "anonymous_id", "metadata", "request_id", "batch_id",
)

_VERSION_BATCHES = (
    "SELECT batch_id FROM {db}.session_batches "
    "WHERE project = %(project)s AND session_id = %(session_id)s AND version = %(version)s"
)
_SESSION_FILTER = (
    "project = %(project)s AND session_id = %(session_id)s AND batch_id IN (" + _VERSION_BATCHES + ")"
)


def event_rows(batches: Iterable[dict]) -> list[tuple]:
    """Flatten ingest batches into rows in EVENT_COLUMNS order."""
    rows = []
    for b in batches:
        for e in b["events"]:
            rows.append((
                b["project"], e["session_id"], e["event_id"], e["type"], int(e["ts_ms"]),
                int(b["received_at"]), e["url"], e["name"], e["anonymous_id"], e["metadata"],
                b.get("request_id") or "", b["batch_id"],
            ))
    return rows


def insert_events(ch, batches: Iterable[dict], settings: dict | None = None) -> int:
    """Insert every event of ``batches`` in one INSERT; returns the row count."""
    return ch.insert("events", EVENT_COLUMNS, event_rows(batches), settings=settings)


def insert_session_batches(ch, rows: list[tuple], settings: dict | None = None) -> int:
    """Record (project, session_id, version, batch_id, events) mappings."""
    now = int(time.time() * 1000)
    data = [(p, s, int(v), b, int(n), now) for (p, s, v, b, n) in rows]
    return ch.insert("session_batches", ("project", "session_id", "version", "batch_id", "events", "created_ms"),
                     data, settings=settings)


def _params(project: str, session_id: str, version: int) -> dict[str, Any]:
    return {"project": project, "session_id": session_id, "version": int(version)}


def count_session_batches(ch, project: str, session_id: str, version: int) -> int:
    """Distinct batches ClickHouse shows for a session version."""
    sql = "SELECT uniqExact(batch_id) FROM {db}.session_batches WHERE project = %(project)s AND session_id = %(session_id)s AND version = %(version)s"
    return int(ch.execute(sql.format(db=ch.database), _params(project, session_id, version))[0][0])


def session_totals(ch, project: str, session_id: str, version: int, max_pages: int, max_request_ids: int) -> dict:
    """Counts by type, first/last timestamps, pages and request ids of a session version."""
    p = _params(project, session_id, version)
    where = _SESSION_FILTER.format(db=ch.database)
    db = ch.database
    by_type = ch.execute(
        f"SELECT type, uniqExact(event_id), min(ts_ms), max(ts_ms) FROM {db}.events WHERE {where} GROUP BY type", p)
    pages = ch.execute(
        f"SELECT url, min(ts_ms) AS t FROM {db}.events WHERE {where} AND url != '' "
        f"GROUP BY url ORDER BY t, url LIMIT {int(max_pages)}", p)
    request_ids = ch.execute(
        f"SELECT request_id, min(received_at_ms) AS t FROM {db}.events WHERE {where} AND request_id != '' "
        f"GROUP BY request_id ORDER BY t, request_id LIMIT {int(max_request_ids)}", p)
    counts = {str(t): int(n) for t, n, _lo, _hi in by_type}
    return {
        "event_count": sum(counts.values()),
        "counts": counts,
        "first_ts_ms": min((int(r[2]) for r in by_type), default=0),
        "last_ts_ms": max((int(r[3]) for r in by_type), default=0),
        "pages": [r[0] for r in pages],
        "request_ids": [r[0] for r in request_ids],
    }


def session_events(ch, project: str, session_id: str, version: int, limit: int) -> list[dict]:
    """Events of a session version, one per event_id, ordered by (ts_ms, event_id)."""
    db = ch.database
    rows = ch.execute(
        f"SELECT event_id, any(type), any(ts_ms) AS t, any(received_at_ms), any(session_id), any(url), "
        f"any(name), any(anonymous_id), any(metadata) FROM {db}.events "
        f"WHERE {_SESSION_FILTER.format(db=db)} GROUP BY event_id ORDER BY t, event_id LIMIT {int(limit)}",
        _params(project, session_id, version))
    keys = ("event_id", "type", "ts_ms", "received_at_ms", "session_id", "url", "name", "anonymous_id", "metadata")
    return [dict(zip(keys, r)) for r in rows]


def record_forwarded(ch, *, project: str, session_id: str, version: int, totals: dict,
                     finalized_reason: str, finalized_at_ms: int, webhook_id: str, status: str) -> None:
    """Write the forwarded session summary to the ``sessions`` table."""
    first, last = int(totals["first_ts_ms"]), int(totals["last_ts_ms"])
    ch.insert("sessions", (
        "project", "session_id", "version", "first_ts_ms", "last_ts_ms", "duration_ms", "event_count",
        "counts", "finalized_reason", "finalized_at_ms", "forwarded_at_ms", "webhook_id", "status",
    ), [(
        project, session_id, int(version), first, last, max(0, last - first), int(totals["event_count"]),
        json.dumps(totals["counts"], sort_keys=True), finalized_reason, int(finalized_at_ms),
        int(time.time() * 1000), webhook_id, status,
    )])

"""The UFSE payload: one finished session version and its events, as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339_ms(ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. 2026-11-27T10:00:00.123Z."""
    seconds, millis = divmod(int(ms), 1000)
    # Integer arithmetic keeps exact milliseconds (float division can round .123 to .122).
    moment = _EPOCH + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def webhook_id(project: str, session_id: str, version: int) -> str:
    """Return the delivery id UFSE dedupes on; stable across retries of one session version."""
    return f"{project}:{session_id}:{version}"


def build_payload(
    *,
    project: str,
    session_id: str,
    version: int,
    finalized_reason: str,
    finalized_at_ms: int,
    event_rows: list[dict],
    totals: dict,
    max_events: int,
    max_request_ids: int,
    max_pages: int,
) -> dict:
    """Build the UFSE body from ClickHouse rows (ordered, at most max_events+1) and totals."""
    events = [_event(row) for row in event_rows[:max_events]]
    event_count = int(totals.get("event_count", len(event_rows)))
    first_ms = totals.get("first_ts_ms")
    last_ms = totals.get("last_ts_ms")
    if first_ms is None and event_rows:
        first_ms = event_rows[0]["ts_ms"]
    if last_ms is None and event_rows:
        # Only a fallback: with truncation the last row read is not the session's last event.
        last_ms = max(int(row["ts_ms"]) for row in event_rows)
    session = {
        "project": project,
        "session_id": session_id,
        "version": int(version),
        "first_timestamp": None if first_ms is None else rfc3339_ms(first_ms),
        "last_timestamp": None if last_ms is None else rfc3339_ms(last_ms),
        "duration_ms": 0 if first_ms is None or last_ms is None else int(last_ms) - int(first_ms),
        "event_count": event_count,
        "counts": {str(k): int(v) for k, v in (totals.get("counts") or {}).items()},
        "pages": list(totals.get("pages") or [])[:max_pages],
        "request_ids": list(totals.get("request_ids") or [])[:max_request_ids],
        # The reader fetches max_events+1 rows so one extra row proves the cap was hit.
        "truncated": len(event_rows) > max_events or event_count > max_events,
        "finalized_reason": finalized_reason,
        "finalized_at": rfc3339_ms(finalized_at_ms),
    }
    return {"session": session, "events": events}


def encode(payload: dict) -> bytes:
    """Serialize a payload as compact UTF-8 JSON, the exact bytes that get signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _event(row: dict) -> dict:
    """Shape one ClickHouse event row for UFSE."""
    return {
        "event_id": str(row["event_id"]),
        "type": row["type"],
        "timestamp": rfc3339_ms(row["ts_ms"]),
        "received_at": rfc3339_ms(row["received_at_ms"]),
        "session_id": row["session_id"],
        "url": row["url"],
        # ClickHouse String columns hold '' for "absent"; UFSE gets null instead.
        "name": row.get("name") or None,
        "anonymous_id": row.get("anonymous_id") or None,
        "metadata": _metadata(row.get("metadata")),
    }


def _metadata(raw: Any) -> Any:
    """Parse the stored metadata JSON string back into an object."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, (dict, list)):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        # One corrupt row must not block the whole session; keep its text so nothing is lost.
        return {"_unparsed": str(raw)}

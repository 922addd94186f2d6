"""events -> ClickHouse: one INSERT for many batches, skipping batches already stored."""
from __future__ import annotations

import time

from app.observability import metrics
from app.storage import events_repo


def marker_key(prefix: str, batch_id: str) -> str:
    """Redis key saying a batch's rows are in ClickHouse."""
    return f"{prefix}batch:{batch_id}:stored"


def persist_batches(ch, redis, *, prefix: str, batches: list[dict], marker_ttl: int, insert_settings: dict | None = None) -> list[dict]:
    """Insert every not-yet-stored batch in one INSERT; returns the batches newly stored.

    A batch whose marker exists was stored by an earlier delivery and is skipped; if a crash
    lost the marker after the INSERT, the rows go in twice and ReplacingMergeTree plus
    deduplicating reads make that harmless.
    """
    unique: dict[str, dict] = {}
    for b in batches:
        unique.setdefault(b["batch_id"], b)
    ids = list(unique)
    if not ids:
        return []
    seen = redis.mget([marker_key(prefix, i) for i in ids])
    fresh = [unique[i] for i, flag in zip(ids, seen) if not flag]
    if len(fresh) < len(ids):
        metrics.BATCHES_DUPLICATE.labels("persist").inc(len(ids) - len(fresh))
    if fresh:
        started = time.perf_counter()
        try:
            n = events_repo.insert_events(ch, fresh, settings=insert_settings)
        except Exception:
            metrics.CH_ERRORS.labels("insert_events").inc()
            raise
        metrics.CH_INSERT_SECONDS.labels("events").observe(time.perf_counter() - started)
        metrics.CH_INSERT_ROWS.labels("events").inc(n)
        pipe = redis.pipeline(transaction=False)
        for b in fresh:
            pipe.set(marker_key(prefix, b["batch_id"]), "1", ex=marker_ttl)
        pipe.execute()
    return fresh


def session_summary(batch: dict) -> dict:
    """What the sessions step needs from a batch: per session (count, first ts, last ts)."""
    per: dict[str, list[int]] = {}
    for e in batch["events"]:
        s = per.get(e["session_id"])
        ts = int(e["ts_ms"])
        if s is None:
            per[e["session_id"]] = [1, ts, ts]
        else:
            s[0] += 1
            s[1] = min(s[1], ts)
            s[2] = max(s[2], ts)
    return {"batch_id": batch["batch_id"], "project": batch["project"], "request_id": batch.get("request_id", ""),
            "received_at": int(batch["received_at"]), "sessions": per}

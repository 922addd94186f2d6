"""events -> ClickHouse: one INSERT for many batches, each event stored once within the window."""
from __future__ import annotations

import time

from prometheus_client import Counter

from app.observability import metrics
from app.pipeline import dedup
from app.storage import events_repo

DEFAULT_DEDUP_WINDOW_S = 86400
# Here until app/observability/metrics.py (not this module's owner) takes it over.
EVENTS_DUPLICATE = Counter("observer_events_duplicate_total",
                           "Events dropped before storage because another batch owns them within the dedup window")


def marker_key(prefix: str, batch_id: str) -> str:
    """Redis key saying a batch's rows are in ClickHouse."""
    return f"{prefix}batch:{batch_id}:stored"


def _owned(ch, batches: list[dict], window_ms: int) -> dict[str, list[dict]]:
    """{batch_id: the events it owns}, from ClickHouse's stored carriers and this flush."""
    stored: dict[tuple[str, str], list[dedup.Key]] = {}
    by_project: dict[str, list[dict]] = {}
    for b in batches:
        by_project.setdefault(b["project"], []).append(b)
    for project, group in by_project.items():
        since = min(int(b["received_at"]) for b in group) - window_ms
        ids = [e["event_id"] for b in group for e in b["events"]]
        for event_id, rows in events_repo.stored_carriers(ch, project, ids, since).items():
            stored[(project, event_id)] = rows
    return dedup.owned_events(batches, stored, window_ms)


def persist_batches(ch, redis, *, prefix: str, batches: list[dict], marker_ttl: int,
                    insert_settings: dict | None = None, dedup_window: int = DEFAULT_DEDUP_WINDOW_S) -> list[dict]:
    """Insert the events each batch owns, for batches not yet stored, in one INSERT; returns those batches.

    Each batch owns the events no other batch stored within ``dedup_window`` seconds
    (app.pipeline.dedup). Once the INSERT returned, every batch dict passed in keeps only the
    events it owns (in place, on purpose: the caller publishes the session step from these
    dicts, so a resent event is neither stored nor counted again); after a failure the dicts are
    untouched, so a split retry decides afresh. A batch whose marker exists was stored by an
    earlier delivery and is not inserted again; if a crash lost the marker, its rows go in twice
    and collapse on the table key. Raises ClickHouseError (driver exception as ``__cause__``).
    """
    unique: dict[str, dict] = {}
    for b in batches:
        unique.setdefault(b["batch_id"], b)
    ids = list(unique)
    if not ids:
        return []
    try:
        owned = _owned(ch, list(unique.values()), int(dedup_window) * 1000)
    except Exception:
        metrics.CH_ERRORS.labels("dedup_lookup").inc()
        raise
    seen = redis.mget([marker_key(prefix, i) for i in ids])
    fresh = [unique[i] for i, flag in zip(ids, seen) if not flag]
    if len(fresh) < len(ids):
        metrics.BATCHES_DUPLICATE.labels("persist").inc(len(ids) - len(fresh))
    to_insert = [dict(b, events=owned[b["batch_id"]]) for b in fresh if owned[b["batch_id"]]]
    if to_insert:
        started = time.perf_counter()
        try:
            n = events_repo.insert_events(ch, to_insert, settings=insert_settings)
        except Exception:
            metrics.CH_ERRORS.labels("insert_events").inc()
            raise
        metrics.CH_INSERT_SECONDS.labels("events").observe(time.perf_counter() - started)
        metrics.CH_INSERT_ROWS.labels("events").inc(n)
    dropped = 0
    for b in batches:
        mine = owned[b["batch_id"]]
        dropped += len(b["events"]) - len(mine)
        b["events"] = mine
    if dropped:
        EVENTS_DUPLICATE.inc(dropped)
    if fresh:
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

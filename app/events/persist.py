"""events -> ClickHouse: one INSERT for many batches, each event stored once within the window."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from app import resources
from app.events import dedup
from app.observability import metrics
from app.storage.clickhouse import queries

if TYPE_CHECKING:
    from app.storage.clickhouse.client import ClickHouse

DEFAULT_DEDUP_WINDOW_S = 86400


def _split(ch: ClickHouse, batches: list[dict], window_ms: int,
           seen: dict[tuple[str, str], list[dedup.Key]] | None = None) -> dict[str, tuple[list[dict], list[dict]]]:
    """{batch_id: (events it owns, those not stored yet)}, from ClickHouse's event_ids and this flush;
    ``seen`` receives the stored carriers read."""
    stored: dict[tuple[str, str], list[dedup.Key]] = {}
    by_project: dict[str, list[dict]] = {}
    for b in batches:
        by_project.setdefault(b["project"], []).append(b)
    for project, group in by_project.items():
        since = min(int(b["received_at"]) for b in group) - window_ms
        ids = [e["event_id"] for b in group for e in b["events"]]
        for event_id, rows in queries.stored_carriers(ch, project, ids, since).items():
            stored[(project, event_id)] = rows
    if seen is not None:
        seen.update(stored)
    return dedup.split(batches, stored, window_ms)


def persist_batches(ch: ClickHouse, batches: list[dict], *, insert_settings: dict | None = None,
                    dedup_window: int = DEFAULT_DEDUP_WINDOW_S,
                    retention: dict[str, int] | None = None) -> list[dict]:
    """Store, in one INSERT, the events each batch owns and ClickHouse does not hold yet; returns
    the batches that had such events.

    Each batch owns the events no other batch stored within ``dedup_window`` seconds
    (app.events.dedup). ClickHouse's ``event_ids`` is the record of what is stored, so a
    redelivered batch finds its own rows there and writes nothing. Once the INSERT returned,
    every batch dict passed in keeps only the events it owns (in place, on purpose: the caller
    publishes the session step from these dicts, so a resent event is neither stored nor counted
    again); after a failure the dicts are untouched, so a split retry
    decides afresh. A batch that owns events all stored before is marked ``redelivered``.
    ``retention``: ``{project: retention_days}`` overrides, each row's retention class (else 0).
    Raises ClickHouseError (driver exception as ``__cause__``).
    """
    unique: dict[str, dict] = {}
    for b in batches:
        unique.setdefault(b["batch_id"], b)
    if not unique:
        return []
    try:
        carriers: dict[tuple[str, str], list[dedup.Key]] = {}
        parts = _split(ch, list(unique.values()), int(dedup_window) * 1000, carriers)
    except Exception:
        metrics.CH_ERRORS.labels("dedup_lookup").inc()
        raise
    fresh = [b for bid, b in unique.items() if parts[bid][1]]
    if len(fresh) < len(unique):
        metrics.BATCHES_DUPLICATE.labels("persist").inc(len(unique) - len(fresh))
    if fresh:
        started = time.perf_counter()
        try:
            classes = retention or {}
            n = queries.insert_events(ch, [dict(b, events=parts[b["batch_id"]][1],
                                                retention_days=classes.get(b["project"], 0)) for b in fresh],
                                          settings=insert_settings)
        except Exception:
            metrics.CH_ERRORS.labels("insert_events").inc()
            raise
        metrics.CH_INSERT_SECONDS.labels("events").observe(time.perf_counter() - started)
        metrics.CH_INSERT_ROWS.labels("events").inc(n)
    dropped = 0
    counted_dupes = False
    fresh_ids = {b["batch_id"] for b in fresh}
    for b in batches:
        mine = parts[b["batch_id"]][0]
        dropped += len(b["events"]) - len(mine)
        # The loss ledger's duplicates, in the batch's received minute: events another batch owns,
        # and every event of a client's resend of a whole batch (the same batch id from another
        # request: another received_at). A broker redelivery or journal re-publish is the same
        # request (its received_at is the stored one) and counts nothing.
        dupes = len(b["events"]) - len(mine) + (len(mine) if _resent(b, unique, fresh_ids, mine, carriers) else 0)
        if dupes:
            resources.ledger().add(b["project"], int(b["received_at"]), {"duplicates": dupes})
            counted_dupes = True
        b["events"] = mine
        # It owns events and every one was stored already: its own message came again (a lost
        # ack, a journal re-publish). The session step asks ClickHouse whether it was counted.
        b["redelivered"] = bool(mine) and b["batch_id"] not in fresh_ids
    if dropped:
        metrics.EVENTS_DUPLICATE.inc(dropped)
    if counted_dupes:
        # Written before the messages are acked: a redelivery after a kill would not count them again.
        resources.ledger().flush()
    return fresh


def _resent(b: dict, unique: dict[str, dict], fresh_ids: set[str], mine: list[dict],
            carriers: dict[tuple[str, str], list[dedup.Key]]) -> bool:
    """True when ``b`` is a client's second request with a batch already received."""
    if not mine:
        return False
    first = unique[b["batch_id"]]
    if first is not b:  # both copies in this flush: the first one is stored
        return int(first["received_at"]) != int(b["received_at"])
    if b["batch_id"] in fresh_ids:
        return False
    stored = [rec for rec, bid in carriers.get((b["project"], mine[0]["event_id"]), []) if bid == b["batch_id"]]
    return bool(stored) and int(b["received_at"]) not in stored


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

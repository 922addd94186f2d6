"""The events worker's work, wired to the real stores: one flush of buffered batches, the
refused batches' retries and replays, and the INSERT settings every ClickHouse write uses.

``events.persist`` hands its buffered messages to ``flush``; app/events/flush.py decides, with
plain callables, what is acked and what requeued.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from app import resources, retention
from app.broker import send_batch, send_session_update
from app.events import flush as flush_mod
from app.events.persist import persist_batches, session_summary
from app.ingest.journal import journal_for, settle_quietly
from app.names import Queue, TaskName
from app.observability import metrics
from app.retry.due import DueIndex
from app.sessions.counting import count_batches
from app.storage.clickhouse.client import Deadline

if TYPE_CHECKING:
    from celery import Celery

    from app.storage.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)
# Longest pause of the events worker between probes while ClickHouse is unavailable.
PAUSE_MAX = 30.0


def flush_budget() -> float:
    """Seconds a flush may spend starting ClickHouse calls (half the visibility timeout, less the
    time its messages already waited for the flush)."""
    s = resources.settings()
    return max(1.0, s.broker_visibility_timeout / 2 - s.events_flush_interval)


def deadline_clickhouse() -> Deadline:
    """ClickHouse that starts no call once this flush's budget is spent: a flush ends within
    budget + one call's timeout, under the visibility timeout (settings cross-check this)."""
    return Deadline(resources.clickhouse(), time.monotonic() + flush_budget())


def due_index() -> DueIndex:
    """Where refused batches wait for their next attempt."""
    return DueIndex(resources.sessions_redis(), resources.settings().redis_key_prefix, Queue.EVENTS.value)


def flush(celery: Celery, requests: list[Any]) -> dict:
    """Store buffered batches in ClickHouse and count them into their sessions, all at once;
    returns ``{"verdicts": {request id: ack|requeue}, "pause": bool, "results": {request id:
    what became of its batch}}`` (``results``: the task events Flower shows, tasks/batching.py)."""
    items: list[flush_mod.Item] = []
    verdicts: dict[str, str] = {}
    results: dict[str, dict] = {}
    for r in requests:
        try:
            batch = r.args[0]
            _ = batch["batch_id"], batch["project"], batch["events"]
            items.append(flush_mod.Item(r.id, batch, int((r.kwargs or {}).get("attempt", 0))))
            results[r.id] = {"batch_id": batch["batch_id"], "events": len(batch["events"])}
        except Exception as exc:  # unreadable message: no retry can fix it
            verdicts[r.id] = _unreadable(r, exc)
            results[r.id] = ({"outcome": "dead_lettered", "reason": f"unreadable message: {type(exc).__name__}"}
                             if verdicts[r.id] == flush_mod.ACK else
                             {"outcome": "requeued", "reason": "unreadable message; dead letter store unavailable"})
    s, ch = resources.settings(), deadline_clickhouse()
    deps = flush_mod.FlushDeps(
        insert=functools.partial(_insert, ch), count_sessions=functools.partial(_count_sessions, ch),
        publish_session_step=lambda batch: send_session_update(celery, session_summary(batch),
                                                                batch.get("request_id", "")),
        park=_park, dead_letter=_dead_letter, schedule=s.events_retry_schedule, scale=s.retry_time_scale)
    try:
        outcome = flush_mod.run_flush(items, deps)
    except Exception as exc:  # run_flush never raises by design; if it does, requeue and say so
        log.exception("events flush crashed", extra={"error": str(exc)[:300]})
        metrics.TASK_FAILURES.labels(TaskName.EVENTS_PERSIST.value).inc()
        for i in items:
            results[i.request_id].update(outcome="requeued", reason=f"flush crashed: {type(exc).__name__}")
        return {"verdicts": verdicts, "pause": True, "results": results}
    if outcome.pause:
        metrics.TASK_FAILURES.labels(TaskName.EVENTS_PERSIST.value).inc()
    verdicts.update(outcome.verdicts)
    _note_held_lag([i for i in items if outcome.verdicts.get(i.request_id) == flush_mod.REQUEUE])
    for i in items:
        results[i.request_id].update(_result(i, outcome))
    return {"verdicts": verdicts, "pause": outcome.pause, "results": results}


def _result(item: flush_mod.Item, outcome: flush_mod.Outcome) -> dict:
    """What became of one batch: stored (``stored`` of its ``events`` were new), duplicate (all
    were stored before), or the note of a batch not stored (parked, dead_lettered, requeued)."""
    note = outcome.notes.get(item.request_id)
    if note is not None:
        return {"outcome": note[0], "reason": note[1]}
    if outcome.verdicts.get(item.request_id) != flush_mod.ACK:
        return {"outcome": "requeued", "reason": "not stored in this flush"}
    # persist_batches left each batch with the events it owns; one owning none, or marked
    # redelivered (its rows were there already), stored nothing new.
    owned = len(item.batch.get("events") or ())
    if owned == 0 or item.batch.get("redelivered"):
        return {"outcome": "duplicate", "stored": 0}
    return {"outcome": "stored", "stored": owned}


def _note_held_lag(requeued: list[flush_mod.Item]) -> None:
    """Batches this flush could not count (storage away) are received and not yet counted: say
    how long they have waited, so the claim's watermark holds their sessions back. A flush that
    counts its batches reports its own lag (app/sessions/counting.py); without this, a worker
    whose every flush fails reported nothing, its last report went stale after LAG_FRESH_S, and
    the claim froze sessions whose batches were still waiting, splitting them into two versions.
    A paused worker flushes again within PAUSE_MAX (30 s), under LAG_FRESH_S (60 s)."""
    if not requeued:
        return
    now = int(time.time() * 1000)
    oldest = min(min(int(i.batch.get("received_at") or now), now) for i in requeued)
    try:
        resources.session_store().note_lag(now - oldest, at_ms=now)
    except Exception as exc:  # the sessions Redis away too: no claim can run either
        log.warning("could not report the session step's lag", extra={"error": str(exc)[:200]})


def _insert(ch: ClickHouse, batches: list[dict]) -> None:
    s = resources.settings()
    persist_batches(ch, batches, insert_settings=resources.insert_settings(), dedup_window=s.dedup_window,
                    retention=retention.classes(s.database_url))


def _count_sessions(ch: ClickHouse, batches: list[dict]) -> None:
    count_batches(resources.session_store(), ch, batches, resources.insert_settings())
    settle_quietly(resources.settings(), [b["batch_id"] for b in batches])


def _park(item: flush_mod.Item, due_at: float) -> None:
    due_index().park(item.batch["batch_id"], {"batch": item.batch, "attempt": item.attempt + 1}, due_at)
    _settle(item)


def _dead_letter(item: flush_mod.Item, error: str) -> None:
    b = item.batch
    resources.dead_letters().add("poison_batch", b["batch_id"], {"batch": b}, error,
                                 item.attempt + 1, b.get("request_id"))
    # The loss ledger: these accepted events wait in the dead letters, not in ClickHouse.
    resources.ledger().add(b["project"], int(b["received_at"]), {"poison": len(b.get("events") or [])})
    resources.ledger().flush()  # before the ack: a kill -9 must not lose it (rare path)
    _settle(item)


def _settle(item: flush_mod.Item) -> None:
    """A refused batch is kept by the due-time index or the dead letters now: its journal entry
    goes, or the journal sweep would re-publish it with no attempt count, restarting its retry
    schedule every JOURNAL_GRACE and dead-lettering it more than once. Raises (the flush then
    requeues the message; parking again is idempotent) when the broker's Redis refuses."""
    journal = journal_for(resources.settings())
    if journal is not None:
        journal.settle(item.batch["batch_id"])


def _unreadable(request: Any, exc: Exception) -> str:
    ref = f"unreadable:{request.id}"
    try:
        resources.dead_letters().add("poison_batch", ref, {"args": repr(request.args)[:100_000]},
                                     f"{type(exc).__name__}: {exc}", 1)
    except Exception:  # PostgreSQL away: keep the message for later
        return flush_mod.REQUEUE
    metrics.DEAD_LETTERS.labels("poison_batch").inc()
    log.error("unreadable events message dead-lettered", extra={"ref": ref})
    return flush_mod.ACK


def republish_due(celery: Celery, limit: int) -> int:
    """Re-publish refused batches whose retry is due; returns how many."""
    index = due_index()
    sent = []
    for member, payload in index.due(limit=limit):
        if payload is not None:
            send_batch(celery, payload["batch"], kwargs={"attempt": int(payload["attempt"])})
        sent.append(member)
    index.done(sent)
    if sent:
        metrics.DUE_REPUBLISHED.labels(Queue.EVENTS.value).inc(len(sent))
    return len(sent)


def replay_batch(celery: Celery, dead_letter_id: int) -> None:
    """Re-publish a dead-lettered batch to events.persist."""
    dlq = resources.dead_letters()
    dl = dlq.get(dead_letter_id)
    if dl is None or dl["replayed_at"] is not None:
        return
    batch = dl["payload"]["batch"]
    send_batch(celery, batch)
    dlq.mark_replayed(dead_letter_id)
    # Replayed: its events go to storage again and leave the ledger's dead letters.
    resources.ledger().add(batch["project"], int(batch["received_at"]), {"poison": -len(batch.get("events") or [])})

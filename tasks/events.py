"""Queue ``events``: batches -> ClickHouse (one INSERT per flush) -> counted into their sessions
(one pipelined round of session scripts and one ``session_batches`` INSERT per flush) -> ack."""
from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from app.broker import Queue, send_batch
from app.observability import metrics
from app.pipeline import flush as flush_mod
from app.pipeline import sessions as sessions_step
from app.pipeline.journal import journal_for
from app.pipeline.persist import persist_batches, session_summary
from app.pipeline.retries import DueIndex
from app.storage import clickhouse_migrations, cluster
from app.storage.clickhouse import Deadline
from tasks import runtime
from tasks.app import celery
from tasks.batching import AckOnSuccessBatches

if TYPE_CHECKING:
    from app.storage.clickhouse import ClickHouse

log = logging.getLogger(__name__)
_s = runtime.settings()


@functools.lru_cache(maxsize=1)
def insert_settings() -> dict | None:
    """INSERT settings for this engine, probed once per process."""
    ch = runtime.clickhouse()
    if _s.clickhouse_cluster:  # acknowledged once durable on every shard (app/storage/cluster.py)
        return cluster.insert_settings(ch, _s.clickhouse_cluster)
    # async_insert lets a server merge small INSERTs from many workers; wait_for_async_insert
    # keeps "the INSERT returned" meaning "the rows are written", which our ack relies on.
    if ch.kind == "server" and clickhouse_migrations.detect(ch).async_insert:
        return {"async_insert": 1, "wait_for_async_insert": 1}
    return None


def due_index() -> DueIndex:
    """Where refused batches wait for their next attempt."""
    return DueIndex(runtime.sessions_redis(), _s.redis_key_prefix, "events")


class EventsBatches(AckOnSuccessBatches):
    """The events task's batching, with holds and pauses from the settings."""

    hold_limit = min(25.0, _s.broker_visibility_timeout / 2 - _s.events_flush_interval)
    pause_max = _s.events_pause_max
    time_scale = _s.retry_time_scale


@celery.task(base=EventsBatches, name="events.persist", flush_every=_s.events_flush_every,
             flush_interval=_s.events_flush_interval, acks_late=True, reject_on_worker_lost=True)
def persist(requests: list[Any]) -> dict:
    """Store buffered batches in ClickHouse and count them into their sessions, all at once."""
    items: list[flush_mod.Item] = []
    verdicts: dict[str, str] = {}
    for r in requests:
        try:
            batch = r.args[0]
            _ = batch["batch_id"], batch["project"], batch["events"]
            items.append(flush_mod.Item(r.id, batch, int((r.kwargs or {}).get("attempt", 0))))
        except Exception as exc:  # unreadable message: no retry can fix it
            verdicts[r.id] = _unreadable(r, exc)
    # No ClickHouse call starts once the budget is spent: the flush ends within budget + one
    # call's timeout, under the visibility timeout (settings cross-check this).
    ch = Deadline(runtime.clickhouse(), time.monotonic() + flush_budget())
    deps = flush_mod.FlushDeps(insert=functools.partial(_insert, ch),
                               count_sessions=functools.partial(_count_sessions, ch),
                               publish_session_step=send_session_update, park=_park,
                               dead_letter=_dead_letter, schedule=_s.events_retry_schedule, scale=_s.retry_time_scale)
    try:
        outcome = flush_mod.run_flush(items, deps)
    except Exception as exc:  # run_flush never raises by design; if it does, requeue and say so
        log.exception("events flush crashed", extra={"error": str(exc)[:300]})
        metrics.TASK_FAILURES.labels("events.persist").inc()
        return {"verdicts": verdicts, "pause": True}
    if outcome.pause:
        metrics.TASK_FAILURES.labels("events.persist").inc()
    verdicts.update(outcome.verdicts)
    return {"verdicts": verdicts, "pause": outcome.pause}


def flush_budget() -> float:
    """Seconds a flush may spend starting ClickHouse calls (half the visibility timeout, less the
    time its messages already waited for the flush)."""
    return max(1.0, _s.broker_visibility_timeout / 2 - _s.events_flush_interval)


def _insert(ch: ClickHouse, batches: list[dict]) -> None:
    persist_batches(ch, runtime.sessions_redis(), prefix=_s.redis_key_prefix,
                    batches=batches, marker_ttl=_s.batch_marker_ttl, insert_settings=insert_settings(),
                    dedup_window=_s.dedup_window)


def _count_sessions(ch: ClickHouse, batches: list[dict]) -> None:
    sessions_step.count_batches(runtime.session_store(), ch, batches, insert_settings())
    _settle([b["batch_id"] for b in batches])


def _settle(batch_ids: list[str]) -> None:
    """The batches are counted: drop their ingest-journal entries (best effort: a leftover
    entry is re-published once by the sweep and counts nothing, see count_batches)."""
    journal = journal_for(_s)
    if journal is None:
        return
    try:
        journal.settle_many(batch_ids)
    except Exception as exc:  # the broker's Redis away for a moment
        log.warning("journal settle failed", extra={"batches": len(batch_ids), "error": str(exc)[:200]})


def send_session_update(batch: dict) -> None:
    """Publish the session step of one stored batch as a task (the fallback when the flush's
    own session step fails as data)."""
    summary = session_summary(batch)
    # Task events and Flower show ids and counts only (argsrepr), never the batch's contents.
    celery.send_task("sessions.update", args=[summary], queue=Queue.SESSIONS.value,
                     argsrepr=summary_repr(summary), kwargsrepr="{}",
                     headers={"request_id": batch.get("request_id", "")},
                     retry=True, retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5})


def summary_repr(summary: dict) -> str:
    """argsrepr of a ``sessions.update`` message: its batch id and counts."""
    sessions = summary.get("sessions") or {}
    events = sum(c[0] for c in sessions.values())
    return f"[<summary {summary.get('batch_id', '?')}: {len(sessions)} sessions, {events} events>]"


def _park(item: flush_mod.Item, due_at: float) -> None:
    due_index().park(item.batch["batch_id"], {"batch": item.batch, "attempt": item.attempt + 1}, due_at)


def _dead_letter(item: flush_mod.Item, error: str) -> None:
    runtime.dead_letters().add("poison_batch", item.batch["batch_id"], {"batch": item.batch}, error,
                               item.attempt + 1, item.batch.get("request_id"))


def _unreadable(request: Any, exc: Exception) -> str:
    ref = f"unreadable:{request.id}"
    try:
        runtime.dead_letters().add("poison_batch", ref, {"args": repr(request.args)[:100_000]},
                                   f"{type(exc).__name__}: {exc}", 1)
    except Exception:  # PostgreSQL away: keep the message for later
        return flush_mod.REQUEUE
    metrics.DEAD_LETTERS.labels("poison_batch").inc()
    log.error("unreadable events message dead-lettered", extra={"ref": ref})
    return flush_mod.ACK


def republish_due(limit: int) -> int:
    """Re-publish refused batches whose retry is due; returns how many."""
    index = due_index()
    due = index.due(limit=limit)
    sent = []
    for member, payload in due:
        if payload is not None:
            batch = payload["batch"]
            send_batch(celery, batch, kwargs={"attempt": int(payload["attempt"])})
        sent.append(member)
    index.done(sent)
    if sent:
        metrics.DUE_REPUBLISHED.labels("events").inc(len(sent))
    return len(sent)


@celery.task(name="events.replay_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def replay_batch(dead_letter_id: int) -> None:
    """Re-publish a dead-lettered batch to events.persist."""
    dl = runtime.dead_letters().get(dead_letter_id)
    if dl is None or dl["replayed_at"] is not None:
        return
    batch = dl["payload"]["batch"]
    send_batch(celery, batch)
    runtime.dead_letters().mark_replayed(dead_letter_id)

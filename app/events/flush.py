"""One events flush with failure isolation: which buffered messages to ack, which to requeue.

- Everything inserted (one INSERT for the whole flush), then counted into its sessions (one
  pipelined round of session scripts and one ``session_batches`` INSERT for the whole flush):
  ack all. Should the session step fail as data (never seen; a bug), each batch's step is
  published as a ``sessions.update`` task instead, so one bad batch cannot hold the others.
- ClickHouse or Redis unavailable, overloaded, timing out (``transient``): requeue all, count
  no attempt, and ask the worker to pause before the next try. An outage is a delay, never a
  dead letter.
- ClickHouse rejects the data: split the flush in halves and insert each, until the failing
  batch stands alone; only it is parked for a retry on ``EVENTS_RETRY_SCHEDULE`` (durably, in
  the due-time index) and, once the schedule is spent, becomes a ``poison_batch`` dead letter.
  Its neighbours are stored at once and their attempt counts never move.
- A message that cannot even be read as a batch is a dead letter at once.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.observability import metrics
from app.retry.backoff import schedule_delay
from app.storage import redis_clients
from app.storage.clickhouse.client import ClickHouseError

log = logging.getLogger(__name__)

ACK, REQUEUE = "ack", "requeue"


@dataclass
class Item:
    """One buffered message: its request id, its batch and how often ClickHouse refused it."""

    request_id: str
    batch: dict
    attempt: int = 0


@dataclass
class Outcome:
    """Per-request verdicts and whether storage asked for a pause."""

    verdicts: dict[str, str] = field(default_factory=dict)
    pause: bool = False
    #: why a request was not stored: ``{request id: (parked|dead_lettered|requeued, reason)}``
    notes: dict[str, tuple[str, str]] = field(default_factory=dict)
    inserts: int = 0
    stored: list[Item] = field(default_factory=list)


def is_transient(exc: BaseException) -> bool:
    """True for failures that waiting fixes (outage, overload), False for data errors."""
    if isinstance(exc, ClickHouseError):
        return exc.transient
    return redis_clients.is_transient(exc)


@dataclass
class FlushDeps:
    """What a flush needs from the outside world (plain callables, testable without a broker)."""

    insert: Callable[[list[dict]], object]  # raises on failure
    count_sessions: Callable[[list[dict]], object]  # the session step of every stored batch; raises on failure
    # one batch's step as a task (fallback); raises when the broker is unavailable
    publish_session_step: Callable[[dict], None]
    park: Callable[[Item, float], None]  # keep the batch durably until a retry is due
    dead_letter: Callable[[Item, str], None]
    schedule: tuple[float, ...]
    scale: float = 1.0
    rng: Callable[[], float] | None = None


def run_flush(items: list[Item], deps: FlushDeps) -> Outcome:
    """Store ``items``, isolating any batch ClickHouse refuses; never raises."""
    out = Outcome()
    _store(items, deps, out)
    _count(out.stored, deps, out)
    return out


def _store(items: list[Item], deps: FlushDeps, out: Outcome) -> None:
    if not items:
        return
    if out.pause:  # storage already said "not now" in this flush: do not hammer it
        _mark(out, items, REQUEUE, "storage unavailable earlier in this flush")
        return
    try:
        out.inserts += 1
        deps.insert([i.batch for i in items])
    except Exception as exc:  # classified below; nothing escapes a flush
        if is_transient(exc):
            log.warning("events storage unavailable; pausing", extra={"error": _short(exc), "batches": len(items)})
            out.pause = True
            _mark(out, items, REQUEUE, f"storage unavailable: {_short(exc)}")
            return
        if len(items) > 1:
            mid = len(items) // 2
            metrics.FLUSH_SPLITS.inc()
            _store(items[:mid], deps, out)
            _store(items[mid:], deps, out)
            return
        _refused(items[0], exc, deps, out)
        return
    out.stored.extend(items)


def _count(stored: list[Item], deps: FlushDeps, out: Outcome) -> None:
    """Count the stored batches into their sessions; ack them only once that is done."""
    if not stored:
        return
    try:
        deps.count_sessions([i.batch for i in stored])
    except Exception as exc:  # classified below
        if is_transient(exc):
            # The events are stored; redelivered, these batches find their rows and are counted then.
            log.warning("session step unavailable; requeueing", extra={"error": _short(exc), "batches": len(stored)})
            out.pause = True
            _mark(out, stored, REQUEUE, f"session step unavailable: {_short(exc)}")
            return
        log.error("session step failed; publishing it per batch", extra={"error": _short(exc), "batches": len(stored)})
        metrics.TASK_FAILURES.labels("events.count_sessions").inc()
        for item in stored:
            try:
                deps.publish_session_step(item.batch)
                out.verdicts[item.request_id] = ACK
            except Exception as pub_exc:  # broker gone too: redelivery tries again
                log.warning("session step not published; requeueing", extra={"error": _short(pub_exc),
                                                                              "batch_id": item.batch.get("batch_id")})
                out.verdicts[item.request_id] = REQUEUE
                out.notes[item.request_id] = ("requeued", f"session step not published: {_short(pub_exc)}")
        return
    _mark(out, stored, ACK)


def _refused(item: Item, exc: BaseException, deps: FlushDeps, out: Outcome) -> None:
    """The batch alone was refused as data: park it for a later retry, or dead-letter it."""
    error = _short(exc)
    delay = schedule_delay(deps.schedule, item.attempt, deps.scale, *( [deps.rng] if deps.rng else []))
    try:
        if delay is None:
            deps.dead_letter(item, error)
            out.notes[item.request_id] = ("dead_lettered", error)
            metrics.DEAD_LETTERS.labels("poison_batch").inc()
            log.error("batch dead-lettered",
                      extra={"batch_id": item.batch.get("batch_id"), "attempts": item.attempt + 1, "error": error})
        else:
            deps.park(item, time.time() + delay)
            out.notes[item.request_id] = ("parked", f"retry in {delay:.1f} s: {error}")
            metrics.EVENTS_PARKED.inc()
            log.warning("batch refused by ClickHouse; retry parked", extra={
                "batch_id": item.batch.get("batch_id"), "attempt": item.attempt + 1, "retry_in_s": round(delay, 1),
                "error": error})
        out.verdicts[item.request_id] = ACK
    except Exception as park_exc:  # PostgreSQL/Redis unavailable: keep the message instead
        log.warning("could not park or dead-letter a refused batch", extra={"error": _short(park_exc)})
        out.pause = True
        out.verdicts[item.request_id] = REQUEUE
        out.notes[item.request_id] = ("requeued", f"refused ({error}); could not park: {_short(park_exc)}")


def _mark(out: Outcome, items: list[Item], verdict: str, why: str = "") -> None:
    for i in items:
        out.verdicts[i.request_id] = verdict
        if why:
            out.notes[i.request_id] = ("requeued", why)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]

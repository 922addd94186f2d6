"""Queue ``forward``: deliver finished sessions to UFSE; retries wait in the due-time index.

A retryable answer (network error, 408, 429, 5xx) parks the delivery in the ``forward``
due-time index for the next step of ``FORWARD_RETRY_SCHEDULE`` (about a day in all) and acks
the message: no Celery countdown holds a message for minutes. A circuit per destination stops
every waiting session from hitting a UFSE that is down; when a probe succeeds, every parked
delivery is released and the maintenance sweep drains them at ``FORWARD_DRAIN_RATE``.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import psycopg2
import redis
from celery import Task
from celery.exceptions import Reject, Retry

from app.broker import Queue
from app.forwarding.circuit import Circuit
from app.observability import metrics
from app.pipeline import forward as forward_step
from app.pipeline.flush import is_transient
from app.pipeline.retries import DueIndex, schedule_delay
from app.storage import events_repo
from app.storage.clickhouse import ClickHouse, ClickHouseError, Deadline
from tasks import runtime
from tasks.app import celery
from tasks.events import EventsBatches, flush_budget, insert_settings

if TYPE_CHECKING:
    from app.sessions.store import SessionStore

log = logging.getLogger(__name__)
_s = runtime.settings()
SEP = "\x1f"
# Our own storage being down is worth waiting out: a few short countdowns (held by the worker,
# each well under the visibility timeout), then the delivery is parked for a minute.
INFRA_ERRORS = (ClickHouseError, redis.RedisError, redis.exceptions.RedisClusterException, psycopg2.OperationalError,
                psycopg2.InterfaceError)
_INFRA_COUNTDOWNS = 4


def due_index() -> DueIndex:
    """Where deliveries wait for their next attempt."""
    return DueIndex(runtime.sessions_redis(), _s.redis_key_prefix, "forward")


def circuit() -> Circuit:
    """The circuit of the UFSE destination (by host, shared by every forward worker)."""
    host = urlparse(_s.ufse_url).netloc or "ufse"
    return Circuit(runtime.sessions_redis(), _s.redis_key_prefix, host, threshold=_s.forward_circuit_threshold,
                   max_pause=_s.forward_circuit_max, scale=_s.retry_time_scale)


def member(project: str, session_id: str, version: int) -> str:
    """The due-index member of one session version."""
    return f"{project}{SEP}{session_id}{SEP}{int(version)}"


def _park(project: str, session_id: str, version: int, attempt: int, due_at: float, reason: str) -> None:
    due_index().park(member(project, session_id, version), {"attempt": attempt}, due_at)
    metrics.FORWARD_PARKED.labels(reason).inc()


def _dead_letter(prepared: forward_step.Prepared | None, ref: str, error: str, attempts: int,
                 extra: dict | None = None) -> int:
    data = prepared.as_dead_letter() if prepared else dict(extra or {})
    dl_id = runtime.dead_letters().add("undeliverable_forward", ref, data, error, attempts)
    metrics.DEAD_LETTERS.labels("undeliverable_forward").inc()
    log.error("forward dead-lettered", extra={"webhook_id": ref, "dead_letter_id": dl_id, "error": error})
    return dl_id


def _countdown_retry(task: Task, countdown: float, **kwargs: Any) -> Retry:
    """``task.retry`` that requeues the message instead of dropping it if the broker is down."""
    try:
        return task.retry(kwargs=kwargs, countdown=countdown)
    except Retry:
        raise
    except Reject as exc:  # Celery drops the message when publishing the retry fails; keep it
        raise Reject(exc, requeue=True) from None


@celery.task(bind=True, name="forward.deliver", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def deliver(self: Task, project: str, session_id: str, version: int, attempt: int = 0, waits: int = 0,
            due: bool = False, infra: int = 0) -> str:
    """Deliver one claimed session version to UFSE (``due``: re-published by the sweep)."""
    args = {"attempt": attempt, "waits": waits, "due": due}
    try:
        return _deliver(self, project, session_id, version, attempt, waits, due)
    except INFRA_ERRORS as exc:
        metrics.TASK_FAILURES.labels("forward.deliver").inc()
        log.warning("forward: storage unavailable",
                    extra={"webhook_id": f"{project}:{session_id}:{version}", "error": str(exc)[:300]})
        if infra < _INFRA_COUNTDOWNS:
            raise _countdown_retry(self, min(_s.sessions_retry_max, 2.0 ** infra * _s.retry_time_scale * 2),
                                   **args, infra=infra + 1) from None
        try:
            _park(project, session_id, version, attempt, time.time() + 60 * _s.retry_time_scale, "storage")
        except INFRA_ERRORS:
            # Nowhere to park: the claimed session stays in the outbox and the stale sweep
            # re-enqueues it (FORWARD_OUTBOX_STALE).
            log.error("forward deferred to the outbox sweep", extra={"webhook_id": f"{project}:{session_id}:{version}"})
            return "deferred"
        return "parked"


def _deliver(task: Task, project: str, session_id: str, version: int, attempt: int, waits: int, due: bool) -> str:
    store, ch, index = runtime.session_store(), runtime.clickhouse(), due_index()
    ref = f"{project}:{session_id}:{version}"
    m = member(project, session_id, version)
    if not due:
        parked = index.due_at(m)
        if parked is not None and parked > time.time():
            return "scheduled"  # a stale-outbox re-enqueue of a parked retry: the sweep sends it when due
    snap = store.snapshot(project, session_id, version)
    if snap is None:
        index.done([m])
        log.info("forward: nothing to do (already delivered or dead-lettered)", extra={"webhook_id": ref})
        return "gone"
    try:
        prepared = forward_step.prepare(ch, snap, project=project, session_id=session_id, version=version, settings=_s)
    except forward_step.NotVisibleYet as exc:
        if waits >= _s.forward_visibility_retries:
            _dead_letter(None, ref, f"events never became visible: {exc}", attempt,
                         {"project": project, "session_id": session_id, "version": version, "snapshot": snap})
            store.complete(project, session_id, version)
            index.done([m])
            return "dead_lettered"
        raise _countdown_retry(task, min(2 ** waits, 30), attempt=attempt, waits=waits + 1, due=True) from None
    if prepared.empty:
        # Every event it counted belongs to an earlier version (a resend after that version
        # was finalized): there is nothing new to tell UFSE, and no empty session is sent.
        log.info("forward: version owns no events; not delivered", extra={"webhook_id": ref})
        _finish(store, ch, index, prepared, "empty")
        return "empty"
    client = runtime.ufse_client()
    if client is None:
        _dead_letter(prepared, ref, "UFSE_URL is not configured", attempt)
        _finish(store, ch, index, prepared, "dead_lettered")
        return "dead_lettered"
    breaker = circuit()
    allowed, until, probe = breaker.allow()
    if not allowed:
        if _past_horizon(snap):
            return _give_up(store, ch, index, prepared, ref, "UFSE unavailable for the whole retry horizon", attempt)
        _park(project, session_id, version, attempt, until, "circuit")
        return "held"
    result = forward_step.send(client, prepared)
    if result.outcome == "delivered":
        _finish(store, ch, index, prepared, "delivered")
        if breaker.success():
            released = index.release_all()
            log.warning("UFSE answers again; releasing parked deliveries", extra={"released": released})
        return "delivered"
    if result.outcome == "retry":
        until = breaker.failure()
        if probe and not _past_horizon(snap):
            # A failed probe says "UFSE is still down", nothing about this session: it waits
            # behind the circuit again without spending an attempt of its schedule.
            _park(project, session_id, version, attempt, max(until, time.time() + 1), "circuit")
            return "held"
        delay = schedule_delay(_s.forward_retry_schedule, attempt, _s.retry_time_scale)
        if delay is not None:
            # Honour the receiver's Retry-After: it may only lengthen the wait.
            delay = max(delay, result.retry_after or 0.0)
            _park(project, session_id, version, attempt + 1, time.time() + delay, "retry")
            log.info("forward retry parked",
                     extra={"webhook_id": ref, "attempt": attempt + 1, "retry_in_s": round(delay, 1)})
            return "retrying"
    _dead_letter(prepared, ref, f"{result.outcome}: status={result.status} {result.error or ''}".strip(), attempt + 1)
    _finish(store, ch, index, prepared, "dead_lettered")
    return "dead_lettered"


def _past_horizon(snap: dict) -> bool:
    """True once a version was finalized longer ago than the whole retry schedule."""
    horizon = sum(_s.forward_retry_schedule) * _s.retry_time_scale
    finalized = int(snap.get("finalized_ms") or 0) / 1000.0
    return finalized > 0 and time.time() - finalized > horizon


def _give_up(store: SessionStore, ch: ClickHouse, index: DueIndex, prepared: forward_step.Prepared, ref: str,
             error: str, attempt: int) -> str:
    _dead_letter(prepared, ref, error, attempt)
    _finish(store, ch, index, prepared, "dead_lettered")
    return "dead_lettered"


def _finish(store: SessionStore, ch: ClickHouse, index: DueIndex, prepared: forward_step.Prepared, status: str) -> None:
    """Forget the snapshot and any parked retry; record the session in ClickHouse (a failure
    there is logged, not retried, since retrying would repeat a delivery UFSE accepted)."""
    store.complete(prepared.project, prepared.session_id, prepared.version)
    index.done([member(prepared.project, prepared.session_id, prepared.version)])
    row = forward_step.session_row(prepared, status)
    try:
        # Batched: the events worker writes many sessions rows per INSERT (forward.record).
        celery.send_task("forward.record", args=[row], queue=Queue.EVENTS.value,
                         argsrepr=f"[<sessions row {prepared.webhook_id}>]", kwargsrepr="{}")
        return
    except Exception as exc:  # broker away: write it now rather than lose it
        log.warning("forward.record not published; writing the row at once", extra={"error": str(exc)[:200]})
    try:
        events_repo.insert_session_rows(ch, [row])
    except ClickHouseError as exc:
        metrics.CH_ERRORS.labels("record_session").inc()
        log.error("could not record forwarded session", extra={"webhook_id": prepared.webhook_id, "error": str(exc)})


class RecordBatches(EventsBatches):
    """forward.record's batching: the events worker's holds and pauses, a buffer of its own."""


@celery.task(base=RecordBatches, name="forward.record", flush_every=_s.events_flush_every,
             flush_interval=_s.events_flush_interval, acks_late=True, reject_on_worker_lost=True)
def record(requests: list[Any]) -> dict:
    """Write the ``sessions`` rows of forwarded versions, one INSERT per flush.

    Routed to the ``events`` queue, whose worker holds many messages (a batches task needs
    them); an outage requeues and pauses like an events flush; rows ClickHouse refuses as data
    are logged and dropped (the delivery already happened; nothing retried could fix them).
    """
    rows, verdicts = [], {}
    for r in requests:
        rows.append(r.args[0])
    try:
        events_repo.insert_session_rows(Deadline(runtime.clickhouse(), time.monotonic() + flush_budget()), rows,
                                        settings=insert_settings())
    except Exception as exc:  # classified: an outage waits, a data error is dropped loudly
        if is_transient(exc):
            log.warning("sessions rows not written; requeueing", extra={"rows": len(rows), "error": str(exc)[:300]})
            return {"verdicts": {}, "pause": True}
        metrics.CH_ERRORS.labels("record_session").inc()
        log.error("sessions rows refused by ClickHouse; dropped", extra={"rows": len(rows), "error": str(exc)[:300],
                                                                         "webhook_ids": [row[11] for row in rows[:10]]})
    else:
        metrics.CH_INSERT_ROWS.labels("sessions").inc(len(rows))
    for r in requests:
        verdicts[r.id] = "ack"
    return {"verdicts": verdicts, "pause": False}


def release_due(sweep_interval: float) -> int:
    """Re-publish parked deliveries that are due, gated by the circuit and the drain rate."""
    index = due_index()
    if _s.ufse_url:
        until = circuit().open_until()
        if until > 0:
            # Open: nothing is released but a single probe once the pause is over.
            limit = 1 if time.time() >= until else 0
        else:
            limit = max(1, int(_s.forward_drain_rate * max(sweep_interval, 1.0)))
    else:
        limit = max(1, int(_s.forward_drain_rate * max(sweep_interval, 1.0)))
    if limit == 0:
        return 0
    due = index.due(limit=limit)
    sent = []
    for m, payload in due:
        project, session_id, version = m.split(SEP)
        celery.send_task("forward.deliver", args=[project, session_id, int(version)],
                         kwargs={"attempt": int((payload or {}).get("attempt", 0)), "due": True}, queue="forward")
        sent.append(m)
    # Forget only after publishing: a crash in between publishes again, and delivery is
    # idempotent on the snapshot (a delivered version has none).
    index.done(sent)
    if sent:
        metrics.DUE_REPUBLISHED.labels("forward").inc(len(sent))
    return len(sent)


@celery.task(bind=True, name="forward.replay", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def replay(self: Task, dead_letter_id: int, attempt: int = 0) -> str:
    """Deliver a dead-lettered session again (same webhook-id, fresh signature)."""
    dlq = runtime.dead_letters()
    row = dlq.get(dead_letter_id)
    if row is None or row["replayed_at"] is not None:
        return "skipped"
    data = row["payload"]
    try:
        if "payload" in data:
            prepared = forward_step.Prepared.from_dead_letter(data)
        else:  # dead-lettered before a payload existed (events not visible): rebuild it now
            # An operator's replay builds from what ClickHouse holds now: the snapshot is old, and
            # re-checking it could never succeed (a batch counted twice).
            prepared = forward_step.prepare(runtime.clickhouse(), data["snapshot"], project=data["project"],
                                       session_id=data["session_id"], version=int(data["version"]), settings=_s,
                                       wait_for_writes=False)
    except forward_step.NotVisibleYet as exc:
        dlq.record_failure(dead_letter_id, f"events still not visible: {exc}")
        return "failed"
    except INFRA_ERRORS:
        if attempt < _INFRA_COUNTDOWNS:
            raise _countdown_retry(self, min(_s.sessions_retry_max, 2.0 ** attempt * 2), attempt=attempt + 1) from None
        raise
    client = runtime.ufse_client()
    if client is None:
        dlq.record_failure(dead_letter_id, "UFSE_URL is not configured")
        return "failed"
    result = forward_step.send(client, prepared)
    if result.outcome == "delivered":
        dlq.mark_replayed(dead_letter_id)
        try:
            forward_step.record(runtime.clickhouse(), prepared, "delivered")
        except ClickHouseError as exc:
            log.error("could not record replayed session", extra={"webhook_id": prepared.webhook_id, "error": str(exc)})
        return "delivered"
    if result.outcome == "retry" and attempt < _INFRA_COUNTDOWNS:
        # An operator is waiting on a replay: a few short tries, then it stays pending.
        raise _countdown_retry(self, min(_s.sessions_retry_max, max(2.0 ** attempt * 2, result.retry_after or 0)),
                               attempt=attempt + 1) from None
    dlq.record_failure(dead_letter_id, f"{result.outcome}: status={result.status} {result.error or ''}".strip())
    return "failed"

"""Queue ``forward``: deliver finished sessions to UFSE with backoff; dead-letter the rest."""
from __future__ import annotations

import logging

import psycopg2
import redis

from app.forwarding import service
from app.forwarding.backoff import backoff_delay
from app.observability import metrics
from app.storage.clickhouse import ClickHouseError
from tasks import runtime
from tasks.app import celery

log = logging.getLogger(__name__)
_s = runtime.settings()
# Our own storage being down is worth waiting out; the claimed session stays in the outbox, so
# even after these retries run out the beat sweep re-enqueues it (FORWARD_OUTBOX_STALE).
INFRA_ERRORS = (ClickHouseError, redis.ConnectionError, redis.TimeoutError, psycopg2.OperationalError)


def _retry_delay(attempt: int, retry_after: float | None) -> float:
    delay = backoff_delay(attempt, base=_s.forward_backoff_base, cap=_s.forward_backoff_max)
    # Honour the receiver's Retry-After, within our cap (the visibility timeout exceeds it).
    return min(max(delay, retry_after or 0.0), _s.forward_backoff_max)


def _dead_letter(prepared: service.Prepared | None, ref: str, error: str, attempts: int, extra: dict | None = None) -> int:
    data = prepared.as_dead_letter() if prepared else dict(extra or {})
    dl_id = runtime.dead_letters().add("undeliverable_forward", ref, data, error, attempts)
    metrics.DEAD_LETTERS.labels("undeliverable_forward").inc()
    log.error("forward dead-lettered", extra={"webhook_id": ref, "dead_letter_id": dl_id, "error": error})
    return dl_id


@celery.task(bind=True, name="forward.deliver", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def deliver(self, project: str, session_id: str, version: int, attempt: int = 0, waits: int = 0) -> str:
    """Deliver one claimed session version to UFSE."""
    try:
        return _deliver(self, project, session_id, version, attempt, waits)
    except INFRA_ERRORS as exc:
        metrics.TASK_FAILURES.labels("forward.deliver").inc()
        if waits >= _s.forward_visibility_retries:
            log.error("forward gave up for now; the outbox sweep will retry",
                      extra={"webhook_id": f"{project}:{session_id}:{version}", "error": str(exc)})
            return "deferred"
        log.warning("forward: storage unavailable, retrying", extra={"error": str(exc)})
        raise self.retry(kwargs={"attempt": attempt, "waits": waits + 1}, countdown=_retry_delay(waits, None))


def _deliver(task, project: str, session_id: str, version: int, attempt: int, waits: int) -> str:
    store, ch = runtime.session_store(), runtime.clickhouse()
    ref = f"{project}:{session_id}:{version}"
    snap = store.snapshot(project, session_id, version)
    if snap is None:
        log.info("forward: nothing to do (already delivered or dead-lettered)", extra={"webhook_id": ref})
        return "gone"
    try:
        prepared = service.prepare(ch, snap, project=project, session_id=session_id, version=version, settings=_s)
    except service.NotVisibleYet as exc:
        if waits >= _s.forward_visibility_retries:
            _dead_letter(None, ref, f"events never became visible: {exc}", attempt,
                         {"project": project, "session_id": session_id, "version": version, "snapshot": snap})
            store.complete(project, session_id, version)
            return "dead_lettered"
        raise task.retry(kwargs={"attempt": attempt, "waits": waits + 1}, countdown=min(2 ** waits, 30))
    client = runtime.ufse_client()
    if client is None:
        _dead_letter(prepared, ref, "UFSE_URL is not configured", attempt)
        store.complete(project, session_id, version)
        return "dead_lettered"
    result = service.send(client, prepared)
    if result.outcome == "delivered":
        _finish(store, ch, prepared, "delivered")
        return "delivered"
    if result.outcome == "retry" and attempt < _s.forward_max_retries:
        raise task.retry(kwargs={"attempt": attempt + 1, "waits": waits},
                         countdown=_retry_delay(attempt, result.retry_after))
    _dead_letter(prepared, ref, f"{result.outcome}: status={result.status} {result.error or ''}".strip(), attempt + 1)
    _finish(store, ch, prepared, "dead_lettered")
    return "dead_lettered"


def _finish(store, ch, prepared: service.Prepared, status: str) -> None:
    """Forget the snapshot; record the session in ClickHouse (a failure there is logged, not retried,
    since retrying would repeat a delivery UFSE already accepted)."""
    store.complete(prepared.project, prepared.session_id, prepared.version)
    try:
        service.record(ch, prepared, status)
    except ClickHouseError as exc:
        metrics.CH_ERRORS.labels("record_session").inc()
        log.error("could not record forwarded session", extra={"webhook_id": prepared.webhook_id, "error": str(exc)})


@celery.task(bind=True, name="forward.replay", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def replay(self, dead_letter_id: int, attempt: int = 0) -> str:
    """Deliver a dead-lettered session again (same webhook-id, fresh signature)."""
    dlq = runtime.dead_letters()
    row = dlq.get(dead_letter_id)
    if row is None or row["replayed_at"] is not None:
        return "skipped"
    data = row["payload"]
    try:
        if "payload" in data:
            prepared = service.Prepared.from_dead_letter(data)
        else:  # dead-lettered before a payload existed (events not visible): rebuild it now
            prepared = service.prepare(runtime.clickhouse(), data["snapshot"], project=data["project"],
                                       session_id=data["session_id"], version=int(data["version"]), settings=_s)
    except service.NotVisibleYet as exc:
        dlq.record_failure(dead_letter_id, f"events still not visible: {exc}")
        return "failed"
    except INFRA_ERRORS as exc:
        raise self.retry(kwargs={"attempt": attempt + 1}, countdown=_retry_delay(attempt, None), exc=exc)
    client = runtime.ufse_client()
    if client is None:
        dlq.record_failure(dead_letter_id, "UFSE_URL is not configured")
        return "failed"
    result = service.send(client, prepared)
    if result.outcome == "delivered":
        dlq.mark_replayed(dead_letter_id)
        try:
            service.record(runtime.clickhouse(), prepared, "delivered")
        except ClickHouseError as exc:
            log.error("could not record replayed session", extra={"webhook_id": prepared.webhook_id, "error": str(exc)})
        return "delivered"
    if result.outcome == "retry" and attempt < _s.forward_max_retries:
        raise self.retry(kwargs={"attempt": attempt + 1}, countdown=_retry_delay(attempt, result.retry_after))
    dlq.record_failure(dead_letter_id, f"{result.outcome}: status={result.status} {result.error or ''}".strip())
    return "failed"

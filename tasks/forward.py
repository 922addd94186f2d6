"""Queue ``forward``: deliver finished sessions to UFSE with backoff; dead-letter the rest."""
from __future__ import annotations

import logging

from app.forwarding import service
from app.forwarding.backoff import backoff_delay
from app.observability import metrics
from tasks import runtime
from tasks.app import celery

log = logging.getLogger(__name__)
_s = runtime.settings()


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
    store, ch = runtime.session_store(), runtime.clickhouse()
    ref = f"{project}:{session_id}:{version}"
    snap = store.snapshot(project, session_id, version)
    if snap is None:
        return "gone"  # already delivered or dead-lettered by an earlier copy of this task
    try:
        prepared = service.prepare(ch, snap, project=project, session_id=session_id, version=version, settings=_s)
    except service.NotVisibleYet as exc:
        if waits >= _s.forward_visibility_retries:
            _dead_letter(None, ref, f"events never became visible: {exc}", attempt,
                         {"project": project, "session_id": session_id, "version": version, "snapshot": snap})
            store.complete(project, session_id, version)
            return "dead_lettered"
        raise self.retry(kwargs={"attempt": attempt, "waits": waits + 1}, countdown=min(2 ** waits, 30))
    client = runtime.ufse_client()
    if client is None:
        _dead_letter(prepared, ref, "UFSE_URL is not configured", attempt)
        store.complete(project, session_id, version)
        return "dead_lettered"
    result = service.send(client, prepared)
    if result.outcome == "delivered":
        service.record(ch, prepared, "delivered")
        store.complete(project, session_id, version)
        return "delivered"
    if result.outcome == "retry" and attempt < _s.forward_max_retries:
        raise self.retry(kwargs={"attempt": attempt + 1, "waits": waits},
                         countdown=_retry_delay(attempt, result.retry_after))
    _dead_letter(prepared, ref, f"{result.outcome}: status={result.status} {result.error or ''}".strip(), attempt + 1)
    service.record(ch, prepared, "dead_lettered")
    store.complete(project, session_id, version)
    return "dead_lettered"


@celery.task(bind=True, name="forward.replay", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def replay(self, dead_letter_id: int, attempt: int = 0) -> str:
    """Deliver a dead-lettered session again (same webhook-id, fresh signature)."""
    dlq = runtime.dead_letters()
    row = dlq.get(dead_letter_id)
    if row is None or row["replayed_at"] is not None or "payload" not in row["payload"]:
        return "skipped"
    prepared = service.Prepared.from_dead_letter(row["payload"])
    client = runtime.ufse_client()
    if client is None:
        dlq.record_failure(dead_letter_id, "UFSE_URL is not configured")
        return "failed"
    result = service.send(client, prepared)
    if result.outcome == "delivered":
        dlq.mark_replayed(dead_letter_id)
        service.record(runtime.clickhouse(), prepared, "delivered")
        return "delivered"
    if result.outcome == "retry" and attempt < _s.forward_max_retries:
        raise self.retry(kwargs={"attempt": attempt + 1}, countdown=_retry_delay(attempt, result.retry_after))
    dlq.record_failure(dead_letter_id, f"{result.outcome}: status={result.status} {result.error or ''}".strip())
    return "failed"

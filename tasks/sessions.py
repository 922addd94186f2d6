"""Queue ``sessions``: count each stored batch into its sessions."""
from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import Reject, Retry

from app.observability import metrics
from app.pipeline import sessions as pipeline
from app.pipeline.backoff import backoff_delay
from app.pipeline.flush import is_transient
from app.pipeline.journal import journal_for
from tasks import runtime
from tasks.app import celery
from tasks.events import insert_settings, summary_repr

log = logging.getLogger(__name__)
_s = runtime.settings()


@celery.task(bind=True, name="sessions.update", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             max_retries=None)
def update(self: Task, summary: dict) -> dict:
    """Count one stored batch into its sessions."""
    try:
        # One small INSERT per batch: async_insert (where the server has it) lets ClickHouse merge them.
        versions = pipeline.apply_summary(runtime.session_store(), runtime.clickhouse(), summary, insert_settings())
    except Exception as exc:
        # redis-py's ConnectionError/TimeoutError derive from redis.RedisError, not from the
        # builtins, and ClickHouseError says itself whether it is transient: is_transient knows
        # both. The step is idempotent (a marker per batch and session), so a retry is safe.
        if not is_transient(exc):
            raise
        metrics.TASK_FAILURES.labels("sessions.update").inc()
        retries = self.request.retries or 0
        # The countdown is held by this worker as an unacked ETA message: capped well under the
        # visibility timeout, and never given up on (an outage is a delay, not a loss).
        countdown = max(0.5, backoff_delay(retries + 1, base=1.0, cap=_s.sessions_retry_max) * _s.retry_time_scale)
        log.warning("sessions step: storage unavailable, retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:300], "retry_in_s": round(countdown, 2)})
        try:
            # argsrepr/kwargsrepr go on to apply_async (Celery's documented options); celery-types'
            # retry() does not list them.
            raise self.retry(countdown=countdown, exc=exc,  # type: ignore[call-arg]
                             argsrepr=summary_repr(summary), kwargsrepr="{}")
        except Retry:
            raise
        except Reject as rej:  # the retry could not be published (broker down too): keep the message
            raise Reject(rej, requeue=True) from None
    _settle(summary["batch_id"])
    return versions


def _settle(batch_id: str) -> None:
    """The batch is counted: drop its ingest-journal entry (best effort: a leftover entry is
    re-published once by the sweep and counts once again, which is nothing)."""
    journal = journal_for(_s)
    if journal is None:
        return
    try:
        journal.settle(batch_id)
    except Exception as exc:  # the broker's Redis away for a moment
        log.warning("journal settle failed", extra={"batch_id": batch_id, "error": str(exc)[:200]})


@celery.task(name="sessions.claim_idle", acks_late=True, ignore_result=True)
def claim_idle() -> int:
    """Kept for a rolling deploy: an older beat's tick runs the maintenance sweep."""
    from tasks.maintenance import run_sweep

    return run_sweep()

"""``sessions.update``: count one stored batch into its sessions, the events flush's fallback
when its own session step fails as data (one bad batch cannot hold the others)."""
from __future__ import annotations

import logging

from app import resources
from app.events.flush import is_transient
from app.ingest.journal import settle_quietly
from app.names import TaskName
from app.observability import metrics
from app.retry.backoff import backoff_delay
from app.retry.countdown import Countdown
from app.sessions.counting import apply_summary

log = logging.getLogger(__name__)
# Shortest countdown of a retry (full jitter may draw close to zero).
MIN_COUNTDOWN = 0.5


def update(summary: dict, retries: int) -> dict[str, int] | Countdown:
    """Count ``summary``; a transient storage failure returns a countdown (``retries`` so far),
    a data error raises. Idempotent (a marker per batch and session), so a retry is safe."""
    try:
        # One small INSERT per batch: async_insert (where the server has it) lets ClickHouse merge them.
        versions = apply_summary(resources.session_store(), resources.clickhouse(), summary,
                                 resources.insert_settings())
    except Exception as exc:
        # redis-py's ConnectionError/TimeoutError derive from redis.RedisError, not from the
        # builtins, and ClickHouseError says itself whether it is transient: is_transient knows both.
        if not is_transient(exc):
            raise
        metrics.TASK_FAILURES.labels(TaskName.SESSIONS_UPDATE.value).inc()
        s = resources.settings()
        # The countdown is held by this worker as an unacked ETA message: capped well under the
        # visibility timeout, and never given up on (an outage is a delay, not a loss).
        wait = max(MIN_COUNTDOWN, backoff_delay(retries + 1, base=1.0, cap=s.sessions_retry_max) * s.retry_time_scale)
        log.warning("sessions step: storage unavailable, retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:300], "retry_in_s": round(wait, 2)})
        return Countdown(wait, cause=exc)
    settle_quietly(resources.settings(), [summary["batch_id"]])
    return versions

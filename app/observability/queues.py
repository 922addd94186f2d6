"""Queue depth and live-session gauges, sampled when /metrics is scraped."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.broker import queue_depth
from app.names import Queue
from app.observability import metrics
from app.sessions.store import BUCKETS
from app.storage import redis_clients, redis_keys

if TYPE_CHECKING:
    from celery import Celery

    from app.settings import Settings

log = logging.getLogger(__name__)


def sample(settings: Settings, celery_app: Celery) -> None:
    """Set observer_queue_depth{queue} and observer_live_sessions (best effort, never raises)."""
    try:
        for q in Queue:
            metrics.QUEUE_DEPTH.labels(q.value).set(queue_depth(celery_app, settings, q))
    except Exception as exc:  # a scrape must not fail because the broker hiccups
        log.warning("queue depth sample failed", extra={"error": str(exc)})
    try:
        r = redis_clients.client(settings.sessions_redis_url)
        pipe = r.pipeline(transaction=False)
        for b in range(BUCKETS):
            pipe.zcard(redis_keys.session_deadline(settings.redis_key_prefix, b))
        metrics.LIVE_SESSIONS.set(sum(pipe.execute()))
        for index in (Queue.EVENTS.value, Queue.FORWARD.value):
            metrics.DUE_PARKED.labels(index).set(r.zcard(redis_keys.due_index(settings.redis_key_prefix, index)))
    except Exception as exc:
        log.warning("live session sample failed", extra={"error": str(exc)})

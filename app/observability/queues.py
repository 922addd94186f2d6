"""Queue depth and live-session gauges, sampled when /metrics is scraped."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from app.broker import Queue
from app.observability import metrics
from app.storage import redis as redis_pool

if TYPE_CHECKING:
    from celery import Celery

    from app.settings import Settings

log = logging.getLogger(__name__)


def sample(settings: Settings, celery_app: Celery) -> None:
    """Set observer_queue_depth{queue} and observer_live_sessions (best effort, never raises)."""
    try:
        if settings.celery_broker_url.startswith("redis"):
            r = redis_pool.client(settings.celery_broker_url)
            for q in Queue:
                metrics.QUEUE_DEPTH.labels(q.value).set(r.llen(q.value))
        else:
            with celery_app.connection_for_read() as conn:
                # the transport's channel (py-amqp's); kombu's stubs only know StdChannel
                channel: Any = conn.default_channel
                for q in Queue:
                    _name, depth, _consumers = channel.queue_declare(q.value, passive=True)
                    metrics.QUEUE_DEPTH.labels(q.value).set(depth)
    except Exception as exc:  # a scrape must not fail because the broker hiccups
        log.warning("queue depth sample failed", extra={"error": str(exc)})
    try:
        r = redis_pool.client(settings.sessions_redis_url)
        pipe = r.pipeline(transaction=False)
        for b in range(settings.session_buckets):
            pipe.zcard(f"{settings.redis_key_prefix}s:{{b{b}}}:deadline")
        metrics.LIVE_SESSIONS.set(sum(pipe.execute()))
        for index in ("events", "forward"):
            metrics.DUE_PARKED.labels(index).set(r.zcard(f"{settings.redis_key_prefix}due:{{{index}}}:index"))
    except Exception as exc:
        log.warning("live session sample failed", extra={"error": str(exc)})

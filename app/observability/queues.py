"""Gauges sampled when /metrics is scraped: queue depths, live sessions, parked retries, and the
ages and sizes the alert rules watch (monitoring/prometheus/alerts.yml).

Each sample is best effort (a scrape must not fail because a server hiccups: the gauge keeps its
last value and a warning is logged) and costs a few round trips whatever the backlog: ZRANGE 0 0 on
sorted sets, one INFO, one SQL statement on indexed rows.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

from app.broker import queue_depth
from app.ingest import journal
from app.names import Queue
from app.observability import metrics
from app.sessions.store import BUCKETS, SEP
from app.storage import postgres, redis_clients, redis_keys

if TYPE_CHECKING:
    from celery import Celery

    from app.settings import Settings
    from app.storage.redis_clients import RedisClient

log = logging.getLogger(__name__)

# Outbox entries per bucket whose claim time is read: the outbox is scored by claim time until
# the sweep re-enqueues an entry (then by that time), so its head is not always the oldest claim.
OUTBOX_SAMPLE = 8

# The oldest open deletion request (the partial index deletion_requests_open) and the last
# successful retention run (one row a day, newest first by primary key), in one round trip.
_PG_SAMPLE = """
SELECT (SELECT extract(epoch FROM now() - created_at) FROM deletion_requests
         WHERE state <> 'verified' ORDER BY id LIMIT 1) AS deletion_age,
       (SELECT extract(epoch FROM finished_at) FROM retention_runs WHERE ok ORDER BY id DESC LIMIT 1) AS retention_at
"""


def sample(settings: Settings, celery_app: Celery) -> None:
    """Set every scrape-time gauge (best effort, never raises)."""
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
    for name, step in (("journal", _journal), ("outbox", _outbox), ("broker memory", _broker_memory),
                       ("postgres", _postgres)):
        try:
            step(settings)
        except Exception as exc:
            log.warning(f"{name} sample failed", extra={"error": str(exc)})


def _journal(settings: Settings) -> None:
    """observer_ingest_oldest_unstored_seconds: the oldest score over the journal's shards."""
    if journal.journal_for(settings) is None:  # RabbitMQ acks for real: no journal
        metrics.INGEST_OLDEST_UNSTORED.set(0)
        return
    r = redis_clients.client(settings.celery_broker_url)
    pipe = r.pipeline(transaction=False)
    for shard in range(journal.SHARDS):
        pipe.zrange(redis_keys.journal_index(settings.redis_key_prefix, shard), 0, 0, withscores=True)
    heads = [float(score) for rows in pipe.execute() for _member, score in rows]
    metrics.INGEST_OLDEST_UNSTORED.set(_age_ms(min(heads)) if heads else 0)


def _outbox(settings: Settings) -> None:
    """observer_forward_oldest_undelivered_seconds: the claim time (``finalized_ms`` of the frozen
    snapshot, never re-stamped) of the first OUTBOX_SAMPLE outbox entries of each bucket."""
    prefix = settings.redis_key_prefix
    r = redis_clients.client(settings.sessions_redis_url)
    pipe = r.pipeline(transaction=False)
    for b in range(BUCKETS):
        pipe.zrange(redis_keys.session_outbox(prefix, b), 0, OUTBOX_SAMPLE - 1, withscores=True)
    heads = [(b, cast(str, m), float(score)) for b, rows in enumerate(pipe.execute()) for m, score in rows]
    if not heads:
        metrics.FORWARD_OLDEST_UNDELIVERED.set(0)
        return
    claimed = _claim_times(r, prefix, heads)
    metrics.FORWARD_OLDEST_UNDELIVERED.set(_age_ms(min(claimed)) if claimed else 0)


def _claim_times(r: RedisClient, prefix: str, heads: list[tuple[int, str, float]]) -> list[float]:
    """Claim times (ms) of outbox entries whose snapshot is still there (a delivered version has none)."""
    pipe = r.pipeline(transaction=False)
    for b, member, _score in heads:
        project, session_id, version = member.split(SEP)
        pipe.hget(redis_keys.session_final(prefix, b, project, session_id, version), "finalized_ms")
    return [float(at) for at in pipe.execute() if at]


def _broker_memory(settings: Settings) -> None:
    """observer_broker_memory_used_bytes and _max_bytes from INFO memory (Redis broker only)."""
    if journal.journal_for(settings) is None:
        return
    info = redis_clients.client(settings.celery_broker_url).info("memory")
    metrics.BROKER_MEMORY_USED.set(int(info.get("used_memory") or 0))
    metrics.BROKER_MEMORY_MAX.set(int(info.get("maxmemory") or 0))


def _postgres(settings: Settings) -> None:
    """observer_deletion_oldest_open_seconds, and observer_retention_last_success_timestamp from the
    record of runs: the process that ran the job may have restarted since, losing its gauge."""
    with postgres.cursor(settings.database_url) as cur:
        cur.execute(_PG_SAMPLE)
        row: dict = cur.fetchone() or {}
    metrics.DELETION_OLDEST_OPEN.set(max(0.0, float(row.get("deletion_age") or 0)))
    if row.get("retention_at") is not None:
        metrics.RETENTION_LAST_SUCCESS.set(float(row["retention_at"]))


def _age_ms(at_ms: float) -> float:
    return max(0.0, time.time() - at_ms / 1000.0)

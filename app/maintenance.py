"""Beat's periodic work on the ``maintenance`` queue: the sweep and the reconciliation.

The sweep (every SESSION_SWEEP_INTERVAL): claim idle sessions and enqueue their forwarding,
re-enqueue stale outbox entries, re-publish due retries (refused batches, parked deliveries),
re-publish accepted batches the broker lost (the ingest journal), then write the beat heartbeat
/ready reads. A lock makes overlapping sweeps (two beats, a slow sweep) harmless: the second
one returns at once.

The reconciliation (every minute): forward versions ClickHouse knows and the sessions Redis
lost, and drop the dedup index's days past the window.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from app import resources
from app.broker import queue_depth, send_batch, send_forward
from app.events.worker import republish_due
from app.forwarding import parked
from app.ingest.journal import journal_for
from app.names import Queue
from app.observability import heartbeats, metrics
from app.sessions import claim
from app.sessions.reconcile import reconcile as reconcile_versions
from app.storage import redis_clients, redis_keys
from app.storage.clickhouse import cluster, queries
from app.storage.clickhouse.migrations import EVENT_IDS_MARGIN_S
from app.storage.lock import RedisLock

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)
# Sessions claimed, due retries and journal entries re-published per sweep, each.
BATCH = 500
# A claimed version not forwarded after this long is enqueued again (a lost forward message
# costs this long).
OUTBOX_STALE_S = 120.0


def sweep(celery: Celery) -> int:
    """One sweep under the sweep lock; returns the sessions claimed (-1: another sweep runs)."""
    s = resources.settings()
    r = resources.sessions_redis()
    # The lock expires by itself should this sweep die; it outlasts any sane sweep.
    lock = RedisLock(r, redis_keys.sweep_lock(s.redis_key_prefix), int(max(s.session_sweep_interval * 6, 30) * 1000))
    if not lock.acquire():
        return -1
    try:
        claimed, stale = claim.claim_due_and_stale(
            resources.session_store(), limit=BATCH, outbox_stale_s=OUTBOX_STALE_S,
            backlog=lambda: queue_depth(celery, s, Queue.EVENTS))
        for c in list(claimed) + list(stale):
            send_forward(celery, c.project, c.session_id, c.version)
        republish_due(celery, limit=BATCH)
        parked.release_due(celery, s.session_sweep_interval)
        replay_journal(celery, limit=BATCH)
        now = time.time()
        heartbeats.mark_sweep(r, s.redis_key_prefix, now)
        metrics.SWEEP_LAST.set(now)
        return len(claimed)
    finally:
        lock.release()


def replay_journal(celery: Celery, limit: int, now_ms: int | None = None) -> int:
    """Re-publish accepted batches the broker lost (see app/ingest/journal.py); returns how many."""
    s = resources.settings()
    journal = journal_for(s)
    if journal is None:
        return 0
    broker = redis_clients.client(s.celery_broker_url)
    # While a queue holds messages an old entry may simply be waiting its turn there.
    if broker.llen(Queue.EVENTS.value) or broker.llen(Queue.SESSIONS.value):
        return 0
    now = int(time.time() * 1000) if now_ms is None else now_ms
    lost = journal.overdue(now - int(s.journal_grace * 1000), now, limit=limit)
    for batch in lost:
        send_batch(celery, batch)
    if lost:
        metrics.JOURNAL_REPUBLISHED.inc(len(lost))
        log.warning("re-published accepted batches the broker lost",
                    extra={"count": len(lost), "batch_ids": [b["batch_id"] for b in lost[:10]]})
    return len(lost)


def reconcile(celery: Celery) -> int:
    """Queue forwards for versions ClickHouse knows and the sessions Redis lost, and drop the
    dedup index's expired days; returns how many versions were queued."""
    s = resources.settings()
    ch = resources.clickhouse()
    found = reconcile_versions(resources.session_store(), ch, idle_s=s.session_idle_timeout,
                               limit=BATCH)
    for c in found:
        send_forward(celery, c.project, c.session_id, c.version)
    # Dedup state lives as long as the window: whole days past it go (18.16 has no TTL).
    before = int(time.time() * 1000) - (s.dedup_window + EVENT_IDS_MARGIN_S) * 1000
    if s.clickhouse_cluster:  # event_ids is the Distributed table there: drop each shard's days
        dropped = cluster.drop_expired_event_ids(ch, s.clickhouse_cluster, before)
    else:
        dropped = queries.drop_expired_event_ids(ch, before)
    if dropped:
        log.info("expired event_ids partitions dropped", extra={"partitions": dropped})
    return len(found)

"""Queue ``maintenance``: beat's sweep, on a queue of its own so no work backlog starves it.

One sweep: claim idle sessions and enqueue their forwarding, re-enqueue stale outbox entries,
re-publish due retries (refused batches, parked deliveries), then write the beat heartbeat.
A lock makes overlapping sweeps (two beats, a slow sweep) harmless: the second one returns.
"""
from __future__ import annotations

import logging
import time
import uuid

from app.broker import Queue, send_batch
from app.observability import metrics
from app.pipeline import claim
from app.pipeline.journal import journal_for
from app.storage import redis as redis_pool
from tasks import runtime
from tasks.app import celery

log = logging.getLogger(__name__)
_s = runtime.settings()
# Delete the lock only if it is still ours (a slow sweep must not free a newer sweep's lock).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def heartbeat_key() -> str:
    """Redis key holding the epoch seconds of the last finished sweep."""
    return f"{_s.redis_key_prefix}hb:sweep"


def run_sweep() -> int:
    """One maintenance sweep under the sweep lock; returns sessions claimed (-1: lock held)."""
    from tasks import events, forward

    r = runtime.sessions_redis()
    lock = f"{_s.redis_key_prefix}claim-lock"
    token = uuid.uuid4().hex
    # The lock expires by itself should this sweep die; it outlasts any sane sweep.
    if not r.set(lock, token, nx=True, px=int(max(_s.session_sweep_interval * 6, 30) * 1000)):
        return -1
    try:
        claimed, stale = claim.sweep(runtime.session_store(), limit=_s.session_claim_batch,
                                        outbox_stale_s=_s.forward_outbox_stale)
        for c in list(claimed) + list(stale):
            celery.send_task("forward.deliver", args=[c.project, c.session_id, c.version], queue=Queue.FORWARD.value)
        events.republish_due(limit=_s.session_claim_batch)
        forward.release_due(_s.session_sweep_interval)
        replay_journal(limit=_s.session_claim_batch)
        now = time.time()
        r.set(heartbeat_key(), f"{now:.3f}", ex=86400)
        metrics.SWEEP_LAST.set(now)
        return len(claimed)
    finally:
        r.eval(_RELEASE, 1, lock, token)


def replay_journal(limit: int, now_ms: int | None = None) -> int:
    """Re-publish accepted batches the broker lost (see app/pipeline/journal.py); returns how many."""
    journal = journal_for(_s)
    if journal is None:
        return 0
    broker = redis_pool.client(_s.celery_broker_url)
    # While a queue holds messages an old entry may simply be waiting its turn there.
    if broker.llen(Queue.EVENTS.value) or broker.llen(Queue.SESSIONS.value):
        return 0
    now = int(time.time() * 1000) if now_ms is None else now_ms
    lost = journal.overdue(now - int(_s.journal_grace * 1000), now, limit=limit)
    for batch in lost:
        send_batch(celery, batch)
    if lost:
        metrics.JOURNAL_REPUBLISHED.inc(len(lost))
        log.warning("re-published accepted batches the broker lost",
                    extra={"count": len(lost), "batch_ids": [b["batch_id"] for b in lost[:10]]})
    return len(lost)


@celery.task(name="maintenance.sweep", acks_late=True, ignore_result=True)
def sweep() -> int:
    """Beat's periodic sweep (see the module docstring)."""
    return run_sweep()

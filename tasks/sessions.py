"""Queue ``sessions``: session updates, and the beat job that claims idle sessions."""
from __future__ import annotations

import logging
import uuid

from app.broker import Queue
from app.pipeline import sessions as pipeline
from tasks import runtime
from tasks.events import insert_settings
from tasks.app import celery

log = logging.getLogger(__name__)
_s = runtime.settings()
# Delete the lock only if it is still ours (a slow sweep must not free a newer sweep's lock).
_release = runtime.sessions_redis().register_script(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")


@celery.task(name="sessions.update", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             # Redis or ClickHouse hiccups pass; the step is idempotent so a retry is safe.
             autoretry_for=(ConnectionError, OSError, RuntimeError), retry_backoff=1, retry_backoff_max=120,
             retry_jitter=True, max_retries=50)
def update(summary: dict) -> dict:
    """Count one stored batch into its sessions."""
    # One small INSERT per batch: async_insert (where the server has it) lets ClickHouse merge them.
    return pipeline.apply_summary(runtime.session_store(), runtime.clickhouse(), summary, insert_settings())


@celery.task(name="sessions.claim_idle", acks_late=True, ignore_result=True)
def claim_idle() -> int:
    """Claim sessions past their deadline and enqueue their forwarding."""
    r = runtime.sessions_redis()
    lock = f"{_s.redis_key_prefix}claim-lock"
    token = uuid.uuid4().hex
    # Overlapping sweeps are harmless (each claim is atomic) but wasteful: one at a time.
    if not r.set(lock, token, nx=True, px=int(max(_s.session_sweep_interval, 1) * 2000)):
        return 0
    try:
        claimed, stale = pipeline.sweep(runtime.session_store(), limit=_s.session_claim_batch,
                                        outbox_stale_s=_s.forward_outbox_stale)
        for c in list(claimed) + list(stale):
            celery.send_task("forward.deliver", args=[c.project, c.session_id, c.version],
                             queue=Queue.FORWARD.value)
        return len(claimed)
    finally:
        _release(keys=[lock], args=[token], client=r)

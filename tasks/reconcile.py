"""Queue ``maintenance``: the reconciliation sweep (app.pipeline.reconcile) behind a beat entry."""
from __future__ import annotations

import logging
import time

from app.broker import Queue
from app.pipeline.reconcile import reconcile as reconcile_versions
from app.storage import events_repo
from app.storage.clickhouse_migrations import EVENT_IDS_MARGIN_S
from tasks import runtime
from tasks.app import celery

log = logging.getLogger(__name__)
_s = runtime.settings()


@celery.task(name="sessions.reconcile", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def reconcile() -> int:
    """Queue forwards for versions ClickHouse knows and the sessions Redis lost; returns how many."""
    ch = runtime.clickhouse()
    found = reconcile_versions(runtime.session_store(), ch, idle_s=_s.session_idle_timeout,
                               limit=_s.session_claim_batch)
    for c in found:
        celery.send_task("forward.deliver", args=[c.project, c.session_id, c.version], queue=Queue.FORWARD.value)
    # Dedup state lives as long as the window: whole days past it go (18.16 has no TTL).
    before = int(time.time() * 1000) - (_s.dedup_window + EVENT_IDS_MARGIN_S) * 1000
    if _s.clickhouse_cluster:  # event_ids is the Distributed table there: drop each shard's days
        from app.storage import cluster

        dropped = cluster.drop_expired_event_ids(ch, _s.clickhouse_cluster, before)
    else:
        dropped = events_repo.drop_expired_event_ids(ch, before)
    if dropped:
        log.info("expired event_ids partitions dropped", extra={"partitions": dropped})
    return len(found)

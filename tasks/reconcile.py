"""Queue ``maintenance``: the reconciliation sweep (app.pipeline.reconcile) behind a beat entry."""
from __future__ import annotations

from app.broker import Queue
from app.pipeline.reconcile import reconcile as reconcile_versions
from tasks import runtime
from tasks.app import celery

_s = runtime.settings()


@celery.task(name="sessions.reconcile", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def reconcile() -> int:
    """Queue forwards for versions ClickHouse knows and the sessions Redis lost; returns how many."""
    found = reconcile_versions(runtime.session_store(), runtime.clickhouse(), idle_s=_s.session_idle_timeout,
                               limit=_s.session_claim_batch)
    for c in found:
        celery.send_task("forward.deliver", args=[c.project, c.session_id, c.version], queue=Queue.FORWARD.value)
    return len(found)

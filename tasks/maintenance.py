"""Queue ``maintenance``: beat's sweep and reconciliation (app/maintenance.py), on a queue of
their own so no backlog of work starves them."""
from __future__ import annotations

from app import maintenance
from app.names import TaskName
from tasks.app import celery


# send_events=False: beat runs it every SESSION_SWEEP_INTERVAL (5 s), and its task events buried
# the work in Flower's task list. It stays visible where it is watched: /ready's beat check and
# observer_beat_last_sweep_timestamp (the heartbeat each finished sweep writes), and its logs.
# The once-a-minute and daily tasks below keep their events.
@celery.task(name=TaskName.MAINTENANCE_SWEEP.value, acks_late=True, ignore_result=True, send_events=False)
def sweep() -> int:
    """Beat's periodic sweep; returns the sessions claimed (-1: another sweep holds the lock)."""
    return maintenance.sweep(celery)


@celery.task(name=TaskName.MAINTENANCE_RECONCILE.value, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def reconcile() -> int:
    """Queue forwards for versions ClickHouse knows and the sessions Redis lost; returns how many."""
    return maintenance.reconcile(celery)


@celery.task(name=TaskName.MAINTENANCE_DELETIONS.value, acks_late=True, ignore_result=True)
def deletions() -> int:
    """Move every open deletion request a stage on (app/deletion/job.py); returns how many stay open
    (-1: another run holds the lock)."""
    from app.deletion import job

    return job.tick()


@celery.task(name=TaskName.MAINTENANCE_RETENTION.value, acks_late=True, ignore_result=True)
def retention_run(as_of: str | None = None) -> int:
    """Beat's daily retention run (or one ``flask retention run`` enqueued on chDB); returns the
    partitions dropped."""
    import datetime as dt

    from app import resources, retention

    day = dt.date.fromisoformat(as_of) if as_of else None
    return len(retention.run(resources.settings(), resources.clickhouse(), day).dropped)


@celery.task(name=TaskName.MAINTENANCE_READ.value, ignore_result=True)
def read(what: str, kwargs: dict, reply: str) -> None:
    """A command's ClickHouse read, run by the worker that owns chDB (app/accounting/owner.py)."""
    from app import resources
    from app.accounting import owner

    owner.answer(resources.clickhouse(), resources.sessions_redis(), what, kwargs, reply)

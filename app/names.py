"""Queue and task names: the one place they are spelled.

celeryconfig builds its queues and routes from here, every ``send_task`` and every task
decorator names its task from here, and the tooling (Procfile checks, the fault suite, bench)
reads them from here too. Task names are stable: a message published by one release is
consumed by the next.
"""
from __future__ import annotations

import enum


class Queue(enum.StrEnum):
    """The queues; each gets its own worker pool and concurrency."""

    EVENTS = "events"
    SESSIONS = "sessions"
    FORWARD = "forward"
    # beat's sweeps: a queue of their own so a backlog of work never delays finalization
    MAINTENANCE = "maintenance"


class TaskName(enum.StrEnum):
    """Every task, by the name its messages carry."""

    EVENTS_PERSIST = "events.persist"
    EVENTS_REPLAY_BATCH = "events.replay_batch"
    SESSIONS_UPDATE = "sessions.update"
    FORWARD_DELIVER = "forward.deliver"
    FORWARD_RECORD = "forward.record"
    FORWARD_REPLAY = "forward.replay"
    MAINTENANCE_SWEEP = "maintenance.sweep"
    MAINTENANCE_RECONCILE = "maintenance.reconcile"
    MAINTENANCE_RETENTION = "maintenance.retention"
    MAINTENANCE_DELETIONS = "maintenance.deletions"
    MAINTENANCE_READ = "maintenance.read"


# The queue of every task. forward.record writes sessions rows in batches, so it runs on the
# events worker, the one that holds many messages at once (a batches task needs them).
ROUTES: dict[TaskName, Queue] = {
    TaskName.EVENTS_PERSIST: Queue.EVENTS,
    TaskName.EVENTS_REPLAY_BATCH: Queue.EVENTS,
    TaskName.FORWARD_RECORD: Queue.EVENTS,
    TaskName.SESSIONS_UPDATE: Queue.SESSIONS,
    TaskName.FORWARD_DELIVER: Queue.FORWARD,
    TaskName.FORWARD_REPLAY: Queue.FORWARD,
    TaskName.MAINTENANCE_SWEEP: Queue.MAINTENANCE,
    TaskName.MAINTENANCE_RECONCILE: Queue.MAINTENANCE,
    TaskName.MAINTENANCE_RETENTION: Queue.MAINTENANCE,
    TaskName.MAINTENANCE_DELETIONS: Queue.MAINTENANCE,
    TaskName.MAINTENANCE_READ: Queue.MAINTENANCE,
}

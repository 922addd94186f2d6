"""Queue ``events``: buffered batches -> ClickHouse and their sessions (app/events/worker.py),
the sessions rows of forwarded versions (app/forwarding/record.py), and batch replays."""
from __future__ import annotations

from typing import Any

from app import resources
from app.events import worker
from app.forwarding.record import record as record_rows
from app.names import TaskName
from tasks.app import celery
from tasks.batching import AckOnSuccessBatches


class EventsBatches(AckOnSuccessBatches):
    """The events worker's batching: its size, interval, holds and pauses from the settings."""

    @property
    def flush_every(self) -> int:
        return resources.settings().events_flush_every

    @property
    def flush_interval(self) -> float:
        return resources.settings().events_flush_interval

    @property
    def hold_limit(self) -> float:  # type: ignore[override]
        """Held under half the visibility timeout, less the time a message waits for its flush."""
        s = resources.settings()
        return min(25.0, s.broker_visibility_timeout / 2 - s.events_flush_interval)

    @property
    def pause_max(self) -> float:  # type: ignore[override]
        return worker.PAUSE_MAX

    @property
    def time_scale(self) -> float:  # type: ignore[override]
        return resources.settings().retry_time_scale


@celery.task(base=EventsBatches, name=TaskName.EVENTS_PERSIST.value, acks_late=True, reject_on_worker_lost=True)
def persist(requests: list[Any]) -> dict:
    """Store buffered batches in ClickHouse and count them into their sessions, all at once."""
    return worker.flush(celery, requests)


@celery.task(base=EventsBatches, name=TaskName.FORWARD_RECORD.value, acks_late=True, reject_on_worker_lost=True)
def record(requests: list[Any]) -> dict:
    """Write the ``sessions`` rows of forwarded versions, one INSERT per flush."""
    return record_rows(requests)


@celery.task(name=TaskName.EVENTS_REPLAY_BATCH.value, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def replay_batch(dead_letter_id: int) -> None:
    """Re-publish a dead-lettered batch to events.persist."""
    worker.replay_batch(celery, dead_letter_id)

"""Queue ``forward``: deliver finished sessions to UFSE (app/forwarding/deliver.py) and replay
dead letters (app/forwarding/replay.py). Long waits are parked, never held in a message."""
from __future__ import annotations

from celery import Task

from app.forwarding import deliver as delivery
from app.forwarding import replay as replays
from app.names import TaskName
from app.retry.countdown import Countdown
from tasks.app import celery, retry_in


@celery.task(bind=True, name=TaskName.FORWARD_DELIVER.value, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def deliver(self: Task, project: str, session_id: str, version: int, attempt: int = 0, waits: int = 0,
            due: bool = False, infra: int = 0) -> str:
    """Deliver one claimed session version to UFSE (``due``: re-published by the sweep)."""
    try:
        outcome = delivery.deliver(celery, project, session_id, version, attempt=attempt, waits=waits, due=due)
    except delivery.INFRA_ERRORS as exc:
        outcome = delivery.storage_unavailable(project, session_id, version, attempt, infra, exc)
    if isinstance(outcome, Countdown):
        raise retry_in(self, outcome)
    return outcome


@celery.task(bind=True, name=TaskName.FORWARD_REPLAY.value, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def replay(self: Task, dead_letter_id: int, attempt: int = 0) -> str:
    """Deliver a dead-lettered session again (same webhook-id, fresh signature)."""
    outcome = replays.replay(dead_letter_id, attempt)
    if isinstance(outcome, Countdown):
        raise retry_in(self, outcome)
    return outcome

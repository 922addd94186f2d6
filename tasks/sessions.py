"""Queue ``sessions``: count one stored batch into its sessions (app/sessions/update.py)."""
from __future__ import annotations

from celery import Task

from app.broker import summary_repr
from app.names import TaskName
from app.retry.countdown import Countdown
from app.sessions import update as step
from tasks.app import celery, retry_in


@celery.task(bind=True, name=TaskName.SESSIONS_UPDATE.value, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None)
def update(self: Task, summary: dict) -> dict:
    """Count one stored batch into its sessions; storage outages retry with a countdown."""
    outcome = step.update(summary, self.request.retries or 0)
    if isinstance(outcome, Countdown):
        # argsrepr/kwargsrepr go on to apply_async: Flower shows ids and counts, never the batch.
        raise retry_in(self, outcome, argsrepr=summary_repr(summary), kwargsrepr="{}")
    return outcome

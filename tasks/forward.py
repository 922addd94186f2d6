"""Queue ``forward``: deliver finished sessions to UFSE (app/forwarding/deliver.py) and replay
dead letters (app/forwarding/replay.py). Long waits are parked, never held in a message.

What a delivery did is the task's Celery state, so Flower shows it (docs/OPERATIONS.md#flower):
SUCCESS for ``delivered``, ``empty``, ``gone``, ``scheduled``; RETRY for a delivery left waiting
(``retrying``, ``held``, ``parked``, ``deferred``, ``backlogged``), raised as a bare
:class:`~celery.exceptions.Retry` once the bookkeeping is done, so the message is acked and
nothing is re-published (the parked delivery is re-published by the sweep when due); FAILURE
(:class:`DeliveryDeadLettered`, with the dead letter's reason) for ``dead_lettered``; a replay that
failed again is a FAILURE too (:class:`ReplayFailed`). A short
:class:`~app.retry.countdown.Countdown` stays ``self.retry`` (the message is re-published).
"""
from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import Retry

from app import resources
from app.forwarding import deliver as delivery
from app.forwarding import replay as replays
from app.names import TaskName
from app.retry.countdown import Countdown
from tasks.app import celery, retry_in

log = logging.getLogger(__name__)

#: outcomes that leave the delivery waiting somewhere else than in this message, and why
WAITING = {
    "retrying": "UFSE refused it for now; the retry is parked until due",
    "held": "held behind the open circuit; parked until it closes",
    "parked": "storage unavailable; parked for a later attempt",
    "deferred": "storage unavailable; left to the outbox sweep",
    "backlogged": "destination disabled; parked until an operator enables it",
}
DEAD_LETTERED = "dead_lettered"


class DeliveryWaiting(Exception):
    """Why a delivery waits (the ``exc`` of the Retry its task raises: Flower shows it)."""


class DeliveryDeadLettered(Exception):
    """The delivery was dead-lettered (already recorded and logged): the task's FAILURE, for Flower.

    In the tasks' ``throws``: Celery logs it as expected (no traceback) and Sentry ignores it, so
    a dead letter is not also an error report; it is not retried (no autoretry) and its message is
    acked (``task_acks_on_failure_or_timeout``)."""


class ReplayFailed(Exception):
    """An operator's replay of a dead letter failed again (the dead letter stays pending with the new
    error): the replay task's FAILURE, declared in its ``throws`` like :class:`DeliveryDeadLettered`."""


def dead_letter_reason(project: str, session_id: str, version: int) -> str:
    """The error of the newest dead letter of this version (the outcome string when unreadable)."""
    from app.storage import postgres

    ref = f"{project}:{session_id}:{version}"
    try:
        with postgres.cursor(resources.settings().database_url) as cur:
            cur.execute("SELECT error FROM dead_letters WHERE kind = 'undeliverable_forward' AND ref = %s "
                        "ORDER BY id DESC LIMIT 1", (ref,))
            row = cur.fetchone()
    except Exception as exc:  # the dead letter is written; only its reason is missing from Flower
        log.warning("dead letter's reason unreadable", extra={"webhook_id": ref, "error": str(exc)[:200]})
        return DEAD_LETTERED
    return str(row["error"]) if row else DEAD_LETTERED


def settle(outcome: str, reason: str | None = None) -> str:
    """Return a success outcome; raise the Retry or the failure a waiting or dead-lettered one is."""
    if outcome == DEAD_LETTERED:
        raise DeliveryDeadLettered(reason or outcome)
    if outcome in WAITING:
        raise Retry(f"{outcome}: {WAITING[outcome]}", DeliveryWaiting(f"{outcome}: {WAITING[outcome]}"))
    return outcome


@celery.task(bind=True, name=TaskName.FORWARD_DELIVER.value, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None, throws=(DeliveryDeadLettered,))
def deliver(self: Task, project: str, session_id: str, version: int, attempt: int = 0, waits: int = 0,
            due: bool = False, infra: int = 0) -> str:
    """Deliver one claimed session version to UFSE (``due``: re-published by the sweep)."""
    try:
        outcome = delivery.deliver(celery, project, session_id, version, attempt=attempt, waits=waits, due=due)
    except delivery.INFRA_ERRORS as exc:
        outcome = delivery.storage_unavailable(project, session_id, version, attempt, infra, exc)
    if isinstance(outcome, Countdown):
        raise retry_in(self, outcome)
    reason = dead_letter_reason(project, session_id, version) if outcome == DEAD_LETTERED else None
    return settle(outcome, reason)


@celery.task(bind=True, name=TaskName.FORWARD_REPLAY.value, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, max_retries=None, throws=(ReplayFailed,))
def replay(self: Task, dead_letter_id: int, attempt: int = 0) -> str:
    """Deliver a dead-lettered session again (same webhook-id, fresh signature): SUCCESS with
    ``delivered`` or ``skipped`` (already replayed or gone), FAILURE (:class:`ReplayFailed`, with the
    dead letter's new error) when it failed again."""
    outcome = replays.replay(dead_letter_id, attempt)
    if isinstance(outcome, Countdown):
        raise retry_in(self, outcome)
    if outcome == "failed":
        try:
            row = resources.dead_letters().get(dead_letter_id) or {}
            reason = str(row.get("error") or outcome)
        except Exception as exc:  # the failure is recorded; only its reason is missing from Flower
            log.warning("dead letter's reason unreadable",
                        extra={"dead_letter": dead_letter_id, "error": str(exc)[:200]})
            reason = outcome
        raise ReplayFailed(f"dead letter {dead_letter_id}: {reason}")
    return outcome

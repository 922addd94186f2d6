"""forward.deliver's outcome as its Celery state (what Flower shows): success outcomes return,
waiting ones raise a bare Retry (acked, nothing re-published), a dead letter raises
DeliveryDeadLettered, which the task declares in ``throws`` and never retries."""
from __future__ import annotations

import pytest
from celery.exceptions import Retry

from tasks import forward


@pytest.mark.parametrize("outcome", ["delivered", "empty", "gone", "scheduled"])
def test_success_outcomes_return(outcome):
    assert forward.settle(outcome) == outcome


@pytest.mark.parametrize("outcome", ["retrying", "held", "parked", "deferred", "backlogged"])
def test_waiting_outcomes_raise_a_bare_retry_with_the_reason(outcome):
    with pytest.raises(Retry) as info:
        forward.settle(outcome)
    assert str(info.value).startswith(f"{outcome}: ")
    assert isinstance(info.value.exc, forward.DeliveryWaiting)
    assert info.value.when is None and info.value.sig is None, "nothing is re-published"


def test_dead_lettered_is_a_declared_failure_with_the_reason():
    with pytest.raises(forward.DeliveryDeadLettered, match="permanent: status=400"):
        forward.settle("dead_lettered", "permanent: status=400")
    task = forward.deliver
    assert forward.DeliveryDeadLettered in task.throws
    assert not isinstance(forward.DeliveryDeadLettered("x"), tuple(getattr(task, "autoretry_for", ()) or ()))
    assert task.acks_late and task.app.conf.task_acks_on_failure_or_timeout


def test_the_sweep_sends_no_task_events():
    from tasks import maintenance

    assert maintenance.sweep.send_events is False
    assert maintenance.reconcile.send_events is True


def test_a_replay_that_failed_again_is_a_declared_failure_with_the_dead_letters_new_error(monkeypatch):
    """Flower showed a failed replay as SUCCESS ``failed``."""
    class DeadLetters:
        def get(self, dl_id):
            return {"id": dl_id, "error": "permanent: status=400 bad payload"}

    monkeypatch.setattr(forward.replays, "replay", lambda dl_id, attempt=0: "failed")
    monkeypatch.setattr(forward.resources, "dead_letters", DeadLetters)
    with pytest.raises(forward.ReplayFailed, match="dead letter 7: permanent: status=400 bad payload"):
        forward.replay(7)
    assert forward.ReplayFailed in forward.replay.throws
    monkeypatch.setattr(forward.replays, "replay", lambda dl_id, attempt=0: "delivered")
    assert forward.replay(7) == "delivered"

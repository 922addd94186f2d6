"""The celery-batches subclass: timer re-armed after a consumer restart, lost children requeued.

Fakes stand in for Celery's consumer and pool here (pure logic of our subclass); the same
behaviour runs against a real broker restart and real pool-child kills in the fault suite
(scripts/faults, cases 0 and 1).
"""
from __future__ import annotations

import types

import pytest

from tasks.batching import AckOnSuccessBatches


class FakeTimer:
    """Records call_repeatedly like kombu's Timer does."""

    def __init__(self, name: str) -> None:
        self.name, self.armed, self.cancelled = name, [], 0

    def call_repeatedly(self, interval, fn):
        timer = self

        class Ref:
            def cancel(self_inner):
                timer.cancelled += 1

        ref = Ref()
        ref.timer = timer
        self.armed.append((interval, fn))
        return ref


class FakePool:
    def __init__(self) -> None:
        self.calls = []

    def apply_async(self, target, args, **kwargs):
        self.calls.append(kwargs)
        return None


def _consumer(name: str):
    return types.SimpleNamespace(pool=FakePool(), hostname=f"{name}@test", connection_errors=(),
                                 event_dispatcher=None, timer=FakeTimer(name))


class FakeRequest:
    """The few attributes SimpleRequest.from_request and our flush read."""

    def __init__(self, rid: str) -> None:
        self.id, self.name, self.args, self.kwargs = rid, "events.persist", ({"batch_id": rid},), {}
        self._payload = (self.args, self.kwargs, {})
        self.delivery_info, self.hostname, self.reply_to = {}, "h", None
        self.correlation_id, self.request_dict, self.ignore_result, self.eta = rid, {}, True, None
        self.acked = self.requeued = 0
        self.task = types.SimpleNamespace(acks_late=True)

    def acknowledge(self):
        self.acked += 1

    def reject(self, requeue=False):
        self.requeued += int(requeue)


@pytest.fixture
def task():
    from celery import Celery

    app = Celery("batching-test", set_as_current=False)

    class T(AckOnSuccessBatches):
        name = "events.persist"
        flush_interval = 1
        flush_every = 10

        def run(self, requests):  # pragma: no cover - never executed here
            return {}

    t = T()
    t.bind(app)
    return t


def test_consumer_restart_rearms_the_flush_timer_on_the_new_consumer(task):
    """celery-batches #107: after a broker reconnect the old timer (dead hub) must be dropped."""
    first, second = _consumer("old"), _consumer("new")
    task.Strategy(task, task.app, first)
    task._tref = first.timer.call_repeatedly(1, task._do_flush)  # what the first message does
    task._buffer.put(FakeRequest("held-before-reconnect"))
    task.Strategy(task, task.app, second)
    assert first.timer.cancelled == 1, "the dead consumer's timer was not cancelled"
    assert task._tref is not None and task._tref.timer is second.timer, "flush timer not re-armed on the new consumer"
    assert task.restarts == 1


def test_a_dead_pool_child_requeues_its_flush_at_once(task):
    consumer = _consumer("c")
    task.Strategy(task, task.app, consumer)
    reqs = [FakeRequest("a"), FakeRequest("b")]
    task.flush(reqs)
    kwargs = consumer.pool.calls[-1]
    assert "error_callback" in kwargs, ("no error_callback: a lost child leaves its messages unacked until the "
                                        "visibility timeout")
    from billiard.exceptions import WorkerLostError

    kwargs["error_callback"](WorkerLostError("child killed"))
    assert [r.requeued for r in reqs] == [1, 1] and [r.acked for r in reqs] == [0, 0]
    assert task.in_flight == 0


def test_verdicts_ack_some_and_requeue_the_rest(task):
    consumer = _consumer("c")
    task.Strategy(task, task.app, consumer)
    reqs = [FakeRequest("ok"), FakeRequest("later"), FakeRequest("crashed")]
    task.flush(reqs)
    consumer.pool.calls[-1]["callback"]({"verdicts": {"ok": "ack", "later": "requeue"}, "pause": False})
    assert [(r.acked, r.requeued) for r in reqs] == [(1, 0), (0, 1), (0, 1)]


def test_pause_holds_requests_in_the_buffer_then_requeues_them(task):
    consumer = _consumer("c")
    task.Strategy(task, task.app, consumer)
    task.flush([FakeRequest("x")])
    consumer.pool.calls[-1]["callback"]({"verdicts": {}, "pause": True})
    assert task._paused_until > 0
    held = FakeRequest("held")
    task.flush([held])
    assert len(consumer.pool.calls) == 1, "a paused worker must not send flushes to storage"
    assert task._pending.qsize() == 1 and held.requeued == 0
    held._observer_held_since -= task.hold_limit + 1  # as if held past the limit
    task._pending.get_nowait()
    task.flush([held])
    assert held.requeued == 1, "a request held past hold_limit goes back to the broker"

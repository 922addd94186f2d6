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


class FakeDispatcher:
    """Celery's EventDispatcher as the batching task uses it: send(), a task buffer and its limit."""

    def __init__(self) -> None:
        self.enabled, self.buffer_group, self.buffer_limit = True, frozenset({"task"}), 24
        self.sent, self.flushes = [], 0

    def send(self, type_, **fields):
        self.sent.append((type_, fields))
        if len(self.sent) % self.buffer_limit == 0:  # what the real one does at its limit
            self.flushes += 1


def test_task_events_show_each_batch_of_a_flush_with_its_outcome(task):
    """Flower sees events.persist: started at the flush, then succeeded / retried / failed with
    the batch id, its size and the reason, sent as one buffered lot (no publish per message)."""
    import ast

    consumer = _consumer("c")
    consumer.event_dispatcher = d = FakeDispatcher()
    task.Strategy(task, task.app, consumer)
    reqs = [FakeRequest(f"r{i}") for i in range(30)]
    task.flush(reqs)
    assert [t for t, _ in d.sent] == ["task-started"] * 30 and d.flushes == 0, "one lot, not a publish per 24"
    results = {f"r{i}": {"batch_id": f"b{i}", "events": 3, "outcome": "stored", "stored": 3} for i in range(27)}
    results["r27"] = {"batch_id": "b27", "events": 3, "outcome": "parked", "reason": "retry in 5.0 s: bad row"}
    results["r28"] = {"batch_id": "b28", "events": 3, "outcome": "dead_lettered", "reason": "bad row"}
    results["r29"] = {"batch_id": "b29", "events": 3, "outcome": "requeued", "reason": "storage unavailable: x"}
    verdicts = {rid: "ack" for rid in results if rid != "r29"}
    d.sent.clear()
    consumer.pool.calls[-1]["callback"]({"verdicts": verdicts, "pause": False, "results": results})
    assert d.flushes == 0 and d.buffer_limit == 24, "the buffer limit is restored after the lot"
    by_id = {f["uuid"]: (t, f) for t, f in d.sent}
    kind, fields = by_id["r0"]
    assert kind == "task-succeeded" and ast.literal_eval(fields["result"]) == {
        "batch_id": "b0", "events": 3, "outcome": "stored", "stored": 3, "flush": 30}
    assert by_id["r27"][0] == "task-retried" and "bad row" in by_id["r27"][1]["exception"]
    assert by_id["r28"][0] == "task-failed" and by_id["r28"][1]["exception"] == "BatchDeadLettered('b28': bad row)"
    assert by_id["r29"][0] == "task-retried" and "storage unavailable" in by_id["r29"][1]["exception"]
    assert reqs[29].requeued == 1 and reqs[28].acked == 1


def test_no_task_events_without_dash_e_or_for_a_muted_task(task):
    consumer = _consumer("c")
    consumer.event_dispatcher = d = FakeDispatcher()
    d.enabled = False
    task.Strategy(task, task.app, consumer)
    task.flush([FakeRequest("a")])
    consumer.pool.calls[-1]["callback"]({"verdicts": {"a": "ack"}, "pause": False})
    d.enabled, task.send_events = True, False
    task.flush([FakeRequest("b")])
    consumer.pool.calls[-1]["callback"]({"verdicts": {"b": "ack"}, "pause": False})
    assert d.sent == []

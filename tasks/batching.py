"""celery-batches with the acks Observer needs, fixed for broker restarts.

Stock celery-batches 0.11:
- acks acks_late requests when the flush *returns*, even after an exception;
- passes no ``error_callback``, so when a pool child dies mid-flush its messages are neither
  acked nor requeued until the visibility timeout, and their prefetch slots stay taken;
- keeps its flush timer on the task instance while the timer belongs to the consumer's event
  loop: after a broker reconnect Celery rebuilds the consumer and calls ``Strategy`` again, the
  old timer is dead, ``_tref`` is still set, and the worker never flushes again
  (celery-batches #99/#107, fixed upstream in #108 after 0.11).

Here the flush returns one verdict per request (ack or requeue); a dead child requeues every
message of its flush at once; ``Strategy`` re-arms the timer on the new consumer; and while
storage is paused the flush holds its requests in the buffer (the prefetch window stays full,
so the broker stops delivering) for at most ``hold_limit`` seconds before requeueing them.

Task events: stock celery-batches sends none (the flush is no Celery request), so Flower never
saw ``events.persist``. Here, on a worker started with ``-E``, every buffered message gets the
events a plain task gets, from the worker's own dispatcher: ``task-received`` as it arrives,
``task-started`` when its flush is handed to the pool, then ``task-succeeded`` (result: what
became of it, e.g. ``{'outcome': 'stored', 'batch_id': ..., 'events': 12, 'stored': 12,
'flush': 250}``), ``task-retried`` (parked or requeued, with the reason) or ``task-failed``
(dead-lettered, with the reason), with the flush's runtime. A flush's terminal events go out as
one ``task.multi`` message (the dispatcher's buffer is widened for them), not one per message.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Collection
from typing import Any

from celery import Celery, Task, signals
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from app.observability import metrics
from app.retry.backoff import pause_delay

log = logging.getLogger(__name__)


class AckOnSuccessBatches(Batches):
    """Batches task with per-request verdicts, lost-child requeue, pause and re-armed timer."""

    #: seconds a request may wait in the buffer while storage is paused (< visibility timeout / 2)
    hold_limit = 25.0
    #: longest pause between probes of unavailable storage
    pause_max = 30.0
    #: scales pauses like every other retry delay (RETRY_TIME_SCALE)
    time_scale = 1.0

    _tref: Any  # Batches' flush timer (None until armed)
    #: the consumer's event dispatcher (set by Strategy; disabled without -E)
    _eventer: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._paused_until = 0.0
        self._pauses = 0
        self._state_lock = threading.Lock()
        self.in_flight = 0
        self.last_progress = time.time()
        self.restarts = 0

    # -- consumer (re)start -----------------------------------------------------------------
    def Strategy(self, task: Task, app: Celery, consumer: Any) -> Any:  # noqa: N802 (celery's name)
        """Build the message handler for a (re)started consumer, re-arming the flush timer."""
        if self._tref is not None:
            # The timer lives on the previous consumer's hub, which is gone after a reconnect.
            with contextlib.suppress(Exception):  # a timer of a dead hub may refuse even that
                self._tref.cancel()
            self._tref = None
            self.restarts += 1
            log.warning("events consumer restarted; flush timer re-armed", extra={"restarts": self.restarts})
        self._eventer = getattr(consumer, "event_dispatcher", None)
        handler = super().Strategy(task, app, consumer)
        if self.held() and self._tref is None:
            # Requests buffered before the reconnect still need a flush (acks of messages from
            # the old connection fail harmlessly; the broker then restores them).
            self._tref = consumer.timer.call_repeatedly(self.flush_interval, self._do_flush)
        return handler

    def held(self) -> int:
        """Requests buffered or in a running flush (for the stall watchdog)."""
        held: int = self._buffer.qsize() + self._pending.qsize() + self.in_flight
        return held

    # -- flush ------------------------------------------------------------------------------
    def flush(self, requests: Collection[Any]) -> Any:
        """Hand ``requests`` to the pool (or hold them while storage is paused)."""
        now = time.monotonic()
        if now < self._paused_until:
            self._hold(requests, now)
            return None
        serializable = ([SimpleRequest.from_request(r) for r in requests],)
        with self._state_lock:
            self.in_flight += len(requests)
        started = time.monotonic()
        self._send_events([("task-started", {"uuid": r.id}) for r in requests])
        return self._pool.apply_async(apply_batches_task, (self, serializable, 0, None),
                                      callback=functools.partial(self._returned, requests, started=started),
                                      error_callback=functools.partial(self._lost, requests, started=started))

    def _returned(self, requests: Collection[Any], result: Any, started: float | None = None) -> None:
        """The flush's verdicts: ack what it stored, requeue the rest (all of a failed flush)."""
        verdicts = result.get("verdicts", {}) if isinstance(result, dict) else {}
        results = (result.get("results") if isinstance(result, dict) else None) or {}
        for req in requests:
            if verdicts.get(req.id) == "ack":
                req.acknowledge()
            else:  # requeue, or a flush that failed outright: back to the broker now
                req.reject(requeue=True)
        why = None if isinstance(result, dict) else "flush failed: no verdicts"
        self._send_events([self.terminal_event(req.id, verdicts.get(req.id), results.get(req.id), len(requests),
                                               started, why) for req in requests])
        self._settled(len(requests), pause=bool(isinstance(result, dict) and result.get("pause")))

    def _lost(self, requests: Collection[Any], exc_info: Any, started: float | None = None) -> None:
        """The pool child died (WorkerLostError) or the pool refused the job: requeue all now."""
        metrics.FLUSH_LOST.inc()
        log.error("events flush lost its pool child; requeueing",
                  extra={"requests": len(requests), "error": str(exc_info)[:300]})
        for req in requests:
            req.reject(requeue=True)
        why = f"flush lost its pool child: {str(exc_info)[:200]}"
        self._send_events([self.terminal_event(req.id, None, None, len(requests), started, why) for req in requests])
        self._settled(len(requests), pause=False)

    # -- task events (Flower) ---------------------------------------------------------------
    def events_on(self) -> bool:
        """True when this worker sends task events (-E) and this task is not muted."""
        d = self._eventer
        return bool(d is not None and getattr(d, "enabled", False) and self.send_events)

    def note_received(self, request: Any) -> None:
        """``task-received`` for a message put in the buffer (what Celery's strategy sends)."""
        if not self.events_on():
            return
        rd = getattr(request, "request_dict", None) or {}
        eta, expires = getattr(request, "eta", None), getattr(request, "expires", None)
        self._send_events([("task-received", {
            "uuid": request.id, "name": request.name, "args": request.argsrepr, "kwargs": request.kwargsrepr,
            "root_id": request.root_id, "parent_id": request.parent_id, "retries": rd.get("retries", 0),
            "eta": eta.isoformat() if eta else None, "expires": expires.isoformat() if expires else None})])

    @staticmethod
    def terminal_event(rid: str, verdict: str | None, result: dict | None, size: int, started: float | None,
                       why: str | None = None) -> tuple[str, dict]:
        """The event that ends one request of a flush: succeeded (stored, duplicate, ...), retried
        (parked, or requeued with the reason) or failed (dead-lettered, with the reason)."""
        runtime = round(time.monotonic() - started, 6) if started is not None else 0.0
        info = dict(result or {}, flush=size)
        outcome = info.get("outcome") or ("done" if verdict == "ack" else "requeued")
        reason = str(info.pop("reason", None) or why or "")
        if outcome == "dead_lettered":
            return "task-failed", {"uuid": rid, "runtime": runtime,
                                   "exception": f"BatchDeadLettered({info.get('batch_id')!r}: {reason})",
                                   "traceback": reason}
        if outcome in ("parked", "requeued") or verdict != "ack":
            label = "BatchParked" if outcome == "parked" else "BatchRequeued"
            return "task-retried", {"uuid": rid, "runtime": runtime,
                                    "exception": f"{label}({info.get('batch_id')!r}: {reason or outcome})",
                                    "traceback": reason or outcome}
        return "task-succeeded", {"uuid": rid, "runtime": runtime, "result": repr(dict(info, outcome=outcome))}

    def _send_events(self, events: list[tuple[str, dict]]) -> None:
        """Send ``events`` through the worker's dispatcher as one message when it buffers task
        events (a worker with an event loop: every prefork/threads worker on Redis or AMQP).
        Best effort: a lost event must never cost a message its ack."""
        if not events or not self.events_on():
            return
        d = self._eventer
        buffered = "task" in (getattr(d, "buffer_group", None) or ())
        limit = d.buffer_limit
        try:
            if buffered:  # hold the whole lot for the event loop's next flush (one task.multi)
                d.buffer_limit = limit + len(events)
            for type_, fields in events:
                d.send(type_, **fields)
        except Exception as exc:  # the broker refusing an event must not disturb the flush
            log.warning("task events not sent", extra={"events": len(events), "error": str(exc)[:200]})
        finally:
            if buffered:
                d.buffer_limit = limit

    def _settled(self, n: int, *, pause: bool) -> None:
        with self._state_lock:
            self.in_flight = max(0, self.in_flight - n)
            self.last_progress = time.time()
            if pause:
                # Exponential pause with jitter between probes: while ClickHouse is away the
                # worker neither hammers it nor churns messages through the broker.
                self._paused_until = time.monotonic() + pause_delay(self._pauses, cap=self.pause_max,
                                                                    scale=self.time_scale)
                self._pauses += 1
                metrics.EVENTS_PAUSES.inc()
            else:
                self._pauses = 0

    def _hold(self, requests: Collection[Any], now: float) -> None:
        """Keep requests buffered during a pause; requeue those held too long."""
        for req in requests:
            since = getattr(req, "_observer_held_since", None)
            if since is None:
                since = now
                req._observer_held_since = now
            if now - since < self.hold_limit:
                self._pending.put(req)
            else:
                req.reject(requeue=True)
        with self._state_lock:
            self.last_progress = time.time()


@signals.task_received.connect
def _received(sender: Any = None, request: Any = None, **_kw: Any) -> None:
    """celery-batches sends this signal for each message it buffers, but no task event."""
    task = getattr(request, "task", None)
    if isinstance(task, AckOnSuccessBatches):
        task.note_received(request)

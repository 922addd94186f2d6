"""Worker watchdogs: broker restores counted, and a heartbeat that shows a stalled worker.

- kombu's Redis transport gives a message back to the queue when it stayed unacked past the
  visibility timeout (``QoS.restore_visible``). On a live worker that means a message waited
  too long; after a crash it is the recovery. Either way it is counted
  (``observer_broker_restores_total``) and logged ("broker restored unacked messages").
- Every worker's main process writes a heartbeat to Redis every few seconds: how many
  messages it holds and when it last made progress. ``/ready`` and ``/metrics`` read them; a
  worker holding messages with no progress for ``stall_after`` seconds is reported stalled.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from app.observability import metrics
from app.observability.heartbeats import heartbeat_key
from app.storage.redis import RedisClient

log = logging.getLogger(__name__)
_local = threading.local()


def install_restore_counter() -> None:
    """Wrap kombu's visibility-timeout restore so each restored message is counted."""
    try:
        from kombu.transport import redis as kredis
    except ImportError:  # pragma: no cover - kombu always ships it
        return
    qos = kredis.QoS
    if getattr(qos, "_observer_wrapped", False):
        return
    original_visible, original_by_tag = qos.restore_visible, qos.restore_by_tag

    def restore_visible(self: kredis.QoS, *args: Any, **kwargs: Any) -> Any:
        _local.counting, _local.count = True, 0
        try:
            return original_visible(self, *args, **kwargs)
        finally:
            n, _local.counting = _local.count, False
            if n:
                metrics.BROKER_RESTORES.inc(n)
                log.warning("broker restored unacked messages", extra={"count": n})

    def restore_by_tag(self: kredis.QoS, tag: str, client: Any = None, leftmost: bool = False) -> Any:
        if getattr(_local, "counting", False):
            _local.count += 1
        return original_by_tag(self, tag, client, leftmost)

    # Patching the class is the point (kombu has no hook for restores); mypy sees methods.
    qos.restore_visible, qos.restore_by_tag = restore_visible, restore_by_tag  # type: ignore[method-assign]
    setattr(qos, "_observer_wrapped", True)  # noqa: B010 -- a marker kombu's class does not declare


class Heartbeat:
    """Writes this worker's holding/progress state to Redis every ``interval`` seconds."""

    def __init__(self, redis_factory: Callable[[], RedisClient], prefix: str, name: str,
                 probe: Callable[[], tuple[int, float]], interval: float = 5.0) -> None:
        self.redis_factory = redis_factory
        self.key = heartbeat_key(prefix, name)
        self.name = name
        self.probe = probe  # () -> (held, last_progress_epoch)
        self.interval = interval

    def start(self) -> None:
        """Run in a daemon thread of the worker's main process."""
        threading.Thread(target=self._loop, name="observer-heartbeat", daemon=True).start()

    def beat(self) -> dict:
        """Write one heartbeat; returns it."""
        held, last = self.probe()
        state = {"worker": self.name, "host": socket.gethostname(), "held": held, "last_progress": last,
                 "at": time.time()}
        self.redis_factory().set(self.key, json.dumps(state), ex=int(max(30, self.interval * 6)))
        return state

    def _loop(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:  # Redis away: the heartbeat's absence is the signal
                log.warning("worker heartbeat failed", extra={"error": str(exc)[:200]})
            time.sleep(self.interval)

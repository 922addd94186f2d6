"""Handing work to Celery from the web process, by task name (no task bodies imported)."""
from __future__ import annotations

import enum
import logging
import threading
import time

from celery import Celery

log = logging.getLogger(__name__)


class Queue(str, enum.Enum):
    """The queues; each gets its own worker pool and concurrency."""

    EVENTS = "events"
    SESSIONS = "sessions"
    FORWARD = "forward"
    # beat's sweeps: a queue of their own so a backlog of work never delays finalization
    MAINTENANCE = "maintenance"


def batch_message(batch: dict, serializer: str = "msgpack", kwargs: dict | None = None) -> dict:
    """send_task options for an ``events.persist`` message carrying ``batch``.

    msgpack is about 3x cheaper to encode than kombu's JSON and zlib shrinks a 50-event
    body about 9x (less broker memory during a backlog, fewer bytes per round trip). Task
    events and Flower show only the batch id and its size (``argsrepr``), never its contents.
    """
    return {
        "args": [batch], "kwargs": dict(kwargs or {}), "queue": Queue.EVENTS.value, "serializer": serializer, "compression": "zlib",
        "headers": {"request_id": batch.get("request_id", "")},
        "argsrepr": f"[<batch {batch.get('batch_id', '?')}: {len(batch.get('events') or ())} events>]", "kwargsrepr": repr(dict(kwargs or {})),
    }


def send_batch(celery, batch: dict, kwargs: dict | None = None, **options) -> None:
    """Publish ``events.persist(batch)``; a batch msgpack cannot encode (never seen: the API
    refuses lone surrogates) goes as JSON."""
    from kombu.exceptions import EncodeError

    try:
        celery.send_task("events.persist", **batch_message(batch, kwargs=kwargs), **options)
    except EncodeError:
        celery.send_task("events.persist", **batch_message(batch, serializer="json", kwargs=kwargs), **options)


class BrokerUnavailable(RuntimeError):
    """The broker did not take the message."""


def make_celery(settings, name: str = "observer") -> Celery:
    """A Celery app configured from celeryconfig plus the runtime settings."""
    app = Celery(name)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = settings.celery_broker_url
    opts = dict(app.conf.broker_transport_options or {})
    timeout = settings.broker_socket_timeout
    if settings.celery_broker_url.startswith("redis"):
        # The redelivery delay after a worker dies, and longer than anything a live worker
        # holds unacked (checked in settings), so a held message is never handed out twice.
        vt = settings.broker_visibility_timeout
        opts = {
            "visibility_timeout": vt,
            # kombu scans for abandoned (unacked past the timeout) messages every
            # interval x throttle seconds (100 s by default); scan every vt/10 instead.
            "unacked_restore_interval": max(1, min(60, vt // 10)),
            "unacked_restore_throttle": 1,
            # Without a socket timeout a half-open broker connection (a stopped or partitioned
            # Redis) blocks the caller for ever; kombu's docs warn about it. Must exceed
            # kombu's BRPOP timeout (1 s).
            "socket_timeout": max(timeout, 2.0),
            "socket_connect_timeout": min(timeout, 2.0),
            "socket_keepalive": True,
            "health_check_interval": 10,
        }
    elif settings.celery_broker_url.startswith(("amqp", "pyamqp")):
        opts.update({"read_timeout": timeout, "write_timeout": timeout})
    app.conf.broker_transport_options = opts
    return app


class MemoryGuard:
    """Refuses new batches while the Redis broker is near its ``maxmemory``.

    At ``maxmemory`` with ``noeviction`` Redis refuses every write that grows memory, the
    workers' own bookkeeping included (the unacked record of a delivered message): a worker
    meets ``OutOfMemoryError`` and Celery calls that unrecoverable. So the API stops taking
    batches at ``limit`` of ``maxmemory`` (503, Retry-After) and leaves the rest to the workers,
    which drain the backlog and free memory. ``INFO memory`` is read at most once a second.
    """

    def __init__(self, url: str, limit: float, interval: float = 1.0) -> None:
        self.url, self.limit, self.interval = url, limit, interval
        self._checked, self._full = 0.0, False
        self._lock = threading.Lock()

    def full(self) -> bool:
        """True while used_memory is above ``limit`` x maxmemory (False when no maxmemory is set)."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.interval:
                return self._full
            self._checked = now
        from app.storage import redis as redis_pool

        info = redis_pool.client(self.url).info("memory")
        maxmemory = int(info.get("maxmemory") or 0)
        full = bool(maxmemory) and int(info.get("used_memory") or 0) > self.limit * maxmemory
        with self._lock:
            self._full = full
        return full


class Publisher:
    """Publishes one message per accepted batch."""

    def __init__(self, settings) -> None:
        self.celery = make_celery(settings, "observer-web")
        redis_broker = settings.celery_broker_url.startswith(("redis", "rediss", "unix"))
        self.guard = MemoryGuard(settings.celery_broker_url, settings.broker_memory_limit) if redis_broker else None

    def ensure_capacity(self) -> None:
        """Raise BrokerUnavailable while the broker is near maxmemory (checked before the journal)."""
        try:
            full = self.guard is not None and self.guard.full()
        except Exception as exc:  # the broker does not answer INFO: it will not take the batch either
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if full:
            log.error("batch refused: broker near maxmemory")
            raise BrokerUnavailable("the broker is near its maxmemory")

    def publish_batch(self, batch: dict, request_id: str) -> None:
        """Publish ``events.persist(batch)``; raises BrokerUnavailable when it cannot."""
        try:
            send_batch(
                self.celery, batch,
                # One quick retry rides out a reconnect; a broker that stays silent costs at most
                # about two socket timeouts, then the client gets 503 + Retry-After.
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
            )
        except Exception as exc:  # kombu/redis/amqp raise many types; all mean "not published"
            log.error("publish failed", extra={"error": f"{type(exc).__name__}: {exc}", "batch_id": batch["batch_id"]})
            raise BrokerUnavailable(str(exc)) from exc

    def ping(self) -> None:
        """Raise unless the broker answers."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

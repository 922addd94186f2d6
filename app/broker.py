"""Handing work to Celery from the web process, by task name (no task bodies imported)."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from celery import Celery, signals
from kombu import Exchange
from kombu import Queue as KombuQueue

from app.names import Queue, TaskName

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)


def batch_message(batch: dict, serializer: str = "msgpack", kwargs: dict | None = None) -> dict:
    """send_task options for an ``events.persist`` message carrying ``batch``.

    msgpack is about 3x cheaper to encode than kombu's JSON and zlib shrinks a 50-event
    body about 9x (less broker memory during a backlog, fewer bytes per round trip). Task
    events and Flower show only the batch id and its size (``argsrepr``), never its contents.
    """
    return {
        "args": [batch], "kwargs": dict(kwargs or {}), "queue": Queue.EVENTS.value, "serializer": serializer,
        "compression": "zlib", "headers": {"request_id": batch.get("request_id", "")},
        "argsrepr": f"[<batch {batch.get('batch_id', '?')}: {len(batch.get('events') or ())} events>]",
        "kwargsrepr": repr(dict(kwargs or {})),
    }


def send_batch(celery: Celery, batch: dict, kwargs: dict | None = None, **options: Any) -> None:
    """Publish ``events.persist(batch)``; a batch msgpack cannot encode (never seen: the API
    refuses lone surrogates) goes as JSON."""
    from kombu.exceptions import EncodeError

    try:
        celery.send_task(TaskName.EVENTS_PERSIST, **batch_message(batch, kwargs=kwargs), **options)
    except EncodeError:
        celery.send_task(TaskName.EVENTS_PERSIST, **batch_message(batch, serializer="json", kwargs=kwargs), **options)


def send_forward(celery: Celery, project: str, session_id: str, version: int, **kwargs: Any) -> None:
    """Publish ``forward.deliver`` for one session version (ids only: Flower shows them as they are)."""
    celery.send_task(TaskName.FORWARD_DELIVER, args=[project, session_id, int(version)], kwargs=kwargs,
                     queue=Queue.FORWARD.value)


def summary_repr(summary: dict) -> str:
    """argsrepr of a ``sessions.update`` message: its batch id and counts."""
    sessions = summary.get("sessions") or {}
    events = sum(c[0] for c in sessions.values())
    return f"[<summary {summary.get('batch_id', '?')}: {len(sessions)} sessions, {events} events>]"


def send_session_update(celery: Celery, summary: dict, request_id: str) -> None:
    """Publish ``sessions.update(summary)``; task events and Flower show ids and counts only."""
    celery.send_task(TaskName.SESSIONS_UPDATE, args=[summary], queue=Queue.SESSIONS.value,
                     argsrepr=summary_repr(summary), kwargsrepr="{}", headers={"request_id": request_id},
                     retry=True, retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5})


def send_sessions_row(celery: Celery, row: list, webhook_id: str) -> None:
    """Publish ``forward.record(row)``: the events worker writes many sessions rows per INSERT."""
    celery.send_task(TaskName.FORWARD_RECORD, args=[row], queue=Queue.EVENTS.value,
                     argsrepr=f"[<sessions row {webhook_id}>]", kwargsrepr="{}")


class BrokerUnavailable(RuntimeError):
    """The broker did not take the message."""


class BrokerBlocked(BrokerUnavailable):
    """RabbitMQ blocks publishers (memory or disk alarm): it reads nothing until the alarm clears."""


def queue_depth(celery: Celery, settings: Settings, queue: Queue) -> int:
    """Messages ready in ``queue`` on the broker (held ones not included): the Redis list's
    length, or RabbitMQ's count from a passive declare. Raises when the broker does not answer."""
    if settings.celery_broker_url.startswith(("redis", "rediss", "unix")):
        from app.storage import redis_clients

        return int(redis_clients.client(settings.celery_broker_url).llen(queue.value))
    with celery.connection_for_read() as conn:
        channel: Any = conn.default_channel  # py-amqp's channel; kombu's stubs only know StdChannel
        _name, depth, _consumers = channel.queue_declare(queue.value, passive=True)
        return int(depth)


def amqp_queues() -> tuple:
    """The queues on RabbitMQ: quorum queues (replicated, durable), each on a topic exchange.

    Celery 5.5+ sees ``x-queue-type: quorum``: it uses per-consumer prefetch (quorum queues have
    no global QoS) and sends countdowns through its native delayed delivery (``celery_delayed_*``
    quorum queues with TTL and at-least-once dead-lettering) instead of holding them unacked on
    a worker whose prefetch can no longer grow. That needs a non-direct exchange, hence topic
    (routing key = queue name, so it routes like direct). RabbitMQ cannot change a declared
    queue's type or an exchange's: a broker that has classic ``events``... queues needs a new
    vhost (or drained and deleted queues) before this runs (docs/SCALE-OUT.md, RabbitMQ).
    """
    return tuple(KombuQueue(q.value, Exchange(q.value, type="topic", durable=True), routing_key=q.value,
                            durable=True, queue_arguments={"x-queue-type": "quorum"}) for q in Queue)


def make_celery(settings: Settings, name: str = "observer") -> Celery:
    """A Celery app configured now from celeryconfig plus ``settings`` (the web's publisher)."""
    app = Celery(name)
    app.config_from_object("celeryconfig")
    configure(app, settings)
    return app


def configure(app: Celery, settings: Settings) -> None:
    """Apply what the settings decide: the broker, its transport options, RabbitMQ's queues.

    Only writes to ``app.conf``: called from ``on_configure`` too, before the configuration is
    built (a read there would build it).
    """
    app.conf.update(broker_url=settings.celery_broker_url,  # (celery-types has conf.broker_url read-only)
                    broker_transport_options=transport_options(settings))
    if settings.celery_broker_url.startswith(("amqp", "pyamqp")):
        app.conf.update(task_queues=amqp_queues())
        signals.worker_init.connect(_declare_queues, weak=False, dispatch_uid="observer-declare-queues")


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's transport options for the broker the settings name."""
    timeout = settings.broker_socket_timeout
    if settings.celery_broker_url.startswith(("amqp", "pyamqp")):
        # A publish returns once RabbitMQ has the message (publisher confirms).
        return {"confirm_publish": True, "read_timeout": timeout, "write_timeout": timeout,
                "on_blocked": _log_blocked, "on_unblocked": _log_unblocked}
    # The redelivery delay after a worker dies, and longer than anything a live worker
    # holds unacked (checked in settings), so a held message is never handed out twice.
    vt = settings.broker_visibility_timeout
    return {
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


def _declare_queues(sender: object = None, **_kw: object) -> None:
    """A RabbitMQ worker declares every queue and exchange at start, not just the ones it consumes.

    Celery's delayed-delivery step binds every queue's exchange to ``celery_delayed_delivery``;
    on a new vhost an exchange no worker declared yet makes that step fail for the whole worker
    ("native delayed delivery will not be available"). Best effort: a broker that is down now
    is retried by the consumer, which declares its own queues when it connects.
    """
    app = getattr(sender, "app", None)
    if app is None or not str(app.conf.broker_url or "").startswith(("amqp", "pyamqp")):
        return
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.channel()
            try:
                for queue in app.amqp.queues.values():
                    queue(channel).declare()
            finally:
                channel.close()
    except Exception as exc:
        log.warning("queues not declared at worker start", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})


def _log_blocked(reason: str) -> None:
    log.error("broker blocks publishing (RabbitMQ memory or disk alarm)", extra={"reason": reason})


def _log_unblocked() -> None:
    log.warning("broker publishing unblocked")


class BlockedNotice:
    """RabbitMQ's ``connection.blocked``, as one web process sees it.

    At its memory or disk alarm RabbitMQ stops reading from publishing connections (it never
    refuses a publish): the message sits in the socket and its confirm comes once the alarm
    clears, minutes later. The notice arrives while the publisher waits for that confirm; the
    handler ends the wait at once, and for ``hold`` seconds later batches are refused without
    touching the broker. After that one publish probes again. The refused message, already
    written, is enqueued when RabbitMQ reads again: a 503 for a batch the client sends again,
    which its batch id and event ids make harmless.
    """

    def __init__(self, hold: float = 1.0) -> None:
        self.hold = hold
        self._until = 0.0

    def on_blocked(self, reason: str) -> None:
        """py-amqp's handler, called inside the confirm wait: raising ends that wait."""
        self._until = time.monotonic() + self.hold
        _log_blocked(reason)
        raise BrokerBlocked(reason)

    def on_unblocked(self) -> None:
        self._until = 0.0
        _log_unblocked()

    def check(self) -> None:
        """Raise BrokerBlocked while a recent notice holds."""
        if time.monotonic() < self._until:
            raise BrokerBlocked("the broker blocks publishing (resource alarm)")


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
        from app.storage import redis_clients

        info = redis_clients.client(self.url).info("memory")
        maxmemory = int(info.get("maxmemory") or 0)
        full = bool(maxmemory) and int(info.get("used_memory") or 0) > self.limit * maxmemory
        with self._lock:
            self._full = full
        return full


class Publisher:
    """Publishes one message per accepted batch."""

    def __init__(self, settings: Settings) -> None:
        self.celery = make_celery(settings, "observer-web")
        redis_broker = settings.celery_broker_url.startswith(("redis", "rediss", "unix"))
        self.guard = MemoryGuard(settings.celery_broker_url, settings.broker_memory_limit) if redis_broker else None
        self.blocked = None
        self.confirm_timeout = None
        if settings.celery_broker_url.startswith(("amqp", "pyamqp")):
            self.blocked = BlockedNotice()
            self.confirm_timeout = settings.broker_socket_timeout
            self.celery.conf.broker_transport_options = dict(
                self.celery.conf.broker_transport_options,
                on_blocked=self.blocked.on_blocked, on_unblocked=self.blocked.on_unblocked)

    def ensure_capacity(self) -> None:
        """Raise BrokerUnavailable while the broker is near maxmemory or blocks publishers
        (checked before the journal)."""
        if self.blocked is not None:
            self.blocked.check()
        try:
            full = self.guard is not None and self.guard.full()
        except Exception as exc:  # the broker does not answer INFO: it will not take the batch either
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if full:
            log.error("batch refused: broker near maxmemory")
            raise BrokerUnavailable("the broker is near its maxmemory")

    def publish_batch(self, batch: dict, request_id: str) -> None:
        """Publish ``events.persist(batch)``; raises BrokerUnavailable when it cannot."""
        if self.blocked is not None:
            self.blocked.check()
        # RabbitMQ: the confirm wait is bounded too (a blocked or frozen node sends none).
        confirm: dict[str, Any] = {"confirm_timeout": self.confirm_timeout} if self.confirm_timeout else {}
        with self.celery.producer_pool.acquire(block=True) as producer:
            try:
                send_batch(
                    self.celery, batch, producer=producer,
                    # One quick retry rides out a reconnect; a broker that stays silent costs at
                    # most about two socket timeouts, then the client gets 503 + Retry-After.
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
                    **confirm,
                )
            except Exception as exc:  # kombu/redis/amqp raise many types; all mean "not published"
                if self.blocked is not None and producer.connection is not None:
                    # Drop the socket without AMQP's close handshake: a blocked or frozen node
                    # would not answer it either (two more socket timeouts).
                    producer.connection.collect()
                log.error("publish failed",
                          extra={"error": f"{type(exc).__name__}: {exc}", "batch_id": batch["batch_id"]})
                if isinstance(exc, BrokerUnavailable):
                    raise
                raise BrokerUnavailable(str(exc)) from exc

    def ping(self) -> None:
        """Raise unless the broker answers."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

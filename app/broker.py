"""Handing work to Celery from the web process, by task name (no task bodies imported)."""
from __future__ import annotations

import enum
import logging

from celery import Celery

log = logging.getLogger(__name__)


class Queue(str, enum.Enum):
    """The three queues; each gets its own worker pool and concurrency."""

    EVENTS = "events"
    SESSIONS = "sessions"
    FORWARD = "forward"


class BrokerUnavailable(RuntimeError):
    """The broker did not take the message."""


def make_celery(settings, name: str = "observer") -> Celery:
    """A Celery app configured from celeryconfig plus the runtime settings."""
    app = Celery(name)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = settings.celery_broker_url
    opts = dict(app.conf.broker_transport_options or {})
    if settings.celery_broker_url.startswith("redis"):
        # Longer than any countdown we schedule (checked in settings), so ETA retries are not
        # redelivered early; also the redelivery delay after a worker dies.
        vt = settings.broker_visibility_timeout
        opts = {
            "visibility_timeout": vt,
            # kombu scans for abandoned (unacked past the timeout) messages every
            # interval x throttle seconds (100 s by default); scan every vt/10 instead.
            "unacked_restore_interval": max(1, min(60, vt // 10)),
            "unacked_restore_throttle": 1,
        }
    app.conf.broker_transport_options = opts
    return app


class Publisher:
    """Publishes one message per accepted batch."""

    def __init__(self, settings) -> None:
        self.celery = make_celery(settings, "observer-web")

    def publish_batch(self, batch: dict, request_id: str) -> None:
        """Publish ``events.persist(batch)``; raises BrokerUnavailable when it cannot."""
        try:
            self.celery.send_task(
                "events.persist", args=[batch], queue=Queue.EVENTS.value,
                headers={"request_id": request_id},
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
            )
        except Exception as exc:  # kombu/redis/amqp raise many types; all mean "not published"
            log.error("publish failed", extra={"error": f"{type(exc).__name__}: {exc}", "batch_id": batch["batch_id"]})
            raise BrokerUnavailable(str(exc)) from exc

    def ping(self) -> None:
        """Raise unless the broker answers."""
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

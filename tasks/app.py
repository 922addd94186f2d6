"""The Celery app, with beat's schedule and the worker signals (logging, prefetch cap, Sentry,
metrics, heartbeats, chDB ownership).

Nothing reads the settings at import: the app takes them (the broker, beat's interval) when its
configuration is first read, which ``celery -A tasks`` does after the import, and the signal
handlers when they run.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Celery, Task, signals
from celery.exceptions import Reject, Retry

from app import broker, resources
from app.names import Queue, TaskName
from app.observability import heartbeats, restores
from app.observability import logging as obs_logging
from app.observability.context import request_id_var, task_id_var
from app.retry.countdown import Countdown
from app.settings import ConfigError, Settings
from tasks.batching import AckOnSuccessBatches

log = logging.getLogger(__name__)

celery = Celery("observer")
celery.config_from_object("celeryconfig")
celery.conf.include = ["tasks.events", "tasks.sessions", "tasks.forward", "tasks.maintenance"]


@celery.on_configure.connect
def _configure(sender: Celery, **_kw: Any) -> None:
    """The settings' part of the configuration, applied as it is first read."""
    try:
        settings = resources.settings()
    except ConfigError as exc:
        # Celery logs and swallows a receiver's Exception: a bad setting must stop the process.
        raise SystemExit(f"observer: {exc}") from exc
    broker.configure(sender, settings)
    sender.conf.update(beat_schedule=beat_schedule(settings))


def beat_schedule(settings: Settings) -> dict[str, dict]:
    """Beat's entries, each on the maintenance queue, each expiring so late ticks do not pile up."""
    sweep = settings.session_sweep_interval
    every = {
        # On its own queue, so a work backlog never delays it; a tick nobody ran within a few
        # intervals is dropped instead of piling up (the next one does the same work).
        TaskName.MAINTENANCE_SWEEP: (sweep, max(5.0, 3 * sweep)),
        # Versions ClickHouse knows and the sessions Redis lost (a failover, a flush): rare, and
        # each run reads ClickHouse, so once a minute.
        TaskName.MAINTENANCE_RECONCILE: (60.0, 60.0),
        # Deletion requests (app/deletion/job.py): each run moves every open one a stage on;
        # `data delete` asks for a run at once.
        TaskName.MAINTENANCE_DELETIONS: (60.0, 60.0),
        # Retention (app/retention.py): expired partitions dropped whole, once a day.
        TaskName.MAINTENANCE_RETENTION: (86400.0, 3600.0),
    }
    return {task.value: {"task": task.value, "schedule": interval,
                         "options": {"expires": expires, "queue": Queue.MAINTENANCE.value}}
            for task, (interval, expires) in every.items()}


def retry_in(task: Task, countdown: Countdown, **options: Any) -> Retry:
    """``task.retry`` after ``countdown`` (its kwargs replace the message's); requeues the message
    instead of dropping it when the retry cannot be published (the broker is down too)."""
    if countdown.kwargs:
        options["kwargs"] = {**(task.request.kwargs or {}), **countdown.kwargs}
    if countdown.cause is not None:
        options["exc"] = countdown.cause
    try:
        return task.retry(countdown=countdown.seconds, **options)
    except Retry:
        raise
    except Reject as exc:  # Celery drops the message when publishing the retry fails; keep it
        raise Reject(exc, requeue=True) from None


@signals.setup_logging.connect
def _setup_logging(**_kw: Any) -> None:
    s = resources.settings()
    obs_logging.configure(s.log_level, s.log_format)


@signals.worker_init.connect
def _cap_prefetch(sender: Any = None, **_kw: Any) -> None:
    """Cap what an events worker prefetches to two flushes' worth.

    A prefetched message waits for the flushes ahead of it; with at most two flushes' worth
    held, the longest wait is about 2 x (EVENTS_FLUSH_INTERVAL + CLICKHOUSE_TIMEOUT), which the
    settings check keeps under the visibility timeout, so a live worker's message is never
    handed to another worker.
    """
    if sender is None or Queue.EVENTS.value not in (celery.amqp.queues.consume_from or {}):
        return
    concurrency = max(1, int(getattr(sender, "concurrency", 1) or 1))
    cap = max(1, (2 * resources.settings().events_flush_every) // concurrency)
    if int(sender.prefetch_multiplier or 1) > cap:
        log.warning("events prefetch capped", extra={"requested": sender.prefetch_multiplier, "cap": cap,
                                                     "concurrency": concurrency})
        sender.prefetch_multiplier = cap


@signals.celeryd_init.connect
def _sentry(**_kw: Any) -> None:
    s = resources.settings()
    if s.sentry_dsn:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration

        from app.observability.sentry import safe_options

        sentry_sdk.init(dsn=s.sentry_dsn, environment=s.observer_env,
                        integrations=[CeleryIntegration()], **safe_options())


@signals.worker_ready.connect
def _metrics_server(**_kw: Any) -> None:
    """Serve this worker's (and, with PROMETHEUS_MULTIPROC_DIR, its children's) metrics."""
    port = resources.settings().worker_metrics_port
    if not port:
        return
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    registry = REGISTRY  # start_http_server's default
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    # Every interface: /metrics is scraped from outside the host (a container's published port).
    start_http_server(port, addr="0.0.0.0", registry=registry)  # noqa: S104
    log.info("worker metrics", extra={"port": port})


@signals.worker_init.connect
def _watch_restores(**_kw: Any) -> None:
    """Count the broker's visibility-timeout restores (app/observability/restores.py)."""
    restores.install_restore_counter()


@signals.worker_ready.connect
def _worker_heartbeat(sender: Any = None, **_kw: Any) -> None:
    """Publish this worker's holding/progress state (read by /ready and /metrics)."""
    consumer = getattr(sender, "consumer", None) if sender is not None else None
    name = getattr(sender, "hostname", None) or getattr(consumer, "hostname", None) or f"worker-{os.getpid()}"
    queues = sorted(celery.amqp.queues.consume_from or {})
    batches = celery.tasks.get(TaskName.EVENTS_PERSIST.value) if Queue.EVENTS.value in queues else None
    heartbeats.Heartbeat(resources.sessions_redis, resources.settings().redis_key_prefix, name,
                         WorkerProbe(batches)).start()


class WorkerProbe:
    """(messages held, epoch of the last progress) of this worker, for its heartbeat: what the
    consumer reserved plus, on the events worker, what its batching buffers or flushes."""

    def __init__(self, batches: Any = None) -> None:
        self.batches = batches if isinstance(batches, AckOnSuccessBatches) else None
        self.count, self.at = -1, time.time()

    def __call__(self) -> tuple[int, float]:
        from celery.worker import state

        done = sum(state.total_count.values())
        if done != self.count:
            self.count, self.at = done, time.time()
        held, progress = len(state.reserved_requests), self.at
        if self.batches is not None:
            held += self.batches.held()
            progress = max(progress, self.batches.last_progress)
        return held, progress


@signals.worker_process_init.connect
def _after_fork(**_kw: Any) -> None:
    resources.reset()


@signals.task_prerun.connect
def _bind_context(task_id: str | None = None, task: Any = None, **_kw: Any) -> None:
    task_id_var.set(task_id)
    headers = getattr(task.request, "headers", None) or {}
    rid = headers.get("request_id") if isinstance(headers, dict) else None
    request_id_var.set(rid or getattr(task.request, "request_id", None))


@signals.worker_ready.connect
def _owner_start(**_kw: Any) -> None:
    """With chDB this worker owns ClickHouse: apply its pending migrations and publish a heartbeat for /ready."""
    s = resources.settings()
    if not s.chdb_path:
        return
    from app.storage.clickhouse import migrations

    # The owner applies ClickHouse's pending versioned migrations itself: `flask migrate` cannot open
    # chDB, and no lock is needed because chDB admits one process per directory (docs/OPERATIONS.md#migrations).
    features, applied = migrations.apply(resources.clickhouse(), s.retention_days, s.clickhouse_cluster,
                                         dedup_window=s.dedup_window)
    log.info("chdb migrated", extra={"version": features.version,
                                     "applied": [f"{m.version} {m.name}" for m in applied]})
    heartbeats.start_clickhouse_owner_heartbeat(resources.sessions_redis, resources.clickhouse,
                                                s.redis_key_prefix)

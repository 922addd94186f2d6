"""The Celery app: configured from celeryconfig + settings, with signals for logging and chDB."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from celery import signals

from app.broker import make_celery
from app.observability import logging as obs_logging
from app.observability.context import request_id_var, task_id_var
from tasks import runtime

log = logging.getLogger(__name__)

_settings = runtime.settings()
celery = make_celery(_settings)
celery.conf.include = ["tasks.events", "tasks.sessions", "tasks.forward", "tasks.maintenance", "tasks.reconcile"]
celery.conf.beat_schedule = {
    "maintenance.sweep": {
        "task": "maintenance.sweep",
        "schedule": _settings.session_sweep_interval,
        # On its own queue, so a work backlog never delays it; a tick nobody ran within a few
        # intervals is dropped instead of piling up (the next one does the same work).
        "options": {"expires": max(5.0, 3 * _settings.session_sweep_interval), "queue": "maintenance"},
    },
    # Versions ClickHouse knows and the sessions Redis lost (a failover, a flush): rare, and
    # each run reads ClickHouse, so once a minute.
    "sessions.reconcile": {
        "task": "sessions.reconcile",
        "schedule": 60.0,
        "options": {"expires": 60.0, "queue": "maintenance"},
    },
}


@signals.setup_logging.connect
def _setup_logging(**_kw: Any) -> None:
    obs_logging.configure(_settings.log_level, _settings.log_format)


@signals.worker_init.connect
def _cap_prefetch(sender: Any = None, **_kw: Any) -> None:
    """Cap what an events worker prefetches to two flushes' worth.

    A prefetched message waits for the flushes ahead of it; with at most two flushes' worth
    held, the longest wait is about 2 x (EVENTS_FLUSH_INTERVAL + CLICKHOUSE_TIMEOUT), which the
    settings check keeps under the visibility timeout, so a live worker's message is never
    handed to another worker.
    """
    if sender is None or "events" not in (celery.amqp.queues.consume_from or {}):
        return
    concurrency = max(1, int(getattr(sender, "concurrency", 1) or 1))
    cap = max(1, (2 * _settings.events_flush_every) // concurrency)
    if int(sender.prefetch_multiplier or 1) > cap:
        log.warning("events prefetch capped", extra={"requested": sender.prefetch_multiplier, "cap": cap,
                                                     "concurrency": concurrency})
        sender.prefetch_multiplier = cap


@signals.celeryd_init.connect
def _sentry(**_kw: Any) -> None:
    if _settings.sentry_dsn:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration

        from app.observability.sentry import safe_options

        sentry_sdk.init(dsn=_settings.sentry_dsn, environment=_settings.observer_env,
                        integrations=[CeleryIntegration()], **safe_options())


@signals.worker_ready.connect
def _metrics_server(**_kw: Any) -> None:
    """Serve this worker's (and, with PROMETHEUS_MULTIPROC_DIR, its children's) metrics."""
    if not _settings.worker_metrics_port:
        return
    import os

    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    registry = REGISTRY  # start_http_server's default
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    # Every interface: /metrics is scraped from outside the host (a container's published port).
    start_http_server(_settings.worker_metrics_port, addr="0.0.0.0", registry=registry)  # noqa: S104
    log.info("worker metrics", extra={"port": _settings.worker_metrics_port})


@signals.worker_init.connect
def _watch_restores(**_kw: Any) -> None:
    """Count the broker's visibility-timeout restores (see tasks.watch)."""
    from tasks import watch

    watch.install_restore_counter()


@signals.worker_ready.connect
def _worker_heartbeat(sender: Any = None, **_kw: Any) -> None:
    """Publish this worker's holding/progress state (read by /ready and /metrics)."""
    from celery.worker import state as wstate

    from tasks import watch
    from tasks.batching import AckOnSuccessBatches

    batches = celery.tasks.get("events.persist")
    consumer = getattr(sender, "consumer", None) if sender is not None else None
    queues = sorted(celery.amqp.queues.consume_from or {}) if celery.amqp.queues.consume_from else []
    last = {"count": -1, "at": time.time()}

    def probe() -> tuple[int, float]:
        done = sum(wstate.total_count.values())
        if done != last["count"]:
            last.update(count=done, at=time.time())
        held = len(wstate.reserved_requests)
        progress = last["at"]
        if "events" in queues and isinstance(batches, AckOnSuccessBatches):
            held += batches.held()
            progress = max(progress, batches.last_progress)
        return held, progress

    name = getattr(sender, "hostname", None) or getattr(consumer, "hostname", None) or f"worker-{os.getpid()}"
    watch.Heartbeat(runtime.sessions_redis, _settings.redis_key_prefix, name, probe).start()


@signals.worker_process_init.connect
def _after_fork(**_kw: Any) -> None:
    runtime.reset()


@signals.task_prerun.connect
def _bind_context(task_id: str | None = None, task: Any = None, args: Any = None, **_kw: Any) -> None:
    task_id_var.set(task_id)
    headers = getattr(task.request, "headers", None) or {}
    rid = headers.get("request_id") if isinstance(headers, dict) else None
    rid = rid or getattr(task.request, "request_id", None)
    request_id_var.set(rid)


@signals.worker_ready.connect
def _owner_start(sender: Any = None, **_kw: Any) -> None:
    """With chDB this worker owns ClickHouse: migrate it and publish a heartbeat for /ready."""
    if not _settings.chdb_path:
        return
    from app.storage import clickhouse_migrations

    features = clickhouse_migrations.migrate(runtime.clickhouse(), _settings.clickhouse_ttl_days,
                                             _settings.clickhouse_cluster,
                                           dedup_window=_settings.dedup_window)
    log.info("chdb migrated", extra={"version": features.version})
    threading.Thread(target=_heartbeat, name="clickhouse-heartbeat", daemon=True).start()


def heartbeat_key() -> str:
    """Redis key of the ClickHouse owner's heartbeat."""
    return f"{_settings.redis_key_prefix}hb:clickhouse"


def _heartbeat() -> None:
    r = runtime.sessions_redis()
    while True:
        try:
            version = runtime.clickhouse().execute("SELECT version()")[0][0]
            state = {"ok": True, "version": version, "at": time.time()}
        except Exception as exc:  # reported through /ready, not fatal here
            state = {"ok": False, "error": str(exc)[:200], "at": time.time()}
        try:
            r.set(heartbeat_key(), json.dumps(state), ex=20)
        except Exception:
            log.warning("heartbeat write failed", exc_info=True)
        time.sleep(5)

"""The Celery app: configured from celeryconfig + settings, with signals for logging and chDB."""
from __future__ import annotations

import logging
import threading
import time
import json

from celery import signals

from app.broker import make_celery
from app.observability import logging as obs_logging
from app.observability.context import request_id_var, task_id_var
from tasks import runtime

log = logging.getLogger(__name__)

_settings = runtime.settings()
celery = make_celery(_settings)
celery.conf.include = ["tasks.events", "tasks.sessions", "tasks.forward"]
celery.conf.beat_schedule = {
    "sessions.claim_idle": {
        "task": "sessions.claim_idle",
        "schedule": _settings.session_sweep_interval,
        # A tick nobody ran within one interval is dropped instead of piling up.
        "options": {"expires": max(1.0, _settings.session_sweep_interval), "queue": "sessions"},
    },
}


@signals.setup_logging.connect
def _setup_logging(**_kw) -> None:
    obs_logging.configure(_settings.log_level, _settings.log_format)


@signals.celeryd_init.connect
def _sentry(**_kw) -> None:
    if _settings.sentry_dsn:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration

        sentry_sdk.init(dsn=_settings.sentry_dsn, environment=_settings.observer_env,
                        integrations=[CeleryIntegration()], send_default_pii=False)


@signals.worker_ready.connect
def _metrics_server(**_kw) -> None:
    """Serve this worker's (and, with PROMETHEUS_MULTIPROC_DIR, its children's) metrics."""
    if not _settings.worker_metrics_port:
        return
    import os

    from prometheus_client import CollectorRegistry, start_http_server

    registry = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(_settings.worker_metrics_port, addr="0.0.0.0", **({"registry": registry} if registry else {}))
    log.info("worker metrics", extra={"port": _settings.worker_metrics_port})


@signals.worker_process_init.connect
def _after_fork(**_kw) -> None:
    runtime.reset()


@signals.task_prerun.connect
def _bind_context(task_id=None, task=None, args=None, **_kw) -> None:
    task_id_var.set(task_id)
    headers = getattr(task.request, "headers", None) or {}
    rid = headers.get("request_id") if isinstance(headers, dict) else None
    rid = rid or getattr(task.request, "request_id", None)
    request_id_var.set(rid)


@signals.worker_ready.connect
def _owner_start(sender=None, **_kw) -> None:
    """With chDB this worker owns ClickHouse: migrate it and publish a heartbeat for /ready."""
    if not _settings.chdb_path:
        return
    from app.storage import clickhouse_migrations

    features = clickhouse_migrations.migrate(runtime.clickhouse(), _settings.clickhouse_ttl_days, _settings.clickhouse_cluster)
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

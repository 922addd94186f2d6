"""/health (process alive), /ready (dependencies), /metrics, /openapi.json."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, jsonify

from app.observability import metrics, queues
from app.observability.heartbeats import read_heartbeats
from app.storage import postgres
from app.storage import redis as redis_pool

if TYPE_CHECKING:
    from app.factory import Runtime
    from app.settings import Settings

bp = Blueprint("health", __name__)
_SPEC = Path(__file__).with_name("openapi.json")


@bp.get("/health")
def health() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


def _check(fn: Callable[[], object]) -> dict:
    started = time.perf_counter()
    try:
        detail = fn() or "ok"
        return {"ok": True, "detail": str(detail), "ms": round((time.perf_counter() - started) * 1000, 1)}
    except Exception as exc:  # every failure is a report here, never a crash
        return {"ok": False, "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}


def _clickhouse(rt: Runtime) -> str:
    s = rt.settings
    if s.chdb_path:
        # The web process never opens chDB; the owning worker publishes a heartbeat.
        raw = redis_pool.client(s.sessions_redis_url).get(f"{s.redis_key_prefix}hb:clickhouse")
        if not raw:
            raise RuntimeError("no heartbeat from the chDB owner worker")
        beat = json.loads(raw)
        if not beat.get("ok"):
            raise RuntimeError(beat.get("error", "owner reports failure"))
        return f"chdb {beat.get('version')} (heartbeat {time.time() - beat['at']:.0f}s ago)"
    from app.storage.clickhouse import get_clickhouse

    return "server " + str(get_clickhouse(s.clickhouse_url, s.clickhouse_pool_size).execute("SELECT version()")[0][0])


def _beat(s: Settings) -> str:
    raw = redis_pool.client(s.sessions_redis_url).get(f"{s.redis_key_prefix}hb:sweep")
    if not raw:
        raise RuntimeError("no maintenance sweep has finished yet (is beat running, and a maintenance worker?)")
    age = time.time() - float(raw)
    metrics.SWEEP_LAST.set(float(raw))
    if age > s.beat_stale_after:
        raise RuntimeError(f"last sweep {age:.0f}s ago (beat or the maintenance worker is down)")
    return f"last sweep {age:.1f}s ago"


def _workers(s: Settings) -> str:
    beats = read_heartbeats(redis_pool.client(s.sessions_redis_url), s.redis_key_prefix,
                            stall_after=s.broker_visibility_timeout)
    stalled = [b["worker"] for b in beats if b["stalled"]]
    if stalled:
        raise RuntimeError(f"stalled (holding messages, no progress for {s.broker_visibility_timeout}s): "
                           f"{', '.join(stalled)}")
    return f"{len(beats)} worker(s) live"


@bp.get("/ready")
def ready() -> Response:
    """Readiness: the broker must answer (it is what a 202 needs); everything else is reported.

    PostgreSQL being down does not take the web out: known keys keep working from the cache
    (KEY_CACHE_STALE_MAX); only unknown keys get 503 until it is back.
    """
    rt: Runtime = current_app.extensions["observer"]
    s = rt.settings
    checks = {
        "broker": _check(rt.publisher.ping),
        "postgres": _check(lambda: postgres.ping(s.database_url)),
        "sessions_redis": _check(lambda: redis_pool.client(s.sessions_redis_url).ping() and "ok"),
        "ratelimit_redis": _check(lambda: redis_pool.client(s.ratelimit_redis_url).ping() and "ok"),
        "clickhouse": _check(lambda: _clickhouse(rt)),
        "beat": _check(lambda: _beat(s)),
        "workers": _check(lambda: _workers(s)),
    }
    ok = checks["broker"]["ok"]
    everything = all(c["ok"] for c in checks.values())
    resp = jsonify({"status": "ok" if everything else "degraded", "checks": checks})
    resp.status_code = 200 if ok else 503
    return resp


@bp.get("/metrics")
def metrics_view() -> Response:
    """Prometheus exposition (queue depths and live sessions sampled now)."""
    rt: Runtime = current_app.extensions["observer"]
    queues.sample(rt.settings, rt.publisher.celery)
    _check(lambda: _beat(rt.settings))  # refreshes observer_beat_last_sweep_timestamp
    _check(lambda: _workers(rt.settings))  # refreshes observer_worker_stalled
    return Response(metrics.render(), mimetype="text/plain; version=0.0.4")


@bp.get("/openapi.json")
def openapi() -> Response:
    """The API contract (OpenAPI 3.1, UFSE payload under webhooks)."""
    return Response(_SPEC.read_bytes(), mimetype="application/json")

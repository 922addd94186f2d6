"""/health (process alive), /ready (dependencies), /metrics, /openapi.json."""
from __future__ import annotations

import json
import time
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify

from app.observability import metrics, queues
from app.storage import postgres
from app.storage import redis as redis_pool

bp = Blueprint("health", __name__)
_SPEC = Path(__file__).with_name("openapi.json")


@bp.get("/health")
def health():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


def _check(fn) -> dict:
    started = time.perf_counter()
    try:
        detail = fn() or "ok"
        return {"ok": True, "detail": str(detail), "ms": round((time.perf_counter() - started) * 1000, 1)}
    except Exception as exc:  # every failure is a report here, never a crash
        return {"ok": False, "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}


def _clickhouse(rt) -> str:
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

    return "server " + get_clickhouse(s.clickhouse_url, s.clickhouse_pool_size).execute("SELECT version()")[0][0]


@bp.get("/ready")
def ready():
    """Readiness: broker and PostgreSQL must answer; Redis and ClickHouse are reported."""
    rt = current_app.extensions["observer"]
    s = rt.settings
    checks = {
        "broker": _check(rt.publisher.ping),
        "postgres": _check(lambda: postgres.ping(s.database_url)),
        "sessions_redis": _check(lambda: redis_pool.client(s.sessions_redis_url).ping() and "ok"),
        "ratelimit_redis": _check(lambda: redis_pool.client(s.ratelimit_redis_url).ping() and "ok"),
        "clickhouse": _check(lambda: _clickhouse(rt)),
    }
    ok = checks["broker"]["ok"] and checks["postgres"]["ok"]
    resp = jsonify({"status": "ok" if ok else "degraded", "checks": checks})
    resp.status_code = 200 if ok else 503
    return resp


@bp.get("/metrics")
def metrics_view():
    """Prometheus exposition (queue depths and live sessions sampled now)."""
    rt = current_app.extensions["observer"]
    queues.sample(rt.settings, rt.publisher.celery)
    return Response(metrics.render(), mimetype="text/plain; version=0.0.4")


@bp.get("/openapi.json")
def openapi():
    """The API contract (OpenAPI 3.1, UFSE payload under webhooks)."""
    return Response(_SPEC.read_bytes(), mimetype="application/json")

"""/health (process alive), /openapi.json; /ready (dependencies) and /metrics on the operator
listener only.

gunicorn binds two listeners (gunicorn.conf.py): the public one (HOST:PORT), which clients and
the internet reach, and the operator one (OPERATOR_HOST:OPERATOR_PORT, loopback by default),
which only probes and scrapers should. /ready and /metrics tell how the stack is built and cost
a few round trips to each store, so they answer only on the operator listener; on the public one
they are the same 404 as any unknown path. The listener is told by the local port of the
connection's socket (gunicorn's ``gunicorn.socket``: nothing the client sends can change it),
else the WSGI server's SERVER_PORT (werkzeug's is its bound port too; Flask's test client sets it
from the base URL).

/ready costs the same however much data the stores hold: one ping or one key read per check
(worker heartbeats are one hash, not a keyspace scan), all run at once and bounded together by
READY_TIMEOUT. Its details name no host, user or URL: a foreign error shows its type only (the
message goes to the log).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Blueprint, Response, abort, current_app, jsonify, request

from app.forwarding import backlog
from app.observability import heartbeats, metrics, queues
from app.storage import postgres, redis_clients

if TYPE_CHECKING:
    from app.settings import Settings
    from app.web.factory import Runtime

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)
_SPEC = Path(__file__).with_name("openapi.json")
# Checks whose failure makes the process unready (503): without the broker no batch can be
# queued, without PostgreSQL no key outside the cache can be checked. The rest are reported.
REQUIRED = ("broker", "postgres")


class CheckFailed(RuntimeError):
    """A check's own finding, worded by us: shown in /ready as it is."""


def on_operator_listener(environ: dict, operator_port: int) -> bool:
    """True when the request came in on the operator listener (see the module's docstring)."""
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        try:
            local = sock.getsockname()
        except OSError:
            return False
        return isinstance(local, tuple) and int(local[1]) == operator_port
    return str(environ.get("SERVER_PORT", "")) == str(operator_port)


def _operator_only(rt: Runtime) -> None:
    if not on_operator_listener(request.environ, rt.settings.operator_port):
        abort(404)


@bp.get("/health")
def health() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


def _check(name: str, fn: Callable[[], object]) -> dict:
    started = time.perf_counter()
    try:
        detail = fn() or "ok"
        return {"ok": True, "detail": str(detail), "ms": round((time.perf_counter() - started) * 1000, 1)}
    except CheckFailed as exc:
        return {"ok": False, "detail": str(exc)}
    except Exception as exc:  # every failure is a report here, never a crash; its text may name hosts
        log.warning("readiness check failed", extra={"check": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
        return {"ok": False, "detail": f"{type(exc).__name__} (the web log has the message)"}


_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    """This process's pool for the checks (made after gunicorn forks; a hung check holds one
    thread until its own timeout, and checks queued behind a full pool time out as failed)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=16, thread_name_prefix="ready"))
        return _pool[1]


def run_checks(checks: dict[str, Callable[[], object]], timeout: float) -> dict[str, dict]:
    """Run every check at once; those not finished within ``timeout`` seconds are failed."""
    pool = _executor()
    futures: dict[str, Future] = {name: pool.submit(_check, name, fn) for name, fn in checks.items()}
    wait(futures.values(), timeout=timeout)
    out = {}
    for name, fut in futures.items():
        if fut.done():
            out[name] = fut.result()
        else:
            fut.cancel()
            out[name] = {"ok": False, "detail": f"no answer within {timeout:g}s (READY_TIMEOUT)"}
    return out


def _clickhouse(rt: Runtime) -> str:
    s = rt.settings
    if s.chdb_path:
        # The web process never opens chDB; the owning worker publishes a heartbeat.
        beat = heartbeats.read(redis_clients.client(s.sessions_redis_url), s.redis_key_prefix, "clickhouse")
        if beat is None:
            raise CheckFailed("no heartbeat from the chDB owner worker")
        if not beat.get("ok"):
            # its error text may name paths or hosts: the owner worker's log has it
            raise CheckFailed("the chDB owner worker reports ClickHouse failing (its log has why)")
        return f"chdb {beat.get('version')} (heartbeat {time.time() - beat['at']:.0f}s ago)"
    from app.storage.clickhouse.client import get_clickhouse

    return "server " + str(get_clickhouse(s.clickhouse_url, s.clickhouse_pool_size).execute("SELECT version()")[0][0])


def _beat(s: Settings) -> str:
    last = heartbeats.read(redis_clients.client(s.sessions_redis_url), s.redis_key_prefix, "sweep")
    if last is None:
        raise CheckFailed("no maintenance sweep has finished yet (is beat running, and a maintenance worker?)")
    age = time.time() - float(last)
    metrics.SWEEP_LAST.set(float(last))
    if age > s.beat_stale_after:
        raise CheckFailed(f"last sweep {age:.0f}s ago (beat or the maintenance worker is down)")
    return f"last sweep {age:.1f}s ago"


def _workers(s: Settings) -> str:
    beats = heartbeats.read_heartbeats(redis_clients.client(s.sessions_redis_url), s.redis_key_prefix,
                                       stall_after=s.broker_visibility_timeout)
    stalled = [b["worker"] for b in beats if b["stalled"]]
    if stalled:
        raise CheckFailed(f"stalled (holding messages, no progress for {s.broker_visibility_timeout}s): "
                           f"{', '.join(stalled)}")
    return f"{len(beats)} worker(s) live"


@bp.get("/ready")
def ready() -> Response:
    """Readiness (operator listener): 503 unless the broker and PostgreSQL answer; Redis,
    ClickHouse, beat and stalled workers are reported (``status: degraded``) but keep it ready."""
    rt: Runtime = current_app.extensions["observer"]
    _operator_only(rt)
    s = rt.settings
    checks = run_checks({
        "broker": rt.publisher.ping,
        "postgres": lambda: postgres.ping(s.database_url),
        "sessions_redis": lambda: redis_clients.client(s.sessions_redis_url).ping() and "ok",
        "ratelimit_redis": lambda: redis_clients.client(s.ratelimit_redis_url).ping() and "ok",
        "clickhouse": lambda: _clickhouse(rt),
        "beat": lambda: _beat(s),
        "workers": lambda: _workers(s),
    }, s.ready_timeout)
    ok = all(checks[name]["ok"] for name in REQUIRED)
    everything = all(c["ok"] for c in checks.values())
    resp = jsonify({"status": "ok" if everything else "degraded", "checks": checks})
    resp.status_code = 200 if ok else 503
    return resp


@bp.get("/metrics")
def metrics_view() -> Response:
    """Prometheus exposition (operator listener; queue depths and live sessions sampled now)."""
    rt: Runtime = current_app.extensions["observer"]
    _operator_only(rt)
    queues.sample(rt.settings, rt.publisher.celery)
    backlog.sample(rt.settings)
    _check("beat", lambda: _beat(rt.settings))  # refreshes observer_beat_last_sweep_timestamp
    _check("workers", lambda: _workers(rt.settings))  # refreshes observer_worker_stalled
    return Response(metrics.render(), mimetype="text/plain; version=0.0.4")


@bp.get("/openapi.json")
def openapi() -> Response:
    """The API contract (OpenAPI 3.1, UFSE payload under webhooks)."""
    return Response(_SPEC.read_bytes(), mimetype="application/json")

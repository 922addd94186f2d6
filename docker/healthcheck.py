"""Container healthchecks: ``healthcheck.py web`` and ``healthcheck.py worker NODE``.

web: GET /health on the local gunicorn (liveness: the process serves requests; /ready is for a
load balancer, and restarting web because PostgreSQL is away would not bring it back).

worker: a Celery control ping to this container's node (``%h`` = the hostname, as Celery
expands it), answered by the worker's consumer loop over the broker: the worker is connected
and not wedged. A bare Celery client is used rather than ``celery -A tasks inspect ping``,
which imports the whole app (settings, every task module) on each probe: this costs about a
quarter of the CPU and needs nothing but the broker URL.
"""
from __future__ import annotations

import os
import socket
import sys
import urllib.request


def web() -> bool:
    """The local web process answers /health with 200."""
    port = os.environ.get("PORT", "8000")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return r.status == 200


def worker(node: str) -> bool:
    """The worker named ``node`` answers a control ping within the timeout."""
    from celery import Celery

    node = node.replace("%h", socket.gethostname())
    broker = os.environ.get("CELERY_BROKER_URL") or os.environ["REDIS_URL"]
    app = Celery("healthcheck", broker=broker)
    app.conf.broker_connection_timeout = 3
    app.conf.broker_connection_retry_on_startup = False
    replies = app.control.ping(destination=[node], timeout=3)
    return any(node in reply for reply in replies)


def main(argv: list[str]) -> int:
    """Exit 0 when healthy, 1 otherwise (Docker's healthcheck contract)."""
    try:
        ok = web() if argv[:1] == ["web"] else worker(argv[1])
    except Exception as exc:  # any failure to answer is "unhealthy"
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print("unhealthy: no answer", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("web", "worker") or (sys.argv[1] == "worker" and len(sys.argv) != 3):
        sys.exit("usage: healthcheck.py web | healthcheck.py worker NODE")
    sys.exit(main(sys.argv[1:]))

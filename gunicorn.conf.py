"""gunicorn settings for the web process (values from the environment)."""
import os

# Every interface unless HOST narrows it: the web tier is what clients reach.
_public = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
# The operator listener (/ready, /metrics answer only there; app/web/health.py): loopback unless
# OPERATOR_HOST widens it (0.0.0.0 in a container or pod, for a scraper or a probe; never publish
# it to the world). OPERATOR_PORT equal to PORT would put them on the public listener: refused.
_operator = f"{os.environ.get('OPERATOR_HOST', '127.0.0.1')}:{os.environ.get('OPERATOR_PORT', '8001')}"
if _operator.rsplit(":", 1)[1] == _public.rsplit(":", 1)[1]:
    raise SystemExit("OPERATOR_PORT must differ from PORT: /ready and /metrics are not for the public listener")
bind = [_public, _operator]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
# Warm shutdown: on SIGTERM workers finish in-flight requests for up to this long.
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "30"))
timeout = 30
keepalive = 5
accesslog = None
errorlog = "-"
# Request bodies are read by the ingest view with its own limits; keep header limits strict.
limit_request_line = 8190
limit_request_fields = 64


def child_exit(server, worker):
    """Drop a dead worker's Prometheus samples (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

# gunicorn 27's control socket defaults to one shared path per user; several stacks on one
# host (tests, dev) would fight over it and we do not use it.
control_socket_disable = True

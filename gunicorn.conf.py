"""gunicorn settings for the web process (values from the environment)."""
import os

# Every interface unless HOST narrows it: the web tier is what clients reach.
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
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

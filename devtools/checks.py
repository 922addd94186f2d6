"""Readiness checks through the client libraries: HTTP, Celery's ping, beat's first tick."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable


def http_ok(url: str, want: Callable[[dict], bool] | None = None) -> Callable[[], bool]:
    """GET ``url`` answers 2xx (and ``want(json)`` holds, when given)."""
    def ready() -> bool:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 -- http URLs of servers the toolkit started
            body = r.read()
        return want is None or want(json.loads(body))
    return ready


def http_answers(url: str) -> Callable[[], bool]:
    """GET ``url`` answers anything below 500 (the server is serving)."""
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 -- as above
                return r.status < 500
        except urllib.error.HTTPError as e:
            return e.code < 500
    return ready


class CeleryPing:
    """``celery inspect ping`` for one node, through a Celery client on the same broker."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self._app = None

    def node_ready(self, node: str) -> Callable[[], bool]:
        """A check: the worker named ``node`` (``%h`` expanded) answers a control ping."""
        node = node.replace("%h", socket.gethostname())

        def ready() -> bool:
            if self._app is None:
                from celery import Celery

                self._app = Celery("toolkit-ping", broker=self.broker_url)
                self._app.conf.broker_connection_timeout = 2
            replies = self._app.control.ping(destination=[node], timeout=0.5)
            return any(node in r for r in replies)
        return ready

    def close(self) -> None:
        """Forget the client. Its pooled connections are left to die with their broker:
        kombu keeps one pool per broker URL for the whole process, and closing or resetting it
        here breaks another stack pinging at the same moment ("Acquire on closed pool")."""
        self._app = None


def log_has(proc, text: str) -> Callable[[], bool]:
    """The process has logged ``text`` (beat has no client API; its first tick is the sign)."""
    return lambda: text in proc.log_text()

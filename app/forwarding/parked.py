"""Deliveries waiting for a retry or for the destination's circuit, and their release.

A retryable answer parks the delivery in the ``forward`` due-time index for the next step of
FORWARD_RETRY_SCHEDULE; the maintenance sweep re-publishes what is due, gated by the circuit
(one probe while it is open) and the drain rate once UFSE answers again.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app import resources
from app.broker import send_forward
from app.forwarding.circuit import Circuit
from app.forwarding.destination import origin, redacted_url
from app.names import Queue
from app.observability import metrics
from app.retry.due import DueIndex

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

SEP = "\x1f"  # cannot occur in a project name or a session_id (both validated)
_adopted: set[str] = set()  # legacy circuit names this process already took over


def due_index() -> DueIndex:
    """Where deliveries wait for their next attempt."""
    return DueIndex(resources.sessions_redis(), resources.settings().redis_key_prefix, Queue.FORWARD.value)


def circuit() -> Circuit:
    """The circuit of the UFSE destination, named by its origin (``host:port``, never the URL's
    user info), shared by every forward worker."""
    s = resources.settings()
    c = Circuit(resources.sessions_redis(), s.redis_key_prefix, origin(s.ufse_url) or "ufse",
                threshold=s.forward_circuit_threshold, max_pause=s.forward_circuit_max, scale=s.retry_time_scale)
    legacy = _legacy_name(s.ufse_url)
    if legacy and legacy not in _adopted:
        if c.adopt(legacy):
            log.warning("circuit state moved off a Redis key that named UFSE_URL's user info",
                        extra={"destination": redacted_url(s.ufse_url)})
        _adopted.add(legacy)
    return c


def _legacy_name(url: str) -> str:
    """The circuit's name before it was the origin: the whole netloc (user info included)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    return netloc if "@" in netloc else ""


def member(project: str, session_id: str, version: int) -> str:
    """The due-index member of one session version."""
    return f"{project}{SEP}{session_id}{SEP}{int(version)}"


def park(project: str, session_id: str, version: int, attempt: int, due_at: float, reason: str) -> None:
    """Keep a delivery until ``due_at``; ``attempt`` is the schedule step it will be sent as."""
    due_index().park(member(project, session_id, version), {"attempt": attempt}, due_at)
    metrics.FORWARD_PARKED.labels(reason).inc()


def release_limit(sweep_interval: float, now: float | None = None) -> int:
    """How many parked deliveries one sweep may re-publish: one probe once an open circuit's
    pause is over (none before), else the drain rate over the sweep interval."""
    s = resources.settings()
    until = circuit().open_until() if s.ufse_url else 0.0
    if until > 0:
        return 1 if (time.time() if now is None else now) >= until else 0
    return max(1, int(s.forward_drain_rate * max(sweep_interval, 1.0)))


def release_due(celery: Celery, sweep_interval: float) -> int:
    """Re-publish parked deliveries that are due, gated by the circuit and the drain rate."""
    limit = release_limit(sweep_interval)
    if limit == 0:
        return 0
    index = due_index()
    sent = []
    for m, payload in index.due(limit=limit):
        project, session_id, version = m.split(SEP)
        send_forward(celery, project, session_id, int(version), attempt=int((payload or {}).get("attempt", 0)),
                     due=True)
        sent.append(m)
    # Forget only after publishing: a crash in between publishes again, and delivery is
    # idempotent on the snapshot (a delivered version has none).
    index.done(sent)
    if sent:
        metrics.DUE_REPUBLISHED.labels(Queue.FORWARD.value).inc(len(sent))
    return len(sent)

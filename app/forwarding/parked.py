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

import psycopg2

from app import resources
from app.broker import send_forward
from app.forwarding.circuit import Circuit
from app.forwarding.url_redaction import origin, redacted_url
from app.names import Queue
from app.observability import metrics
from app.retry.due import DueIndex

if TYPE_CHECKING:
    from celery import Celery

    from app.forwarding.destinations import Destination

log = logging.getLogger(__name__)

SEP = "\x1f"  # cannot occur in a project name or a session_id (both validated)
_adopted: set[str] = set()  # legacy circuit names this process already took over


def due_index() -> DueIndex:
    """Where deliveries wait for their next attempt."""
    return DueIndex(resources.sessions_redis(), resources.settings().redis_key_prefix, Queue.FORWARD.value)


def circuit_named(name: str) -> Circuit:
    """The circuit of one destination, shared by every forward worker. Its state outlives the
    longest a destination may fail before it is disabled, by a day."""
    s = resources.settings()
    ttl = int(max(2 * 86400, s.destination_disable_after * s.retry_time_scale + 86400))
    return Circuit(resources.sessions_redis(), s.redis_key_prefix, name, threshold=s.forward_circuit_threshold,
                   max_pause=s.forward_circuit_max, scale=s.retry_time_scale, ttl_s=ttl)


def circuit_for(dest: Destination) -> Circuit:
    """The circuit of ``dest``: UFSE_URL's (see ``circuit``) or a project destination's own."""
    return circuit_named(dest.circuit_name) if dest.guarded else circuit()


def circuit() -> Circuit:
    """The circuit of the UFSE_URL destination, named by its origin (``host:port``, never the
    URL's user info)."""
    s = resources.settings()
    c = circuit_named(origin(s.ufse_url) or "ufse")
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


def release_limit(sweep_interval: float) -> int:
    """How many parked deliveries one sweep may re-publish: the drain rate over the sweep interval."""
    return max(1, int(resources.settings().forward_drain_rate * max(sweep_interval, 1.0)))


def release_due(celery: Celery, sweep_interval: float, now: float | None = None) -> int:
    """Re-publish parked deliveries that are due, under the drain rate and each destination's
    circuit: while a circuit's pause runs its deliveries wait until it ends (moved, not sent);
    once it ends one of them goes as the probe and the rest wait for its answer."""
    from app.forwarding import destinations

    now = time.time() if now is None else now
    index = due_index()
    sent, waiting = [], []
    gates: dict[str, float] = {}  # circuit name -> open_until (0: closed), read once per sweep
    probes: set[str] = set()
    for m, payload in index.due(now=now, limit=release_limit(sweep_interval)):
        project, session_id, version = m.split(SEP)
        try:
            dest = destinations.for_project(project)
        except psycopg2.Error:
            dest = None  # no gate to read: the delivery itself waits out PostgreSQL (its storage path)
        if dest is not None:
            name = dest.circuit_name
            if name not in gates:
                gates[name] = circuit_for(dest).open_until()
            until = gates[name]
            if until > now:
                waiting.append((m, payload, until))
                continue
            if until > 0:
                if name in probes:
                    waiting.append((m, payload, now + max(sweep_interval, 1.0)))
                    continue
                probes.add(name)
        send_forward(celery, project, session_id, int(version), attempt=int((payload or {}).get("attempt", 0)),
                     due=True)
        sent.append(m)
    # Forget only after publishing: a crash in between publishes again, and delivery is
    # idempotent on the snapshot (a delivered version has none).
    index.done(sent)
    for m, payload, until in waiting:
        index.park(m, payload or {"attempt": 0}, until)
    if sent:
        metrics.DUE_REPUBLISHED.labels(Queue.FORWARD.value).inc(len(sent))
    return len(sent)

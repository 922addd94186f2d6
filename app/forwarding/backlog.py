"""A disabled destination's deliveries: parked, never dropped, until ``destinations enable``.

A project destination that fails without one success for ``DESTINATION_DISABLE_AFTER`` (5 days)
is disabled (app/forwarding/deliver.py). From then on its deliveries are not attempted: each is
kept in the project's backlog, a due-time index of its own that the sweep never reads (scored by
when it was parked, so it replays oldest first), and its frozen snapshot is made to live
``BACKLOG_HOLD_S`` instead of the 14 days a claim gives it. ``replay`` (``destinations enable``)
moves the backlog into the ``forward`` index, due now in the order it was parked, so the sweep
re-publishes it under ``FORWARD_DRAIN_RATE``; each delivery keeps its ``webhook-id``
(``project:session_id:version``), and a receiver that saw one before can tell.

Idempotent: parking a member twice keeps one entry (its first time); a replay interrupted half
way leaves the rest in the backlog, and a second ``enable`` replays them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app import resources
from app.forwarding import parked
from app.forwarding.url_redaction import origin
from app.observability import metrics
from app.retry.due import DueIndex

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_NAME = "default"  # UFSE_URL's label (destinations.DEFAULT)

# How long a parked delivery's snapshot (and backlog entry) is kept for the operator: a year.
BACKLOG_HOLD_S = 366 * 86400


def index(project: str) -> DueIndex:
    """The backlog of ``project``'s destination."""
    s = resources.settings()
    return DueIndex(resources.sessions_redis(), s.redis_key_prefix, f"backlog:{project}", item_ttl_s=BACKLOG_HOLD_S)


def holds(project: str, session_id: str, version: int) -> bool:
    """True when this version waits in its project's backlog."""
    return index(project).due_at(parked.member(project, session_id, version)) is not None


def park(project: str, session_id: str, version: int, attempt: int) -> None:
    """Keep one delivery for when the destination is enabled again."""
    m = parked.member(project, session_id, version)
    backlog = index(project)
    if backlog.due_at(m) is None:
        # Scored by when it was parked, after the newest entry (the index keeps milliseconds), so
        # a replay keeps the order.
        last = backlog.r.zrange(backlog.zset, -1, -1, withscores=True)
        backlog.park(m, {"attempt": attempt}, max(time.time(), float(last[0][1]) + 0.001 if last else 0.0))
    resources.session_store().keep_snapshot(project, session_id, version, BACKLOG_HOLD_S)
    # Whatever waited in the forward index for it (a retry, the circuit) is now the backlog's.
    parked.due_index().done([m])
    metrics.FORWARD_PARKED.labels("disabled").inc()


@dataclass(frozen=True)
class Estimate:
    """What replaying a backlog means: how many deliveries and how long at the drain rate."""

    deliveries: int
    oldest_age_s: float
    drain_s: float


def estimate(project: str) -> Estimate:
    s = resources.settings()
    backlog = index(project)
    first = backlog.r.zrange(backlog.zset, 0, 0, withscores=True)
    n = backlog.size()
    oldest = time.time() - float(first[0][1]) if first else 0.0
    return Estimate(n, max(0.0, oldest), n / max(1, s.forward_drain_rate))


def replay(project: str, chunk: int = 500) -> int:
    """Move the whole backlog into the forward index, due now, oldest first; returns how many."""
    backlog, forward = index(project), parked.due_index()
    store = resources.session_store()
    moved = 0
    start = time.time()
    while True:
        members = backlog.r.zrange(backlog.zset, 0, chunk - 1)
        if not members:
            return moved
        items = backlog.due(now=float("inf"), limit=len(members))
        for m, payload in items:
            _project, session_id, version = m.split(parked.SEP)
            # The retry schedule starts again from its snapshot's point of view: 14 days of life.
            store.keep_snapshot(project, session_id, int(version), store.final_ttl)
            # Due already, in the order parked, a millisecond apart: the sweep releases earliest first.
            forward.park(m, payload or {"attempt": 0}, start - 3600 + moved / 1000.0)
            moved += 1
        backlog.done([m for m, _ in items])


def sample(settings: Settings) -> None:
    """Set each destination's state, backlog and backlog age gauges (at a /metrics scrape; one
    PostgreSQL query and a few Redis reads; never raises)."""
    from app.forwarding import destinations
    from app.storage import redis_clients, redis_keys

    try:
        rows = destinations.list_destinations(settings.database_url)
        r = redis_clients.client(settings.sessions_redis_url)
        now = time.time()
        named = [(DEFAULT_NAME, origin(settings.ufse_url) or "ufse")] if settings.ufse_url else []
        named += [(row["project"], f"project:{row['project']}") for row in rows]
        enabled = {row["project"]: row["enabled"] for row in rows}
        for name, circuit_name in named:
            open_until = float(r.hget(redis_keys.circuit(settings.redis_key_prefix, circuit_name), "open_until") or 0)
            state = 2 if not enabled.get(name, True) else (1 if open_until > now else 0)
            metrics.DESTINATION_STATE.labels(name).set(state)
            if name == DEFAULT_NAME:
                continue
            zset = redis_keys.due_index(settings.redis_key_prefix, f"backlog:{name}")
            first = r.zrange(zset, 0, 0, withscores=True)
            metrics.DESTINATION_BACKLOG.labels(name).set(r.zcard(zset))
            metrics.DESTINATION_BACKLOG_AGE.labels(name).set(max(0.0, now - float(first[0][1])) if first else 0.0)
    except Exception as exc:  # a scrape must not fail because a store hiccups
        log.warning("destination sample failed", extra={"error": str(exc)[:200]})

"""Reconciliation sweep: deliver versions ClickHouse knows and the sessions Redis forgot.

After the sessions Redis lost its data (failover to a lagging replica, restart without
persistence, a flush), versions that were live or frozen there have rows in ``session_batches``
and no ``sessions`` row, and nothing would ever forward them. This finds those that have been
quiet for longer than the idle timeout (so no batch is still being counted into them), rebuilds
their frozen snapshot in Redis and queues them like a claim: the caller enqueues
``forward.deliver`` for each. Safe to run often and concurrently: the Lua step skips any
version Redis still knows (live, frozen, queued, or completed within the tombstone TTL).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.sessions.store import RECONCILE_HORIZON_S, Claimed, now_ms
from app.storage import events_repo

if TYPE_CHECKING:
    from app.sessions.store import SessionStore
    from app.storage.clickhouse import ClickHouse


log = logging.getLogger(__name__)
GRACE_S = 15  # beyond the idle timeout: a session_batches INSERT in flight when Redis was lost lands first


def reconcile(store: SessionStore, ch: ClickHouse, *, idle_s: int, limit: int = 500,
              horizon_s: int = RECONCILE_HORIZON_S,
              at_ms: int | None = None) -> list[Claimed]:
    """Re-queue forgotten versions; returns those queued (enqueue forward.deliver for each)."""
    now = now_ms() if at_ms is None else at_ms
    quiet_before = now - (idle_s + GRACE_S) * 1000
    since = quiet_before - horizon_s * 1000
    out: list[Claimed] = []
    for project, session_id, version, batches in events_repo.unrecorded_versions(
            ch, since_ms=since, quiet_before_ms=quiet_before, limit=limit):
        if store.recover(project, session_id, version, batches, at_ms=now):
            out.append(Claimed(project, session_id, version))
    if out:
        log.warning("reconciled versions the sessions Redis did not know", extra={"count": len(out)})
    return out

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

import json
import logging
from typing import TYPE_CHECKING, cast

from app.sessions.store import RECONCILE_HORIZON_S, Claimed, now_ms
from app.storage import redis_keys
from app.storage.clickhouse import queries

if TYPE_CHECKING:
    from app.sessions.store import SessionStore
    from app.storage.clickhouse.client import ClickHouse


log = logging.getLogger(__name__)
GRACE_S = 15  # beyond the idle timeout: a session_batches INSERT in flight when Redis was lost lands first
# Pages of candidates one run reads at most (each ``limit`` versions); the rest wait for the next run.
PAGES = 20


def reconcile(store: SessionStore, ch: ClickHouse, *, idle_s: int, limit: int = 500,
              horizon_s: int = RECONCILE_HORIZON_S, at_ms: int | None = None,
              pages: int = PAGES) -> list[Claimed]:
    """Re-queue forgotten versions; returns those queued (enqueue forward.deliver for each).

    Reads candidates a page of ``limit`` at a time in key order, up to ``pages`` pages, and keeps
    where it stopped in Redis: versions Redis still knows (parked during a UFSE outage, say) fill
    pages without hiding the ones behind them, which the next run reaches."""
    now = now_ms() if at_ms is None else at_ms
    quiet_before = now - (idle_s + GRACE_S) * 1000
    since = quiet_before - horizon_s * 1000
    cursor_key = redis_keys.reconcile_cursor(store.prefix)
    raw = cast("str | None", store.r.get(cursor_key))
    after: tuple[str, str, int] | None = None
    if raw:
        p, sid, v = json.loads(raw)
        after = (str(p), str(sid), int(v))
    out: list[Claimed] = []
    for _ in range(pages):
        rows = queries.unrecorded_versions(ch, since_ms=since, quiet_before_ms=quiet_before, limit=limit, after=after)
        for project, session_id, version, batches in rows:
            if store.recover(project, session_id, version, batches, at_ms=now):
                out.append(Claimed(project, session_id, version))
        if len(rows) < limit:  # the end of the candidates: the next run starts from the top
            after = None
            break
        after = rows[-1][:3]
    if after is None:
        store.r.delete(cursor_key)
    else:
        store.r.set(cursor_key, json.dumps(list(after)), ex=horizon_s)
    if out:
        log.warning("reconciled versions the sessions Redis did not know", extra={"count": len(out)})
    return out

"""Claim step: freeze the sessions whose deadline passed and find forwards that never finished.

The claim itself is one Lua script per session (app/sessions/scripts.py ``CLAIM``): a version is
frozen exactly once, however many sweeps run. The maintenance sweep (tasks/maintenance.py) then
enqueues one ``forward.deliver`` per claimed or stale version.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.observability import metrics

if TYPE_CHECKING:
    from app.sessions.store import SessionStore

log = logging.getLogger(__name__)


def sweep(store: SessionStore, *, limit: int, outbox_stale_s: float) -> tuple[list, list]:
    """Claim due sessions and find stale outbox entries; returns (claimed, stale)."""
    claimed = store.claim_due(limit=limit)
    if claimed:
        metrics.SESSIONS_FINALIZED.inc(len(claimed))
    stale = store.stale_outbox(outbox_stale_s, limit=limit)
    if stale:
        log.warning("re-enqueueing stale forwards", extra={"count": len(stale)})
    return claimed, stale

"""Claim step: freeze the sessions whose deadline passed and find forwards that never finished.

The claim itself is one Lua script per session (app/sessions/claim.lua): a version is
frozen exactly once, however many sweeps run. The maintenance sweep (app/maintenance.py) then
enqueues one ``forward.deliver`` per claimed or stale version.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.observability import metrics

if TYPE_CHECKING:
    from app.sessions.store import SessionStore

log = logging.getLogger(__name__)


def claim_due_and_stale(store: SessionStore, *, limit: int, outbox_stale_s: float,
                        backlog: Callable[[], int] | None = None) -> tuple[list, list]:
    """Claim due sessions and find stale outbox entries; returns (claimed, stale). ``backlog``:
    the events queue's ready messages (SessionStore.claim_due holds claims while batches wait
    there and no events worker reports)."""
    claimed = store.claim_due(limit=limit, backlog=backlog)
    if claimed:
        # The loss ledger's count of claims is written by the claim script itself (claim.lua).
        metrics.SESSIONS_FINALIZED.inc(len(claimed))
    stale = store.stale_outbox(outbox_stale_s, limit=limit)
    if stale:
        log.warning("re-enqueueing stale forwards", extra={"count": len(stale)})
    return claimed, stale

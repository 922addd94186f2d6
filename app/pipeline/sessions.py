"""Session step: count a batch into its sessions (Lua) and map batches to versions (ClickHouse)."""
from __future__ import annotations

import logging
import time

from app.observability import metrics
from app.storage import events_repo

log = logging.getLogger(__name__)


def apply_summary(store, ch, summary: dict, insert_settings: dict | None = None) -> dict[str, int]:
    """Apply one batch summary; returns {session_id: version}. Idempotent per (batch, session).

    The summary counts only the events this batch owns (the persist step dropped the others),
    so a resent event is never counted into a later version.
    """
    per = {sid: tuple(v) for sid, v in summary["sessions"].items()}
    if not per:
        return {}
    now = int(time.time() * 1000)
    received = int(summary.get("received_at") or now)
    project = summary["project"]
    result = store.apply_batch(project, summary["batch_id"], per, at_ms=min(received, now),
                               version_floor=lambda p, s: events_repo.max_version(ch, p, s))
    store.note_lag(now - received)
    dupes = sum(1 for _v, fresh in result.values() if not fresh)
    if dupes:
        metrics.BATCHES_DUPLICATE.labels("sessions").inc(dupes)
    # Inserted again on redelivery too: the crash may have hit between the script and this
    # INSERT; the ReplacingMergeTree key collapses the repeat.
    rows = [(project, sid, version, summary["batch_id"], per[sid][0]) for sid, (version, _f) in result.items()]
    events_repo.insert_session_batches(ch, rows, settings=insert_settings)
    metrics.CH_INSERT_ROWS.labels("session_batches").inc(len(rows))
    versions = {sid: version for sid, (version, _f) in result.items()}
    # Only now may the versions stop waiting for this batch (their forward reads these rows).
    store.mark_written(project, summary["batch_id"], versions)
    return versions


def sweep(store, *, limit: int, outbox_stale_s: float) -> tuple[list, list]:
    """Claim due sessions and find stale outbox entries; returns (claimed, stale)."""
    claimed = store.claim_due(limit=limit)
    if claimed:
        metrics.SESSIONS_FINALIZED.inc(len(claimed))
    stale = store.stale_outbox(outbox_stale_s, limit=limit)
    if stale:
        log.warning("re-enqueueing stale forwards", extra={"count": len(stale)})
    return claimed, stale

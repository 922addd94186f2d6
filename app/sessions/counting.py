"""Session step: count a batch into its sessions (Lua) and map batches to versions (ClickHouse)."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from app.events.persist import session_summary
from app.observability import metrics
from app.sessions.store import Entry
from app.storage.clickhouse import queries

if TYPE_CHECKING:
    from app.sessions.store import SessionStore
    from app.storage.clickhouse.client import ClickHouse


log = logging.getLogger(__name__)


def apply_summary(store: SessionStore, ch: ClickHouse, summary: dict,
                  insert_settings: dict | None = None) -> dict[str, int]:
    """Count one batch summary into its sessions (``sessions.update``, the events flush's
    fallback); returns {session_id: version}. Idempotent per (batch, session)."""
    return count_summaries(store, ch, [summary], insert_settings).get(summary["batch_id"], {})


def count_batches(store: SessionStore, ch: ClickHouse, batches: list[dict],
                  insert_settings: dict | None = None) -> dict[str, dict[str, int]]:
    """The session step of one events flush: count every stored batch into its sessions.

    ``batches`` are the flush's stored batches after the persist step, each holding only the
    events it owns (app.events.persist), so a resent event is never counted twice. A batch
    the persist step marked ``redelivered`` (it owns events, all already stored: its message
    came again) is looked up in ``session_batches`` first: where ClickHouse already maps it to
    a version it counts nothing, even after its Redis marker expired.
    """
    replayed = [b for b in batches if b.get("redelivered")]
    counted = queries.counted_versions(ch, [(b["project"], sid, b["batch_id"]) for b in replayed
                                                for sid in {e["session_id"] for e in b["events"]}]) if replayed else {}
    return count_summaries(store, ch, [session_summary(b) for b in batches], insert_settings, counted)


def count_summaries(store: SessionStore, ch: ClickHouse, summaries: list[dict], insert_settings: dict | None = None,
                    counted: dict[tuple[str, str, str], int] | None = None) -> dict[str, dict[str, int]]:
    """Count batch summaries into their sessions in three rounds, whatever their number: one
    pipelined round of Lua scripts (plus one ClickHouse query and a second round for sessions
    starting a new version), one ``session_batches`` INSERT, one pipelined ``mark_written``.
    Returns {batch_id: {session_id: version}}. Idempotent per (batch, session).
    """
    now = int(time.time() * 1000)
    counted = counted or {}
    entries: list[Entry] = []
    seen: set[tuple[str, str, str]] = set()
    for summary in summaries:
        at = min(int(summary.get("received_at") or now), now)
        for sid, v in summary["sessions"].items():
            ident = (summary["project"], sid, summary["batch_id"])
            if ident in seen:  # the same batch twice in one flush: counted once
                continue
            seen.add(ident)
            entries.append(Entry(summary["project"], summary["batch_id"], sid, tuple(v), at, counted.get(ident, -1)))
    if not entries:
        return {}
    results = store.apply_many(entries, lambda pairs: queries.max_versions(ch, pairs))
    store.note_lag(now - min(e.at_ms for e in entries))
    dupes = sum(1 for _v, fresh in results if not fresh)
    if dupes:
        metrics.BATCHES_DUPLICATE.labels("sessions").inc(dupes)
    # Inserted again on redelivery too: the crash may have hit between the scripts and this
    # INSERT; the ReplacingMergeTree key collapses the repeat.
    rows = [(e.project, e.session_id, version, e.batch_id, e.counts[0])
            for e, (version, _f) in zip(entries, results, strict=True)]
    queries.insert_session_batches(ch, rows, settings=insert_settings)
    metrics.CH_INSERT_ROWS.labels("session_batches").inc(len(rows))
    # Only now may the versions stop waiting for these batches (their forward reads these rows).
    store.mark_written_many([(e.project, e.batch_id, e.session_id, version)
                             for e, (version, _f) in zip(entries, results, strict=True)])
    out: dict[str, dict[str, int]] = {}
    for e, (version, _f) in zip(entries, results, strict=True):
        out.setdefault(e.batch_id, {})[e.session_id] = version
    return out

"""Which batch owns each event: the pure rule behind the persist step's event-level dedup.

An event is (project, event_id). Within the dedup window the first batch *stored* with it owns
it; a batch stored later with the same event does not (its copy is dropped before the INSERT and
not counted into any session). Batches that reach storage together -- one flush, or two flushes
that both looked before either wrote -- are ordered by the read rule, the smallest
(received_at_ms, batch_id), which is also what every read applies to rows already stored.
"""
from __future__ import annotations

from collections.abc import Iterable

Key = tuple[int, str]  # (received_at_ms, batch_id): smaller wins


def owned_events(batches: Iterable[dict], stored: dict[tuple[str, str], list[Key]],
                 window_ms: int) -> dict[str, list[dict]]:
    """{batch_id: the events that batch owns}, given the stored carriers of each (project, event_id).

    ``stored`` holds the (received_at_ms, batch_id) of rows already in ClickHouse, for rows
    received at most ``window_ms`` before the earliest batch here; each batch only counts those
    within its own window.
    """
    return {bid: owned for bid, (owned, _new) in split(batches, stored, window_ms).items()}


def split(batches: Iterable[dict], stored: dict[tuple[str, str], list[Key]],
          window_ms: int) -> dict[str, tuple[list[dict], list[dict]]]:
    """{batch_id: (events it owns, of those the ones not stored yet)}: see owned_events."""
    batches = list(batches)
    flush_best: dict[tuple[str, str], Key] = {}
    for b in batches:
        key = (int(b["received_at"]), b["batch_id"])
        for e in b["events"]:
            ident = (b["project"], e["event_id"])
            if ident not in flush_best or key < flush_best[ident]:
                flush_best[ident] = key
    out: dict[str, tuple[list[dict], list[dict]]] = {}
    for b in batches:
        key = (int(b["received_at"]), b["batch_id"])
        since = key[0] - int(window_ms)
        mine: list[dict] = []
        new: list[dict] = []
        for e in b["events"]:
            ident = (b["project"], e["event_id"])
            earlier = [k for k in stored.get(ident, ()) if k[0] >= since]
            if earlier:
                # Already stored: the read rule over stored rows decides (this batch among them
                # only when it was stored before, e.g. a redelivery: nothing new to write).
                if min(earlier)[1] == b["batch_id"]:
                    mine.append(e)
            elif flush_best[ident] == key:
                mine.append(e)
                new.append(e)
        out.setdefault(b["batch_id"], (mine, new))
    return out

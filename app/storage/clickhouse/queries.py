"""Reads and writes of Observer's ClickHouse tables (events, event_ids, session_batches, sessions).

One rule everywhere: an event is (project, event_id); its row of record is its
earliest row, the smallest (received_at_ms, batch_id) among the rows stored within the dedup
window; it belongs to the session version its batch belongs to (the lowest version that batch
was counted into), and to no other. Reads of a version take only the events it owns, so an
event stored from two batches (two flushes that both looked before either wrote) counts once,
in one version, before and after merges (the earliest row is never merged away: see
clickhouse_migrations).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from app.storage.clickhouse.client import quote

if TYPE_CHECKING:
    from app.storage.clickhouse.client import ClickHouse

EVENT_COLUMNS = (
    "project", "session_id", "event_id", "type", "ts_ms", "received_at_ms",
    "url", "name", "anonymous_id", "metadata", "request_id", "batch_id",
)
# What the pipeline writes: the events columns and the retention class (migration 3; app/retention.py).
INSERT_EVENT_COLUMNS = (*EVENT_COLUMNS, "retention_days")
DEFAULT_WINDOW_MS = 86_400_000
# Event ids per lookup query: 18.16 refuses queries over max_query_size (256 KiB) and ids are
# inlined as literals (about 40 bytes each).
LOOKUP_CHUNK = 5000

# A batch belongs to the lowest version it was counted into: one counted again after its markers
# were lost (Redis lost its data, then a redelivery) must not bring its events into a later version.
_VERSION_BATCHES = (
    "SELECT batch_id FROM {db}.session_batches "
    "WHERE project = %(project)s AND session_id = %(session_id)s AND version <= %(version)s "
    "GROUP BY batch_id HAVING min(version) = %(version)s"
)
_CANDIDATES = (
    "FROM {db}.events WHERE project = %(project)s AND session_id = %(session_id)s "
    "AND batch_id IN (" + _VERSION_BATCHES + ")"
)
# Events of this version's batches whose row of record lies in another batch (another version or
# session). An event whose event_ids rows are gone (past the TTL, long after its version went
# out) is not excluded: it stays where its rows are, so a late forward retry still carries it.
_OWNED_ELSEWHERE = (
    "SELECT event_id FROM {db}.event_ids "  # noqa: S608 -- validated database name, ids via id_array(); values bound
    "WHERE project = %(project)s AND event_id IN (SELECT event_id " + _CANDIDATES + ") "
    "AND received_at_ms >= (SELECT min(received_at_ms) " + _CANDIDATES + ") - %(window_ms)s "
    "GROUP BY event_id HAVING argMin(batch_id, (received_at_ms, batch_id)) NOT IN (" + _VERSION_BATCHES + ")"
)
# One row per owned event: its earliest row in the version (the row of record, which merges keep).
_K = "(received_at_ms, batch_id)"
_ROWS = (
    f"SELECT event_id AS e_id, argMin(type, {_K}) AS e_type, argMin(ts_ms, {_K}) AS e_ts, "  # noqa: S608 -- validated database name, ids via id_array(); values bound
    f"min(received_at_ms) AS e_received, argMin(url, {_K}) AS e_url, argMin(name, {_K}) AS e_name, "
    f"argMin(anonymous_id, {_K}) AS e_anon, argMin(metadata, {_K}) AS e_meta, argMin(request_id, {_K}) AS e_rid "
    "FROM {db}.events WHERE project = %(project)s AND session_id = %(session_id)s "
    "AND batch_id IN (" + _VERSION_BATCHES + "){exclude} GROUP BY event_id"
)


def owned_elsewhere(ch: ClickHouse, project: str, session_id: str, version: int,
                    window_ms: int = DEFAULT_WINDOW_MS) -> list[str]:
    """Event ids in this version's batches whose row of record is in another version or session."""
    rows = ch.execute(_OWNED_ELSEWHERE.format(db=ch.database), _params(project, session_id, version, window_ms))
    return [str(r[0]) for r in rows]


def _rows_sql(db: str, elsewhere: list[str] | None) -> str:
    # Read once per forward and passed as a literal (it is almost always empty): evaluating the
    # subquery inside every read made them ten times slower.
    if elsewhere is None or len(elsewhere) > LOOKUP_CHUNK:
        exclude = " AND event_id NOT IN (" + _OWNED_ELSEWHERE.format(db=db) + ")"
    elif elsewhere:
        exclude = " AND event_id NOT IN (SELECT arrayJoin(%(elsewhere)s))"
    else:
        exclude = ""
    return _ROWS.replace("{exclude}", exclude).format(db=db)


def event_rows(batches: Iterable[dict]) -> list[tuple]:
    """Flatten ingest batches into rows in INSERT_EVENT_COLUMNS order (a batch's ``retention_days``,
    its project's retention class, defaults to 0: RETENTION_DAYS)."""
    rows = []
    for b in batches:
        for e in b["events"]:
            rows.append((
                b["project"], e["session_id"], e["event_id"], e["type"], int(e["ts_ms"]),
                int(b["received_at"]), e["url"], e["name"], e["anonymous_id"], e["metadata"],
                b.get("request_id") or "", b["batch_id"], int(b.get("retention_days") or 0),
            ))
    return rows


def insert_events(ch: ClickHouse, batches: Iterable[dict], settings: dict | None = None) -> int:
    """Insert every event of ``batches`` in one INSERT; returns the row count (event_ids follows by view)."""
    return ch.insert("events", INSERT_EVENT_COLUMNS, event_rows(batches), settings=settings)


_PLAIN = re.compile(r"[A-Za-z0-9._:\-]*")


def id_array(values: list[str]) -> str:
    """A ClickHouse array literal of ids. Ids of the validated shapes (UUIDs, hex batch ids,
    session ids of [A-Za-z0-9._:-]) need no escaping: one join instead of the driver's
    per-character escaping, which cost ~17 us per id in a 10,000-id lookup."""
    joined = "".join(values)
    if _PLAIN.fullmatch(joined) and "," not in joined:
        return "['" + "','".join(values) + "']" if values else "[]"
    return quote(list(values))


def stored_carriers(ch: ClickHouse, project: str, event_ids: list[str],
                    since_ms: int) -> dict[str, list[tuple[int, str]]]:
    """Stored (received_at_ms, batch_id) rows of each event id received at or after ``since_ms``."""
    out: dict[str, list[tuple[int, str]]] = {}
    ids = sorted(set(event_ids))
    for i in range(0, len(ids), LOOKUP_CHUNK):
        # arrayJoin of a list literal reads the same through the driver and through chDB's quoting.
        rows = ch.execute(
            f"SELECT event_id, received_at_ms, batch_id FROM {ch.database}.event_ids "  # noqa: S608 -- validated database name, ids via id_array(); values bound
            f"WHERE project = %(project)s AND event_id IN (SELECT arrayJoin({id_array(ids[i:i + LOOKUP_CHUNK])})) "
            "AND received_at_ms >= %(since)s",
            {"project": project, "since": int(since_ms)})
        for event_id, received, batch_id in rows:
            out.setdefault(str(event_id), []).append((int(received), str(batch_id)))
    return out


def drop_expired_event_ids(ch: ClickHouse, before_ms: int) -> list[str]:
    """Drop the daily event_ids partitions that end at or before ``before_ms``; returns their names.

    The dedup state must not outlive the window: servers without TTL (18.16) rely on this, and
    dropping a whole day is far cheaper than a TTL merge or an ALTER DELETE anywhere.
    """
    cutoff_day = time.strftime("%Y%m%d", time.gmtime(int(before_ms) // 1000 - 86400))
    rows = ch.execute("SELECT DISTINCT partition FROM system.parts WHERE database = %(db)s "
                      "AND table = 'event_ids' AND active", {"db": ch.database})
    old = sorted(str(p).strip("'") for (p,) in rows if str(p).strip("'").isdigit() and str(p).strip("'") <= cutoff_day)
    for day in old:
        ch.execute(f"ALTER TABLE {ch.database}.event_ids DROP PARTITION {int(day)}")
    return old


def insert_session_batches(ch: ClickHouse, rows: list[tuple], settings: dict | None = None) -> int:
    """Record (project, session_id, version, batch_id, events) mappings."""
    now = int(time.time() * 1000)
    data = [(p, s, int(v), b, int(n), now) for (p, s, v, b, n) in rows]
    return ch.insert("session_batches", ("project", "session_id", "version", "batch_id", "events", "created_ms"),
                     data, settings=settings)


def _params(project: str, session_id: str, version: int, window_ms: int = DEFAULT_WINDOW_MS) -> dict[str, Any]:
    return {"project": project, "session_id": session_id, "version": int(version), "window_ms": int(window_ms)}


def count_session_batches(ch: ClickHouse, project: str, session_id: str, version: int) -> int:
    """Distinct batches ClickHouse shows for a session version."""
    sql = ("SELECT uniqExact(batch_id) FROM {db}.session_batches "
           "WHERE project = %(project)s AND session_id = %(session_id)s AND version = %(version)s")
    return int(ch.execute(sql.format(db=ch.database), _params(project, session_id, version))[0][0])


def max_versions(ch: ClickHouse, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The highest version ClickHouse knows for each (project, session_id) (0 when none): versions
    continue from it. One query per project."""
    out: dict[tuple[str, str], int] = {pair: 0 for pair in pairs}
    by_project: dict[str, list[str]] = {}
    for project, sid in pairs:
        by_project.setdefault(project, []).append(sid)
    for project, sids in by_project.items():
        for i in range(0, len(sids), LOOKUP_CHUNK):
            rows = ch.execute(
                f"SELECT session_id, max(version) FROM {ch.database}.session_batches WHERE project = %(project)s "  # noqa: S608 -- validated database name, ids via id_array(); values bound
                f"AND session_id IN (SELECT arrayJoin({id_array(sids[i:i + LOOKUP_CHUNK])})) GROUP BY session_id",
                {"project": project})
            for sid, version in rows:
                out[(project, str(sid))] = int(version or 0)
    return out


def counted_versions(ch: ClickHouse, triples: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    """{(project, session_id, batch_id): version} for those ``session_batches`` already maps."""
    out: dict[tuple[str, str, str], int] = {}
    by_project: dict[str, list[tuple[str, str]]] = {}
    for project, sid, batch_id in triples:
        by_project.setdefault(project, []).append((sid, batch_id))
    for project, pairs in by_project.items():
        for i in range(0, len(pairs), LOOKUP_CHUNK):
            chunk = pairs[i:i + LOOKUP_CHUNK]
            rows = ch.execute(
                f"SELECT session_id, batch_id, max(version) FROM {ch.database}.session_batches "  # noqa: S608 -- validated database name, ids via id_array(); values bound
                "WHERE project = %(project)s AND session_id IN (SELECT "
                f"arrayJoin({id_array(sorted({s for s, _b in chunk}))})) "
                f"AND batch_id IN (SELECT arrayJoin({id_array(sorted({b for _s, b in chunk}))})) GROUP BY session_id, "
                "batch_id",
                {"project": project})
            wanted = set(chunk)
            for sid, batch_id, version in rows:
                if (str(sid), str(batch_id)) in wanted:
                    out[(project, str(sid), str(batch_id))] = int(version)
    return out


def unrecorded_versions(ch: ClickHouse, *, since_ms: int, quiet_before_ms: int, limit: int,
                        after: tuple[str, str, int] | None = None) -> list[tuple[str, str, int, int]]:
    """(project, session_id, version, batches) with batches since ``since_ms``, none after
    ``quiet_before_ms``, and no ``sessions`` row: versions nobody delivered or dead-lettered.
    In key order, starting after ``after`` (a page's last key), so a caller pages through all."""
    db = ch.database
    # (project, session_id, version) > after, spelled out: 18.16 compares no tuples, and this
    # form is one the primary key (project, session_id, version, ...) can skip granules with.
    page = ("AND (project > %(ap)s OR (project = %(ap)s AND (session_id > %(as)s OR "
            "(session_id = %(as)s AND version > %(av)s)))) ") if after else ""
    sql = (
        f"SELECT project, session_id, version, uniqExact(batch_id) FROM {db}.session_batches "  # noqa: S608 -- validated database name, ids via id_array(); values bound
        f"WHERE created_ms >= %(since)s {page}AND (project, session_id, version) NOT IN "
        f"(SELECT project, session_id, version FROM {db}.sessions WHERE forwarded_at_ms >= %(since)s) "
        f"GROUP BY project, session_id, version HAVING max(created_ms) < %(quiet)s "
        f"ORDER BY project, session_id, version LIMIT {int(limit)}")
    params: dict[str, object] = {"since": int(since_ms), "quiet": int(quiet_before_ms)}
    if after:
        params.update(ap=after[0], **{"as": after[1]}, av=int(after[2]))
    rows = ch.execute(sql, params)
    return [(str(p), str(s), int(v), int(n)) for p, s, v, n in rows]


def session_totals(ch: ClickHouse, project: str, session_id: str, version: int, max_pages: int, max_request_ids: int,
                   window_ms: int = DEFAULT_WINDOW_MS, elsewhere: list[str] | None = None) -> dict:
    """Counts by type, first/last timestamps, pages and request ids of the events a version owns.

    ``elsewhere`` is owned_elsewhere()'s answer when the caller already has it.
    """
    p = dict(_params(project, session_id, version, window_ms), elsewhere=list(elsewhere or []))
    rows = _rows_sql(ch.database, elsewhere)
    by_type = ch.execute(f"SELECT e_type, count(), min(e_ts), max(e_ts) FROM ({rows}) GROUP BY e_type", p)  # noqa: S608 -- validated database name, ids via id_array(); values bound
    pages = ch.execute(
        f"SELECT e_url, min(e_ts) AS t FROM ({rows}) WHERE e_url != '' "  # noqa: S608 -- validated database name, ids via id_array(); values bound
        f"GROUP BY e_url ORDER BY t, e_url LIMIT {int(max_pages)}", p)
    request_ids = ch.execute(
        f"SELECT e_rid, min(e_received) AS t FROM ({rows}) WHERE e_rid != '' "  # noqa: S608 -- validated database name, ids via id_array(); values bound
        f"GROUP BY e_rid ORDER BY t, e_rid LIMIT {int(max_request_ids)}", p)
    counts = {str(t): int(n) for t, n, _lo, _hi in by_type}
    return {
        "event_count": sum(counts.values()),
        "counts": counts,
        "first_ts_ms": min((int(r[2]) for r in by_type), default=0),
        "last_ts_ms": max((int(r[3]) for r in by_type), default=0),
        "pages": [r[0] for r in pages],
        "request_ids": [r[0] for r in request_ids],
    }


def session_events(ch: ClickHouse, project: str, session_id: str, version: int, limit: int,
                   window_ms: int = DEFAULT_WINDOW_MS, elsewhere: list[str] | None = None) -> list[dict]:
    """Events a session version owns, one per event_id, ordered by (ts_ms, event_id)."""
    rows = ch.execute(
        f"SELECT e_id, e_type, e_ts, e_received, %(session_id)s, e_url, e_name, e_anon, e_meta, e_rid "  # noqa: S608 -- validated database name, ids via id_array(); values bound
        f"FROM ({_rows_sql(ch.database, elsewhere)}) ORDER BY e_ts, e_id LIMIT {int(limit)}",
        dict(_params(project, session_id, version, window_ms), elsewhere=list(elsewhere or [])))
    keys = ("event_id", "type", "ts_ms", "received_at_ms", "session_id", "url", "name", "anonymous_id", "metadata",
            "request_id")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def totals_from_rows(rows: list[dict], max_pages: int, max_request_ids: int) -> dict:
    """session_totals() computed from every event a version owns (session_events() read them all,
    untruncated): the same answer without its three aggregate queries. Orders as the queries do
    (by first time, then by value: Python compares str by code point, ClickHouse UTF-8 by byte,
    which is the same order)."""
    counts: dict[str, int] = {}
    pages: dict[str, int] = {}
    rids: dict[str, int] = {}
    for r in rows:
        counts[str(r["type"])] = counts.get(str(r["type"]), 0) + 1
        ts, received = int(r["ts_ms"]), int(r["received_at_ms"])
        if r["url"]:
            pages[r["url"]] = min(pages.get(r["url"], ts), ts)
        if r.get("request_id"):
            rids[r["request_id"]] = min(rids.get(r["request_id"], received), received)
    return {
        "event_count": len(rows),
        "counts": counts,
        "first_ts_ms": min((int(r["ts_ms"]) for r in rows), default=0),
        "last_ts_ms": max((int(r["ts_ms"]) for r in rows), default=0),
        "pages": [u for u, _t in sorted(pages.items(), key=lambda kv: (kv[1], kv[0]))][:max_pages],
        "request_ids": [i for i, _t in sorted(rids.items(), key=lambda kv: (kv[1], kv[0]))][:max_request_ids],
    }


SESSION_COLUMNS = ("project", "session_id", "version", "first_ts_ms", "last_ts_ms", "duration_ms", "event_count",
                   "counts", "finalized_reason", "finalized_at_ms", "forwarded_at_ms", "webhook_id", "status")
# With the delivery log (ClickHouse migration 4).
SESSION_ROW_COLUMNS = (*SESSION_COLUMNS, "attempts")


def session_row(*, project: str, session_id: str, version: int, totals: dict, finalized_reason: str,
                finalized_at_ms: int, webhook_id: str, status: str, attempts: list[dict] | None = None) -> list:
    """One ``sessions`` row (a plain list, so it travels in a task message as it is); ``attempts``:
    the delivery log, every attempt's time, outcome, status, latency and request id."""
    first, last = int(totals["first_ts_ms"]), int(totals["last_ts_ms"])
    return [project, session_id, int(version), first, last, max(0, last - first), int(totals["event_count"]),
            json.dumps(totals["counts"], sort_keys=True), finalized_reason, int(finalized_at_ms),
            int(time.time() * 1000), webhook_id, status, json.dumps(attempts or [], separators=(",", ":"))]


def session_attempts(ch: ClickHouse, project: str, session_id: str, version: int) -> list[dict]:
    """The delivery log of a version's newest ``sessions`` row (empty when it has none)."""
    rows = ch.execute(f"SELECT attempts FROM {ch.database}.sessions WHERE project = %(p)s AND session_id = %(s)s "  # noqa: S608
                      "AND version = %(v)s ORDER BY forwarded_at_ms DESC LIMIT 1",
                      {"p": project, "s": session_id, "v": int(version)})
    try:
        return list(json.loads(rows[0][0])) if rows else []
    except ValueError:
        return []


def insert_session_rows(ch: ClickHouse, rows: list, settings: dict | None = None) -> int:
    """Write forwarded sessions (session_row() lists) in one INSERT; a row without its delivery
    log (a message from before the log existed) gets an empty one."""
    width = len(SESSION_ROW_COLUMNS)
    return ch.insert("sessions", SESSION_ROW_COLUMNS, [tuple(r) + ("[]",) * (width - len(r)) for r in rows],
                     settings=settings)

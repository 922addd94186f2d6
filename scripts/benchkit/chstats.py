"""What the bench asks ClickHouse: which tables there are, how many of a phase's events are
stored, when probe batches became visible, and INSERTs and parts per table.

Table names come from ``system.tables`` (the pipeline is being reshaped; nothing here assumes
which tables exist). Rows per INSERT and INSERTs per second come from ``system.part_log``:
every INSERT writes one new part per partition it touches, including the rows a materialized
view writes into its target table, and parts are what ClickHouse must merge ("too many parts").
``system.query_log`` (``log_queries=1``) gives the INSERT statements per table as a cross-check:
a table filled by a materialized view has parts but no statements of its own.
"""
from __future__ import annotations

import logging
import re
import time
from urllib.parse import unquote, urlsplit

PART_LOG = "system.part_log (NEW_PART: one per INSERT and partition, views' target rows included)"
_INSERT_INTO = re.compile(r"^\s*INSERT\s+INTO\s+([`\"\w.]+)", re.IGNORECASE)


def client(url: str):
    """A clickhouse-driver client for ``clickhouse://user:pass@host:port/db`` (one per thread)."""
    from clickhouse_driver import Client

    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    u = urlsplit(url)
    return Client(u.hostname or "127.0.0.1", port=u.port or 9000, user=unquote(u.username or "default"),
                  password=unquote(u.password or ""), database=(u.path or "/default").lstrip("/") or "default",
                  connect_timeout=3, send_receive_timeout=30)


def database(url: str) -> str:
    return (urlsplit(url).path or "/default").lstrip("/") or "default"


def tables(ch, db: str) -> list[str]:
    """The MergeTree tables of ``db`` (views excluded), sorted."""
    rows = ch.execute("SELECT name FROM system.tables WHERE database = %(db)s AND engine LIKE '%%MergeTree%%' "
                      "ORDER BY name", {"db": db})
    return [r[0] for r in rows]


def events_table(ch, db: str) -> str:
    """The table holding one row per event: ``events`` when present, else the MergeTree table
    with ``event_id``, ``session_id`` and the most other columns."""
    names = tables(ch, db)
    if "events" in names:
        return "events"
    best, width = "", 0
    for name in names:
        cols = {r[0] for r in ch.execute(f"DESCRIBE TABLE {db}.{name}")}
        if {"event_id", "session_id"} <= cols and len(cols) > width:
            best, width = name, len(cols)
    if not best:
        raise RuntimeError(f"no events table in {db}: {names}")
    return best


class Counter:
    """Counts a phase's stored events by its session-id prefix (the primary key's prefix)."""

    def __init__(self, url: str, project: str) -> None:
        self.ch = client(url)
        self.db = database(url)
        self.table = events_table(self.ch, self.db)
        self.project = project

    def stored(self, tag: str) -> int:
        sql = (f"SELECT count() FROM {self.db}.{self.table} "  # noqa: S608 -- names from the URL and system.tables
               "WHERE project = %(p)s AND session_id LIKE %(like)s")
        return int(self.ch.execute(sql, {"p": self.project, "like": tag.replace("_", "\\_") + "%"})[0][0])

    def seen_sessions(self, prefix: str) -> set[str]:
        """Distinct session ids starting with ``prefix`` that are queryable now."""
        sql = (f"SELECT DISTINCT session_id FROM {self.db}.{self.table} "  # noqa: S608 -- as above
               "WHERE project = %(p)s AND session_id LIKE %(like)s")
        return {r[0] for r in self.ch.execute(sql, {"p": self.project, "like": prefix.replace("_", "\\_") + "%"})}

    def close(self) -> None:
        self.ch.disconnect()


def flush_logs(ch) -> None:
    """Write the log tables' buffers now (else they are flushed every flush interval)."""
    try:
        ch.execute("SYSTEM FLUSH LOGS")
    except Exception:
        time.sleep(2.0)  # an older server without the statement: wait out a 1 s flush interval


def has_table(ch, full: str) -> bool:
    db, _, name = full.partition(".")
    return bool(ch.execute("SELECT count() FROM system.tables WHERE database = %(d)s AND name = %(n)s",
                           {"d": db, "n": name})[0][0])


def insert_stats(ch, db: str, t0: float, t1: float) -> dict:
    """Parts and INSERT statements per table of ``db`` between wall times t0 and t1.

    The window is cut to whole seconds (the logs' ``event_time`` resolution). Every MergeTree
    table of the database is listed, with zeros when nothing was written to it.
    """
    s0, s1 = int(t0) + 1, int(t1)
    window = max(1, s1 - s0)
    out: dict = {"source": PART_LOG, "window_s": float(window), "tables": {}}
    for name in tables(ch, db):
        out["tables"][name] = {"inserts": 0, "rows": 0, "rows_per_insert": float("nan"), "inserts_per_s": 0.0,
                               "statements": None, "statement_rows": None}
    flush_logs(ch)
    if not has_table(ch, "system.part_log"):
        out["source"] = "n/a (the server keeps no system.part_log: enable <part_log> in its config)"
        for t in out["tables"].values():
            t["inserts_per_s"] = float("nan")
        return out
    rows = ch.execute(
        "SELECT table, count(), sum(rows) FROM system.part_log WHERE event_type = 1 AND database = %(db)s "
        "AND event_time >= toDateTime(%(s0)s) AND event_time < toDateTime(%(s1)s) GROUP BY table",
        {"db": db, "s0": s0, "s1": s1})
    for name, parts, nrows in rows:
        t = out["tables"].setdefault(name, {"statements": None, "statement_rows": None})
        t.update(inserts=int(parts), rows=int(nrows), rows_per_insert=nrows / parts if parts else float("nan"),
                 inserts_per_s=parts / window)
    if has_table(ch, "system.query_log"):
        for t in out["tables"].values():
            t["statements"], t["statement_rows"] = 0, 0
        stmts = ch.execute(
            "SELECT query, written_rows FROM system.query_log WHERE type = 2 AND query LIKE 'INSERT%%' "
            "AND event_time >= toDateTime(%(s0)s) AND event_time < toDateTime(%(s1)s)", {"s0": s0, "s1": s1})
        for name, n, nrows in statements_per_table(stmts, db):
            t = out["tables"].get(name)
            if t is not None:
                t["statements"], t["statement_rows"] = n, nrows
    return out


def statements_per_table(rows: list[tuple[str, int]], db: str) -> list[tuple[str, int, int]]:
    """[(query, written_rows)] of finished INSERTs -> [(table of db, statements, rows)]."""
    per: dict[str, list[int]] = {}
    for query, written in rows:
        m = _INSERT_INTO.match(query)
        if not m:
            continue
        target = m.group(1).replace("`", "").replace('"', "")
        tdb, _, name = target.rpartition(".")
        if tdb and tdb != db:
            continue
        acc = per.setdefault(name, [0, 0])
        acc[0] += 1
        acc[1] += int(written)
    return [(k, v[0], v[1]) for k, v in sorted(per.items())]


def server_version(ch) -> str:
    return str(ch.execute("SELECT version()")[0][0])


def wait_until(check, timeout: float, interval: float = 0.25) -> float | None:
    """Poll ``check`` until true; seconds it took, or None after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # noqa: S110 -- not ready yet (or not reachable): poll again until the timeout
            pass
        time.sleep(interval)
    return None

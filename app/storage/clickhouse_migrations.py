"""ClickHouse schema, created by feature detection so it runs on 18.16 and on current servers.

Canonical time columns are ``ts_ms``/``received_at_ms`` (Int64 epoch milliseconds) on every
engine, so every query reads the same way and millisecond precision always survives. Where
the server has them, a ``DateTime64(3)`` column, ``LowCardinality`` and ``TTL`` are added;
on 18.16 the column is a second-precision ``DateTime`` and there is no TTL.

Exactly-once rule (issue 11, docs/DESIGN.md): an event is identified by (project, event_id);
its row of record is its earliest row, the smallest (received_at_ms, batch_id). ``events`` and
``event_ids`` keep one row per (event, batch) -- batch_id is in the sorting key, so a merge never
drops another batch's row -- and their version column ``keep_rank`` makes a merge of two rows of
one batch keep the earlier receipt. So the earliest row survives every merge and
``OPTIMIZE ... FINAL``, and the rule gives the same answer before and after. ``event_ids`` (filled
by a materialized view) indexes events by (project, event_id) for the dedup lookups and lives for
the dedup window (+1 h): by TTL where the engine has it, and by dropping whole days
(``events_repo.drop_expired_event_ids``, run by the reconciliation task) everywhere.
``events_dedup`` is the documented one-row-per-event view.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.storage.clickhouse import ident

if TYPE_CHECKING:
    from app.storage.clickhouse import ClickHouse

# event_ids rows outlive the window by this margin: a batch stored late (storage retries) looks
# back one window from its own receive time, not from now.
EVENT_IDS_MARGIN_S = 3600
# A rank that decreases with received_at_ms: ReplacingMergeTree keeps the row with the largest.
_RANK_EXPR = "toUInt64(9223372036854775807 - received_at_ms)"
# On a cluster (CLICKHOUSE_CLUSTER): each table of the single-node schema is a Distributed table
# under the same name, so every query and INSERT reads the same; its rows are in a replicated
# ``<name>_local`` table on each server, sharded by session.
DISTRIBUTED_TABLES = ("events", "event_ids", "session_batches", "sessions")
LOCAL_SUFFIX = "_local"
SHARDING_KEY = "cityHash64(project, session_id)"
_EVENT_FIELDS = ("project", "session_id", "event_id", "type", "ts_ms", "received_at_ms", "timestamp",
                 "url", "name", "anonymous_id", "metadata", "request_id", "batch_id")


@dataclass(frozen=True)
class Features:
    """What the connected engine supports."""

    version: str
    datetime64: bool
    low_cardinality: bool
    ttl: bool
    async_insert: bool


def _probe(ch: ClickHouse, sql: str) -> bool:
    try:
        ch.execute(sql)
        return True
    except Exception:  # an unsupported function or syntax is the answer we are probing for
        return False


def detect(ch: ClickHouse) -> Features:
    """Probe the engine for the features the schema can use."""
    version = ch.execute("SELECT version()")[0][0]
    dt64 = _probe(ch, "SELECT toDateTime64('2020-01-01 00:00:00.123', 3)")
    async_insert = bool(ch.execute("SELECT count() FROM system.settings WHERE name = 'async_insert'")[0][0])
    # TTL and stable LowCardinality arrived together with DateTime64 (19.x/20.x); 18.16 has
    # LowCardinality only behind an experimental flag, which we do not rely on.
    return Features(version=version, datetime64=dt64, low_cardinality=dt64, ttl=dt64, async_insert=async_insert)


def _engine(db: str, table: str, cluster: str, version_col: str = "") -> str:
    if cluster:
        path = f"'/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}'"
        args = f"{path}, {version_col}" if version_col else path
        return f"ReplicatedReplacingMergeTree({args})"
    return f"ReplacingMergeTree({version_col})"


def _event_columns(f: Features, computed: str = "MATERIALIZED") -> str:
    """The events columns; ``computed`` is how ``timestamp`` and ``keep_rank`` are derived."""
    lc = "LowCardinality(String)" if f.low_cardinality else "String"
    if f.datetime64:
        ts_col = f"DateTime64(3, 'UTC') {computed} fromUnixTimestamp64Milli(ts_ms, 'UTC')"
    else:
        ts_col = f"DateTime {computed} toDateTime(intDiv(ts_ms, 1000), 'UTC')"
    return f"""    project {lc},
    session_id String,
    event_id String,
    type {lc},
    ts_ms Int64,
    received_at_ms Int64,
    timestamp {ts_col},
    url String,
    name String,
    anonymous_id String,
    metadata String,
    request_id String,
    batch_id String,
    keep_rank UInt64 {computed} {_RANK_EXPR}"""


def events_ddl(db: str, f: Features, table: str = "events", ttl_days: int = 90, cluster: str = "") -> str:
    """CREATE statement of the events table (also used to rebuild a pre-issue-11 table)."""
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    ttl = (f"\nTTL toDateTime(intDiv(received_at_ms, 1000)) + INTERVAL {int(ttl_days)} DAY"
           if (f.ttl and ttl_days) else "")
    return f"""CREATE TABLE IF NOT EXISTS {db}.{ident(table)}{on} (
{_event_columns(f)}
) ENGINE = {_engine(db, table, cluster, 'keep_rank')}
PARTITION BY toYYYYMM(toDateTime(intDiv(ts_ms, 1000), 'UTC'))
ORDER BY (project, session_id, event_id, batch_id){ttl}"""


def _argmin_view(db: str, cluster: str = "") -> str:
    # Inner aliases differ from column names: old servers resolve an alias that shadows a
    # column inside its own aggregate as a cycle.
    k = "(received_at_ms, batch_id)"
    inner = ", ".join(f"argMin({c}, {k}) AS _{c}" for c in _EVENT_FIELDS if c not in ("project", "event_id"))
    outer = ", ".join(f"_{c} AS {c}" for c in _EVENT_FIELDS if c not in ("project", "event_id"))
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    return (f"CREATE VIEW IF NOT EXISTS {db}.events_dedup{on} AS SELECT _p AS project, _e AS event_id, {outer} FROM ("  # noqa: S608 -- identifiers via ident(), columns are constants
            f"SELECT project AS _p, event_id AS _e, {inner} FROM {db}.events GROUP BY project, event_id)")


def ddl(db: str, f: Features, ttl_days: int = 90, cluster: str = "", dedup_window: int = 86400) -> list[str]:
    """The CREATE statements for ``db`` on an engine with features ``f``."""
    db = ident(db)
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    lc = "LowCardinality(String)" if f.low_cardinality else "String"
    ids_ttl = (f"\nTTL toDateTime(intDiv(received_at_ms, 1000)) + INTERVAL {int(dedup_window) + EVENT_IDS_MARGIN_S} "
               "SECOND"
               if f.ttl else "")
    t = local_table if cluster else (lambda name: name)
    statements = [
        f"CREATE DATABASE IF NOT EXISTS {db}{on}",
        events_ddl(db, f, t("events"), ttl_days, cluster),
        f"""CREATE TABLE IF NOT EXISTS {db}.{t('event_ids')}{on} (
    project {lc},
    event_id String,
    batch_id String,
    received_at_ms Int64,
    session_id String,
    keep_rank UInt64 DEFAULT {_RANK_EXPR}
) ENGINE = {_engine(db, t('event_ids'), cluster, 'keep_rank')}
PARTITION BY toYYYYMMDD(toDateTime(intDiv(received_at_ms, 1000), 'UTC'))
ORDER BY (project, event_id, batch_id){ids_ttl}""",
        # 18.16 does not compute a target's MATERIALIZED columns for a view: the rank is selected.
        # On a cluster the view reads each server's local inserts and writes beside them: a
        # session's event_ids rows live on its shard, replicated like the events.
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.event_ids_mv{on} TO {db}.{t('event_ids')} AS
SELECT project, event_id, batch_id, received_at_ms, session_id, {_RANK_EXPR} AS keep_rank FROM {db}.{t('events')}""",  # noqa: S608 -- identifiers via ident(), columns are constants
        f"""CREATE TABLE IF NOT EXISTS {db}.{t('session_batches')}{on} (
    project String,
    session_id String,
    version UInt32,
    batch_id String,
    events UInt32,
    created_ms Int64
) ENGINE = {_engine(db, t('session_batches'), cluster)}
ORDER BY (project, session_id, version, batch_id)""",
        f"""CREATE TABLE IF NOT EXISTS {db}.{t('sessions')}{on} (
    project String,
    session_id String,
    version UInt32,
    first_ts_ms Int64,
    last_ts_ms Int64,
    duration_ms Int64,
    event_count UInt32,
    counts String,
    finalized_reason String,
    finalized_at_ms Int64,
    forwarded_at_ms Int64,
    webhook_id String,
    status String
) ENGINE = {_engine(db, t('sessions'), cluster, 'forwarded_at_ms')}
ORDER BY (project, session_id, version)""",
    ]
    if cluster:
        statements += [distributed_ddl(db, table, cluster, f) for table in DISTRIBUTED_TABLES]
    return statements + [_argmin_view(db, cluster)]


def local_table(table: str) -> str:
    """Name of the replicated table on each server behind the Distributed ``table``."""
    return f"{table}{LOCAL_SUFFIX}"


def distributed_ddl(db: str, table: str, cluster: str, f: Features) -> str:
    """The Distributed table under the single-node name, in front of its local tables.

    Rows go to a shard by project and session, so everything of one session -- its events,
    their event_ids rows (written by the view beside them), its batches and versions -- lives
    on one shard, where deduplication by key and FINAL see all of it.
    """
    head = f"CREATE TABLE IF NOT EXISTS {db}.{ident(table)} ON CLUSTER {ident(cluster)}"
    engine = f"ENGINE = Distributed({ident(cluster)}, {db}, {local_table(table)}, {SHARDING_KEY})"
    if table == "events":
        # 18.16's Distributed INSERT passes MATERIALIZED columns on to the shard, which refuses
        # them (code 44): here they are ALIAS (computed when read), on the shards MATERIALIZED.
        return f"{head} (\n{_event_columns(f, 'ALIAS')}\n) {engine}"
    return f"{head} AS {db}.{local_table(table)} {engine}"


def _table_exists(ch: ClickHouse, db: str, table: str) -> bool:
    sql = "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s"
    return bool(ch.execute(sql, {"db": db, "t": table})[0][0])


def _check_layout(ch: ClickHouse, db: str, cluster: str) -> None:
    """Refuse to mix layouts: single-node tables on a cluster (move them with
    scripts/clickhouse_to_cluster.py), or a cluster's Distributed tables without CLICKHOUSE_CLUSTER."""
    rows = ch.execute("SELECT engine FROM system.tables WHERE database = %(db)s AND name = 'events'", {"db": db})
    if rows and (rows[0][0] == "Distributed") != bool(cluster):
        raise RuntimeError(f"{db}.events is a {rows[0][0]} table but CLICKHOUSE_CLUSTER is "
                           f"{cluster or 'empty'}: "
                           + ("move the single-node data with scripts/clickhouse_to_cluster.py"
                              if cluster else "set CLICKHOUSE_CLUSTER to the cluster's name"))


def _rebuild_old_events(ch: ClickHouse, db: str, f: Features, ttl_days: int, cluster: str) -> bool:
    """Move a pre-issue-11 events table (no batch_id in its key) into the new layout."""
    # On a cluster ``events`` is the Distributed table (no sorting key): the key is the local table's.
    rows = ch.execute("SELECT sorting_key FROM system.tables WHERE database = %(db)s AND name = %(t)s",
                      {"db": db, "t": local_table("events") if cluster else "events"})
    if not rows or "batch_id" in rows[0][0]:
        return False
    if cluster:
        # A cluster rebuild is an operator's job (per-shard copy); refuse rather than half-do it.
        raise RuntimeError(f"{db}.events predates issue 11; rebuild it on the cluster (docs/DESIGN.md)")
    cols = ", ".join(c for c in _EVENT_FIELDS if c != "timestamp")
    ch.execute(events_ddl(db, f, "events_v11", ttl_days))
    ch.execute(f"INSERT INTO {db}.events_v11 ({cols}) SELECT {cols} FROM {db}.events")  # noqa: S608 -- identifiers via ident(), columns are constants
    # The old table is kept (renamed) for the operator to drop once satisfied.
    ch.execute(f"RENAME TABLE {db}.events TO {db}.events_pre11, {db}.events_v11 TO {db}.events")
    return True


def migrate(ch: ClickHouse, ttl_days: int = 90, cluster: str = "", dedup_window: int = 86400) -> Features:
    """Create the database and tables (idempotent); returns the detected features."""
    features = detect(ch)
    db = ident(ch.database)
    statements = ddl(db, features, ttl_days, cluster, dedup_window)
    ch.execute(statements[0])
    _check_layout(ch, db, cluster)
    _rebuild_old_events(ch, db, features, ttl_days, cluster)
    had_ids = _table_exists(ch, db, local_table("event_ids") if cluster else "event_ids")
    for statement in statements[1:]:
        ch.execute(statement)
    if not had_ids:
        # Index the events already stored within the window (the view only sees new INSERTs);
        # rows inserted meanwhile arrive twice and collapse on the key.
        ch.execute(f"INSERT INTO {db}.event_ids (project, event_id, batch_id, received_at_ms, session_id) "  # noqa: S608 -- identifiers via ident(), columns are constants
                   f"SELECT project, event_id, batch_id, received_at_ms, session_id FROM {db}.events "
                   f"WHERE received_at_ms >= toInt64(toUnixTimestamp(now())) * 1000 - %(w)s",
                   {"w": (int(dedup_window) + EVENT_IDS_MARGIN_S) * 1000})
    return features

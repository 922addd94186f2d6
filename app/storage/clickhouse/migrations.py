"""ClickHouse schema, created by feature detection so it runs on 18.16 and on current servers.

Canonical time columns are ``ts_ms``/``received_at_ms`` (Int64 epoch milliseconds) on every
engine, so every query reads the same way and millisecond precision always survives. Where
the server has them, a ``DateTime64(3)`` column, ``LowCardinality`` and ``TTL`` are added;
on 18.16 the column is a second-precision ``DateTime`` and there is no TTL.

Exactly-once rule (docs/DESIGN.md): an event is identified by (project, event_id);
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

import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.storage.clickhouse.client import ident

if TYPE_CHECKING:
    from app.storage.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)
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


# The reconciliation reads the last hours of ``session_batches`` (by created_ms) and of
# ``sessions`` (by forwarded_at_ms) every minute: partitioned by those times, it reads the
# partitions of those hours instead of the whole history. ``sessions`` by month: a version's
# rows share one partition unless forwarded again across a month's end.
SESSION_BATCHES_PARTITION = "toYYYYMMDD(toDateTime(intDiv(created_ms, 1000), 'UTC'))"
SESSIONS_PARTITION = "toYYYYMM(toDateTime(intDiv(forwarded_at_ms, 1000), 'UTC'))"
# Retention (migration 3, app/retention.py): ``events`` is partitioned by its retention class and
# the event's day, so a class expires as whole partitions (Sentry/Snuba's layout). The class is
# set at insert from the project's override (0 = the default, RETENTION_DAYS when the job runs).
EVENTS_PARTITION = "(retention_days, toYYYYMMDD(toDateTime(intDiv(ts_ms, 1000), 'UTC')))"
LEGACY_EVENTS_PARTITION = "toYYYYMM(toDateTime(intDiv(ts_ms, 1000), 'UTC'))"


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


def _event_columns(f: Features, computed: str = "MATERIALIZED", legacy: bool = False) -> str:
    """The events columns; ``computed`` is how ``timestamp`` and ``keep_rank`` are derived;
    ``legacy``: without ``retention_days`` (the layout before migration 3)."""
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
    keep_rank UInt64 {computed} {_RANK_EXPR}""" + ("" if legacy else ",\n    retention_days UInt16 DEFAULT 0")


def events_ddl(db: str, f: Features, table: str = "events", ttl_days: int = 90, cluster: str = "",
               legacy: bool = False) -> str:
    """CREATE statement of the events table: partitioned by retention class and day, no TTL (the
    retention job drops whole partitions on every engine). ``legacy``: the layout before migration 3
    (by month, TTL ``ttl_days`` on received_at where the engine has TTL), for tests and the move."""
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    ttl = (f"\nTTL toDateTime(intDiv(received_at_ms, 1000)) + INTERVAL {int(ttl_days)} DAY"
           if (legacy and f.ttl and ttl_days) else "")
    return f"""CREATE TABLE IF NOT EXISTS {db}.{ident(table)}{on} (
{_event_columns(f, legacy=legacy)}
) ENGINE = {_engine(db, table, cluster, 'keep_rank')}
PARTITION BY {LEGACY_EVENTS_PARTITION if legacy else EVENTS_PARTITION}
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


def ddl(db: str, f: Features, ttl_days: int = 90, cluster: str = "", dedup_window: int = 86400,
        legacy: bool = False) -> list[str]:
    """The CREATE statements for ``db`` on an engine with features ``f`` (``legacy``: ``events`` as
    before migration 3)."""
    db = ident(db)
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    lc = "LowCardinality(String)" if f.low_cardinality else "String"
    ids_ttl = (f"\nTTL toDateTime(intDiv(received_at_ms, 1000)) + INTERVAL {int(dedup_window) + EVENT_IDS_MARGIN_S} "
               "SECOND"
               if f.ttl else "")
    t = local_table if cluster else (lambda name: name)
    statements = [
        f"CREATE DATABASE IF NOT EXISTS {db}{on}",
        events_ddl(db, f, t("events"), ttl_days, cluster, legacy),
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
        event_ids_mv_ddl(db, cluster),
        session_batches_ddl(db, t("session_batches"), cluster),
        sessions_ddl(db, t("sessions"), cluster),
    ]
    if cluster:
        statements += [distributed_ddl(db, table, cluster, f, legacy) for table in DISTRIBUTED_TABLES]
    return statements + [_argmin_view(db, cluster)]


def event_ids_mv_ddl(db: str, cluster: str = "") -> str:
    """The materialized view filling ``event_ids`` from ``events`` (each server's local tables on a cluster)."""
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    t = local_table if cluster else (lambda name: name)
    return f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.event_ids_mv{on} TO {db}.{t('event_ids')} AS
SELECT project, event_id, batch_id, received_at_ms, session_id, {_RANK_EXPR} AS keep_rank FROM {db}.{t('events')}"""  # noqa: S608 -- identifiers via ident(), columns are constants


def session_batches_ddl(db: str, table: str, cluster: str = "") -> str:
    """CREATE statement of ``session_batches`` (or its local table on a cluster) named ``table``."""
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    return f"""CREATE TABLE IF NOT EXISTS {db}.{ident(table)}{on} (
    project String,
    session_id String,
    version UInt32,
    batch_id String,
    events UInt32,
    created_ms Int64
) ENGINE = {_engine(db, table, cluster)}
PARTITION BY {SESSION_BATCHES_PARTITION}
ORDER BY (project, session_id, version, batch_id)"""


def sessions_ddl(db: str, table: str, cluster: str = "") -> str:
    """CREATE statement of ``sessions`` (or its local table on a cluster) named ``table``."""
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    return f"""CREATE TABLE IF NOT EXISTS {db}.{ident(table)}{on} (
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
    status String,
    attempts String DEFAULT '[]'
) ENGINE = {_engine(db, table, cluster, 'forwarded_at_ms')}
PARTITION BY {SESSIONS_PARTITION}
ORDER BY (project, session_id, version)"""


def local_table(table: str) -> str:
    """Name of the replicated table on each server behind the Distributed ``table``."""
    return f"{table}{LOCAL_SUFFIX}"


def distributed_ddl(db: str, table: str, cluster: str, f: Features, legacy: bool = False) -> str:
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
        return f"{head} (\n{_event_columns(f, 'ALIAS', legacy)}\n) {engine}"
    return f"{head} AS {db}.{local_table(table)} {engine}"


def _check_layout(ch: ClickHouse, db: str, cluster: str) -> None:
    """Refuse to mix layouts: single-node tables on a cluster (move them with
    scripts/clickhouse_to_cluster.py), or a cluster's Distributed tables without CLICKHOUSE_CLUSTER."""
    rows = ch.execute("SELECT engine FROM system.tables WHERE database = %(db)s AND name = 'events'", {"db": db})
    if rows and (rows[0][0] == "Distributed") != bool(cluster):
        raise RuntimeError(f"{db}.events is a {rows[0][0]} table but CLICKHOUSE_CLUSTER is "
                           f"{cluster or 'empty'}: "
                           + ("move the single-node data with scripts/clickhouse_to_cluster.py"
                              if cluster else "set CLICKHOUSE_CLUSTER to the cluster's name"))


# ------------------------------------------------------------------ versioned migrations
# Each migration is applied once, in order, and recorded in ``schema_migrations`` in the Observer
# database. On a cluster that table is one replicated table with every server of the cluster as
# a replica (one ZooKeeper path for all shards, replica ``{shard}-{replica}``): whichever server a
# release step connects to holds the whole record, and a server added later fetches it. New
# migrations are appended to ``MIGRATIONS`` (never renumbered, never edited once released); each
# is written so that running it again after a crash finishes it (it checks what exists).
VERSION_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Context:
    """What a migration needs: the backend, the engine's features and the settings."""

    ch: ClickHouse
    features: Features
    cluster: str
    ttl_days: int
    dedup_window: int


@dataclass(frozen=True)
class Migration:
    """One step of the ClickHouse schema: ``apply`` runs it (idempotently)."""

    version: int
    name: str
    apply: Callable[[Context], None]


def _current_schema(c: Context) -> None:
    """The schema as it was when versioning began: CREATE ... IF NOT EXISTS, a no-op where it exists."""
    for statement in ddl(ident(c.ch.database), c.features, c.ttl_days, c.cluster, c.dedup_window)[1:]:
        c.ch.execute(statement)


def _partition_session_tables(c: Context) -> None:
    """``session_batches`` and ``sessions`` made before 7a6366f move to their time partitioning."""
    repartition(c.ch, "session_batches", c.cluster)
    repartition(c.ch, "sessions", c.cluster)


def _retention_layout(c: Context) -> None:
    """``events`` moves to its retention layout: partitioned by (retention class, day)."""
    move_events(c.ch, c.cluster)


def _delivery_log(c: Context) -> None:
    """``sessions`` gains ``attempts``, each version's delivery log (JSON), where it lacks it."""
    db = ident(c.ch.database)
    on = f" ON CLUSTER {ident(c.cluster)}" if c.cluster else ""
    for table in (local_table("sessions"), "sessions") if c.cluster else ("sessions",):
        have = c.ch.execute("SELECT count() FROM system.columns WHERE database = %(d)s AND table = %(t)s "
                            "AND name = 'attempts'", {"d": c.ch.database, "t": table})[0][0]
        if not int(have):
            c.ch.execute(f"ALTER TABLE {db}.{ident(table)}{on} ADD COLUMN attempts String DEFAULT '[]'")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "current schema", _current_schema),
    Migration(2, "partition session_batches and sessions by time", _partition_session_tables),
    Migration(3, "partition events by retention class and day", _retention_layout),
    Migration(4, "sessions: the delivery log of every attempt", _delivery_log),
)


def _version_table_ddl(db: str, cluster: str) -> str:
    if cluster:
        engine = f"ReplicatedMergeTree('/clickhouse/tables/all/{db}/{VERSION_TABLE}', '{{shard}}-{{replica}}')"
        on = f" ON CLUSTER {ident(cluster)}"
    else:
        engine, on = "MergeTree()", ""
    return (f"CREATE TABLE IF NOT EXISTS {db}.{VERSION_TABLE}{on} (version UInt32, name String, "
            f"applied_at_ms Int64, host String) ENGINE = {engine} ORDER BY version")


def applied_versions(ch: ClickHouse) -> dict[int, tuple[str, int]]:
    """``{version: (name, applied_at_ms)}`` of the migrations recorded (empty before versioning)."""
    exists = ch.execute("SELECT count() FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                        {"d": ch.database, "t": VERSION_TABLE})[0][0]
    if not int(exists):
        return {}
    rows = ch.execute(f"SELECT version, any(name), min(applied_at_ms) FROM {ident(ch.database)}.{VERSION_TABLE} "  # noqa: S608 -- identifiers via ident()
                      "GROUP BY version")
    return {int(v): (str(n), int(t)) for v, n, t in rows}


def pending(ch: ClickHouse) -> list[Migration]:
    """The migrations not yet recorded, in order."""
    done = applied_versions(ch)
    return [m for m in MIGRATIONS if m.version not in done]


def apply(ch: ClickHouse, ttl_days: int = 90, cluster: str = "",
          dedup_window: int = 86400) -> tuple[Features, list[Migration]]:
    """Apply the pending migrations in order, each recorded once it finished; then make the TTLs
    follow the settings (every start: they are settings, not versions). Returns the features and
    the migrations applied now. Callers that may race take the release lock first
    (app/storage/schema.py); the chDB owner needs none, its directory lock admits one process."""
    features = detect(ch)
    db = ident(ch.database)
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {db}{on}")
    _check_layout(ch, db, cluster)
    ch.execute(_version_table_ddl(db, cluster))
    context = Context(ch, features, cluster, ttl_days, dedup_window)
    done = []
    for migration in pending(ch):
        log.info("applying clickhouse migration %d (%s)", migration.version, migration.name)
        migration.apply(context)
        ch.insert(VERSION_TABLE, ("version", "name", "applied_at_ms", "host"),
                  [(migration.version, migration.name, int(time.time() * 1000), socket.gethostname())])
        done.append(migration)
    if features.ttl:
        follow_ttls(ch, cluster, dedup_window)
    return features, done


def migrate(ch: ClickHouse, ttl_days: int = 90, cluster: str = "", dedup_window: int = 86400) -> Features:
    """Apply the pending migrations (idempotent); returns the detected features."""
    return apply(ch, ttl_days, cluster, dedup_window)[0]


# Columns of the moved tables, in their CREATE order (none is computed).
_MOVED_COLUMNS = {
    "session_batches": ("project", "session_id", "version", "batch_id", "events", "created_ms"),
    "sessions": ("project", "session_id", "version", "first_ts_ms", "last_ts_ms", "duration_ms", "event_count",
                 "counts", "finalized_reason", "finalized_at_ms", "forwarded_at_ms", "webhook_id", "status"),
}
_MOVED_DDL = {"session_batches": session_batches_ddl, "sessions": sessions_ddl}


def _tables(ch: ClickHouse) -> set[str]:
    return {str(n) for (n,) in ch.execute("SELECT name FROM system.tables WHERE database = %(d)s",
                                          {"d": ch.database})}


def repartition(ch: ClickHouse, table: str, cluster: str = "") -> int:
    """Move ``table`` (``session_batches`` or ``sessions``) to its partitioned layout, every row
    kept; returns the rows copied (0 when it already was partitioned).

    Create the partitioned table beside it, ``INSERT ... SELECT`` every row, swap the two by one
    ``RENAME``, then copy the rows writers added to the old table during the copy (those not in
    the new one, compared as whole rows), check that none is missing, and drop the old table.
    Writers may run meanwhile: an INSERT before the swap lands in the old table and is copied
    after it, one after the swap lands in the new table. On a cluster the local tables are
    swapped ON CLUSTER behind the unchanged Distributed table, and the copies go through
    Distributed tables (rows stay on their shard: same sharding key). A run cut short is
    finished by the next: a half-made new table is dropped and made again, a left-over old
    table is caught up and dropped."""
    db = ident(ch.database)
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    local = local_table(table) if cluster else table
    new_local, old_local = f"{local}_m2", f"{local}_pre_m2"
    # The tables read and written as a whole: Distributed ones on a cluster, the tables themselves on one node.
    new_all, old_all = (f"{table}_m2", f"{table}_pre_m2") if cluster else (new_local, old_local)
    cols = ", ".join(_MOVED_COLUMNS[table])
    tables = _tables(ch)
    if local not in tables:
        return 0
    copied = 0
    if local in unpartitioned(ch, cluster):
        for name in (new_all, new_local):
            ch.execute(f"DROP TABLE IF EXISTS {db}.{name}{on}")
        ch.execute(_MOVED_DDL[table](db, new_local, cluster))
        if cluster:
            ch.execute(f"CREATE TABLE IF NOT EXISTS {db}.{new_all}{on} AS {db}.{new_local} "
                       f"ENGINE = Distributed({ident(cluster)}, {db}, {new_local}, {SHARDING_KEY})")
        ch.execute(f"INSERT INTO {db}.{new_all} ({cols}) SELECT {cols} FROM {db}.{table}")  # noqa: S608 -- identifiers via ident(), columns are constants
        copied = int(ch.execute(f"SELECT count() FROM {db}.{new_all}")[0][0])  # noqa: S608 -- identifiers via ident()
        ch.execute(f"RENAME TABLE {db}.{local} TO {db}.{old_local}, {db}.{new_local} TO {db}.{local}{on}")
        if cluster:
            ch.execute(f"DROP TABLE IF EXISTS {db}.{new_all}{on}")
        tables = _tables(ch)
    if old_local in tables:
        if cluster:
            ch.execute(f"CREATE TABLE IF NOT EXISTS {db}.{old_all}{on} AS {db}.{old_local} "
                       f"ENGINE = Distributed({ident(cluster)}, {db}, {old_local}, {SHARDING_KEY})")
        _catch_up_and_drop(ch, db, table, (old_local, old_all), on, cols, (f"({cols})", cols))
    return copied


def _catch_up_and_drop(ch: ClickHouse, db: str, table: str, old: tuple[str, str], on: str, cols: str,
                       key: tuple[str, str]) -> None:
    """The last step of a move: copy the rows writers added to the old table (``old``: its local
    and its all-shards name, the same off a cluster) since the first copy, check that none is
    missing from ``table`` by ``key`` (the row side of NOT IN, the subquery's select list), then drop
    the old table (kept, and an error raised, if any is)."""
    old_local, old_all = old
    missing = f"FROM {db}.{old_all} WHERE {key[0]} NOT IN (SELECT {key[1]} FROM {db}.{table})"  # noqa: S608 -- identifiers via ident(), columns are constants
    ch.execute(f"INSERT INTO {db}.{table} ({cols}) SELECT {cols} {missing}")  # noqa: S608 -- identifiers via ident(), columns are constants
    left = int(ch.execute(f"SELECT count() {missing}")[0][0])  # noqa: S608 -- identifiers via ident(), columns are constants
    if left:
        raise RuntimeError(f"{db}.{old_local}: {left} rows not in {db}.{table} after the move; kept for a look")
    if old_all != old_local:
        ch.execute(f"DROP TABLE IF EXISTS {db}.{old_all}{on}")
    ch.execute(f"DROP TABLE IF EXISTS {db}.{old_local}{on}")


# Events as written by the pipeline (the computed columns follow), in the legacy table's order.
_EVENTS_STORED = ("project", "session_id", "event_id", "type", "ts_ms", "received_at_ms", "url", "name",
                  "anonymous_id", "metadata", "request_id", "batch_id")
# One string per row (18.16's index analysis refuses a tuple of key columns NOT IN a subquery).
_EVENTS_KEY = "concat(project, '|', event_id, '|', batch_id, '|', toString(received_at_ms))"
# event_ids rows of events written while the view is re-made are written again (ReplacingMergeTree
# collapses the copies): those received from this long before the view was dropped.
_VIEW_GAP_MARGIN_MS = 600_000


def legacy_events(ch: ClickHouse, cluster: str = "") -> bool:
    """Whether ``events`` (its local table on a cluster) has the layout before migration 3."""
    table = local_table("events") if cluster else "events"
    rows = ch.execute("SELECT partition_key FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                      {"d": ch.database, "t": table})
    return bool(rows) and "retention_days" not in str(rows[0][0])


def move_events(ch: ClickHouse, cluster: str = "") -> int:
    """Move ``events`` to its retention layout, every row kept (class 0, the default, for rows
    written before); returns the rows copied (0 when it already had the layout).

    As ``repartition``: create ``events_m3`` beside it, copy every row, swap by one RENAME, copy
    the rows writers added to the old table meanwhile (compared by (project, event_id, batch_id,
    received_at_ms)), check none is missing, drop the old table. The ``event_ids_mv`` view is
    bound to the table it reads, so it is dropped just before the swap and made again on the new
    table right after; the event_ids rows of events inserted in between are written again from
    ``events`` (duplicates collapse: same sorting key). On a cluster the local tables are moved ON
    CLUSTER and the Distributed ``events`` is made again with the column. A run cut short is finished
    by the next."""
    db = ident(ch.database)
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    local = local_table("events") if cluster else "events"
    new_local, old_local = f"{local}_m3", f"{local}_pre_m3"
    new_all, old_all = ("events_m3", "events_pre_m3") if cluster else (new_local, old_local)
    cols = ", ".join(_EVENTS_STORED)
    f = detect(ch)
    tables = _tables(ch)
    if local not in tables:
        return 0
    copied = 0
    if legacy_events(ch, cluster):
        for name in (new_all, new_local):
            ch.execute(f"DROP TABLE IF EXISTS {db}.{name}{on}")
        ch.execute(events_ddl(db, f, new_local, cluster=cluster))
        if cluster:
            ch.execute(f"CREATE TABLE IF NOT EXISTS {db}.{new_all}{on} (\n{_event_columns(f, 'ALIAS')}\n) "
                       f"ENGINE = Distributed({ident(cluster)}, {db}, {new_local}, {SHARDING_KEY})")
        ch.execute(f"INSERT INTO {db}.{new_all} ({cols}) SELECT {cols} FROM {db}.events")  # noqa: S608 -- identifiers via ident(), columns are constants
        copied = int(ch.execute(f"SELECT count() FROM {db}.{new_all}")[0][0])  # noqa: S608 -- identifiers via ident()
        view_dropped_ms = int(time.time() * 1000)
        ch.execute(f"DROP TABLE IF EXISTS {db}.event_ids_mv{on}")
        ch.execute(f"RENAME TABLE {db}.{local} TO {db}.{old_local}, {db}.{new_local} TO {db}.{local}{on}")
        ch.execute(event_ids_mv_ddl(db, cluster))
        if cluster:
            ch.execute(f"DROP TABLE IF EXISTS {db}.{new_all}{on}")
        tables = _tables(ch)
    else:
        view_dropped_ms = int(time.time() * 1000)  # a run cut short: the view may be missing
    if "event_ids_mv" not in tables:
        ch.execute(event_ids_mv_ddl(db, cluster))
    if cluster:
        have = {str(n) for (n,) in ch.execute("SELECT name FROM system.columns WHERE database = %(d)s "
                                              "AND table = 'events'", {"d": ch.database})}
        if "retention_days" not in have:
            # 18.16 refuses ALTER ... ON CLUSTER on a Distributed table (code 371): it holds no rows
            # (INSERTs are synchronous), so it is made again with the column; INSERTs in between fail
            # and are retried like any storage error.
            ch.execute(f"DROP TABLE IF EXISTS {db}.events{on}")
            ch.execute(distributed_ddl(db, "events", cluster, f))
    if old_local in tables:
        if cluster:
            ch.execute(f"CREATE TABLE IF NOT EXISTS {db}.{old_all}{on} (\n{_event_columns(f, 'ALIAS', True)}\n) "
                       f"ENGINE = Distributed({ident(cluster)}, {db}, {old_local}, {SHARDING_KEY})")
        _catch_up_and_drop(ch, db, "events", (old_local, old_all), on, cols, (_EVENTS_KEY, _EVENTS_KEY))
        since = view_dropped_ms - _VIEW_GAP_MARGIN_MS
        ids = "project, event_id, batch_id, received_at_ms, session_id"
        key = "concat(project, '|', event_id, '|', batch_id)"
        ch.execute(f"INSERT INTO {db}.event_ids ({ids}, keep_rank) SELECT {ids}, {_RANK_EXPR} "  # noqa: S608 -- identifiers via ident(), columns are constants
                   f"FROM {db}.events WHERE received_at_ms >= {int(since)} AND {key} NOT IN "
                   f"(SELECT {key} FROM {db}.event_ids WHERE received_at_ms >= {int(since)})")
    return copied


def unpartitioned(ch: ClickHouse, cluster: str = "") -> list[str]:
    """Tables made before ``session_batches`` and ``sessions`` were partitioned by time."""
    t = local_table if cluster else (lambda name: name)
    out = []
    for table in (t("session_batches"), t("sessions")):
        rows = ch.execute("SELECT engine_full FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                          {"d": ch.database, "t": table})
        if rows and "PARTITION BY" not in str(rows[0][0]):
            out.append(table)
    return out


def follow_ttls(ch: ClickHouse, cluster: str, dedup_window: int) -> list[str]:
    """Make ``event_ids``' TTL what DEDUP_WINDOW says now; returns the ALTERs run. (``events`` has
    no TTL since migration 3: the retention job drops its partitions on every engine.)

    ``CREATE TABLE IF NOT EXISTS`` fixes a TTL when the table is first made: a later
    DEDUP_WINDOW would otherwise never reach an existing table. Each
    start compares the TTL the server reports (``system.tables.engine_full``) with the wanted
    one and changes only what differs (the server then re-applies it to existing parts, once)."""
    db = ident(ch.database)
    t = local_table if cluster else (lambda name: name)
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    base = "toDateTime(intDiv(received_at_ms, 1000))"
    wanted = {t("event_ids"): (dedup_window + EVENT_IDS_MARGIN_S, "Second",
                               f"{base} + INTERVAL {int(dedup_window) + EVENT_IDS_MARGIN_S} SECOND")}
    done = []
    for table, (amount, unit, expr) in wanted.items():
        rows = ch.execute("SELECT engine_full FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                          {"d": ch.database, "t": table})
        if not rows:
            continue
        m = re.search(rf"\bTTL .*toInterval{unit}\((\d+)\)", str(rows[0][0]))
        have = int(m.group(1)) if m else 0
        if have == amount:
            continue
        if amount:
            sql = f"ALTER TABLE {db}.{ident(table)}{on} MODIFY TTL {expr}"
        else:
            sql = f"ALTER TABLE {db}.{ident(table)}{on} REMOVE TTL"
        ch.execute(sql)
        done.append(sql)
    return done

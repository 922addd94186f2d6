"""Move a single-node install's ClickHouse data (server or chDB) into a cluster, every row kept.

``scripts/clickhouse_to_cluster.py`` runs it; docs/SCALE-OUT.md "ClickHouse cluster" has the procedure
(the events, forward and maintenance workers are stopped meanwhile, the API keeps accepting).
Steps: create the cluster schema without ``event_ids_mv`` (a copied event would otherwise be
indexed twice: by the view and by the copy of ``event_ids``, which may hold fewer rows where
expired days were dropped), copy each table through its Distributed table in slices by
session hash, then run the migration (it adds the view) and compare, per table, ``count()`` and
``uniqExact`` of its key on both sides. The target must be empty: a partial earlier run is
dropped by the operator (``DROP DATABASE db ON CLUSTER c``), never merged into.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.storage.clickhouse import migrations as migrations
from app.storage.clickhouse.client import ident
from app.storage.clickhouse.queries import EVENT_COLUMNS, SESSION_ROW_COLUMNS

if TYPE_CHECKING:
    from app.storage.clickhouse.client import ClickHouse

# (table, columns copied, key counted with uniqExact). Computed columns are left to the target.
TABLES = (
    ("events", EVENT_COLUMNS, "project, event_id, batch_id"),
    ("event_ids", ("project", "event_id", "batch_id", "received_at_ms", "session_id", "keep_rank"),
     "project, event_id, batch_id"),
    ("session_batches", ("project", "session_id", "version", "batch_id", "events", "created_ms"),
     "project, session_id, version, batch_id"),
    ("sessions", SESSION_ROW_COLUMNS, "project, session_id, version"),  # with the delivery log
)
SLICE_ROWS = 200_000  # rows read and inserted at a time (memory of the copy, per slice)


@dataclass(frozen=True)
class TableReport:
    """Rows and distinct keys of one table on the single node and on the cluster."""

    table: str
    source_rows: int
    target_rows: int
    source_keys: int
    target_keys: int

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_keys == self.target_keys

    def line(self) -> str:
        return (f"{self.table}: rows {self.source_rows} -> {self.target_rows}, distinct keys "
                f"{self.source_keys} -> {self.target_keys} {'ok' if self.ok else 'MISMATCH'}")


def _counts(ch: ClickHouse, table: str, key: str) -> tuple[int, int]:
    rows, keys = ch.execute(f"SELECT count(), uniqExact({key}) FROM {ch.database}.{ident(table)}")[0]  # noqa: S608 -- identifiers via ident() and the client's validated database
    return int(rows), int(keys)


def _integer_columns(target: ClickHouse, table: str) -> set[str]:
    # chDB's JSON output quotes 64-bit integers; the native driver wants Python ints for them.
    rows = target.execute("SELECT name, type FROM system.columns WHERE database = %(db)s AND table = %(t)s",
                          {"db": target.database, "t": migrations.local_table(table)})
    return {str(n) for n, t in rows if "Int" in str(t)}


def _copy(source: ClickHouse, target: ClickHouse, table: str, columns: tuple[str, ...]) -> int:
    total = int(source.execute(f"SELECT count() FROM {source.database}.{ident(table)}")[0][0])  # noqa: S608 -- identifiers via ident() and the client's validated database
    slices = max(1, -(-total // SLICE_ROWS))
    ints = [i for i, c in enumerate(columns) if c in _integer_columns(target, table)]
    cols = ", ".join(ident(c) for c in columns)
    copied = 0
    for k in range(slices):
        rows = source.execute(f"SELECT {cols} FROM {source.database}.{ident(table)} "  # noqa: S608 -- identifiers via ident() and the client's validated database
                              f"WHERE modulo(cityHash64(project, session_id), {slices}) = {k}")
        rows = [tuple(int(v) if i in ints else v for i, v in enumerate(r)) for r in rows]
        # Distributed INSERT, synchronous (CLUSTER_SESSION_SETTINGS): on its shard when it returns.
        copied += target.insert(table, columns, rows, settings={"insert_distributed_sync": 1})
    return copied


def move(source: ClickHouse, target: ClickHouse, *, cluster: str, ttl_days: int = 90,
         dedup_window: int = 86400) -> list[TableReport]:
    """Copy every table of ``source`` (one node) into the cluster database of ``target``."""
    if target.kind != "server":
        raise RuntimeError("the target must be a ClickHouse server of the cluster")
    db = ident(target.database)
    features = migrations.detect(target)
    statements = migrations.ddl(db, features, ttl_days, ident(cluster), dedup_window)
    target.execute(statements[0])
    existing = {str(n) for (n,) in target.execute("SELECT name FROM system.tables WHERE database = %(db)s", {"db": db})}
    if "event_ids_mv" in existing or any(
            int(target.execute(f"SELECT count() FROM {db}.{t}")[0][0]) for t, _c, _k in TABLES if t in existing):  # noqa: S608 -- identifiers via ident() and the client's validated database
        raise RuntimeError(f"{db} on the cluster already has data or its views; drop it first "
                           f"(DROP DATABASE {db} ON CLUSTER {cluster}) and run the move again")
    for statement in statements[1:]:
        if " MATERIALIZED VIEW " not in statement:
            target.execute(statement)
    for table, columns, _key in TABLES:
        if table == "events" and not migrations.legacy_events(source):
            columns = (*columns, "retention_days")  # each row keeps its retention class
        _copy(source, target, table, columns)
    migrations.migrate(target, ttl_days, cluster, dedup_window)
    return [TableReport(table, *_pair(_counts(source, table, key), _counts(target, table, key)))
            for table, _columns, key in TABLES]


def _pair(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int, int, int]:
    return src[0], dst[0], src[1], dst[1]

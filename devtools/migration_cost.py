"""What ClickHouse migration 2 (session tables to their time partitioning) costs on a large table.

``python -m devtools.migration_cost [--rows 2000000] [--engine server|chdb]`` starts a private
ClickHouse 18.16 server (or opens a temporary chDB directory), builds ``session_batches`` and
``sessions`` without partitioning (the DDL of installs made before 7a6366f), fills each with
``--rows`` rows over 90 days, and times ``migrations.repartition`` per table
(docs/OPERATIONS.md#migrations has the figures).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from app.storage.clickhouse import client, migrations
from app.storage.clickhouse.queries import SESSION_COLUMNS
from devtools import servers

BATCH_COLUMNS = ("project", "session_id", "version", "batch_id", "events", "created_ms")
DAY = 86_400_000


def unpartitioned_ddl(db: str, f: migrations.Features, cluster: str = "") -> list[str]:
    """The schema of an install made before 7a6366f: ``session_batches`` and ``sessions`` without PARTITION BY
    (and ``events`` by month, as before migration 3)."""
    return [s.replace(f"PARTITION BY {migrations.SESSION_BATCHES_PARTITION}\n", "")
             .replace(f"PARTITION BY {migrations.SESSIONS_PARTITION}\n", "")
            for s in migrations.ddl(db, f, cluster=cluster, legacy=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--engine", choices=("server", "chdb"), default="server")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="migration-cost-"))
    svc = None
    if args.engine == "server":
        servers.ensure_clickhouse_server()
        svc = servers.start_clickhouse_server(tmp / "server")
        ch = client.get_clickhouse(svc.url.rsplit("/", 1)[0] + "/obs_move", timeout=600)
    else:
        ch = client.get_clickhouse(f"chdb://{tmp / 'chdb'}")
    try:
        db = ch.database
        for statement in unpartitioned_ddl(db, migrations.detect(ch)):
            ch.execute(statement)
        now, step = int(time.time() * 1000), 200_000
        for k in range(0, args.rows, step):
            ids = range(k, min(k + step, args.rows))
            ch.insert("session_batches", BATCH_COLUMNS,
                      [("p", f"s{i}", 1, f"b{i}", 3, now - (i % 90) * DAY) for i in ids])
            ch.insert("sessions", SESSION_COLUMNS,
                      [("p", f"s{i}", 1, now, now + 2, 2, 3, '{"click": 3}', "idle", now, now - (i % 90) * DAY,
                        f"p:s{i}:1", "delivered") for i in ids])
        for table in ("session_batches", "sessions"):
            ch.execute(f"OPTIMIZE TABLE {db}.{table}")
            size, rows = ch.execute("SELECT sum(bytes_on_disk), sum(rows) FROM system.parts WHERE database = %(d)s "
                                    "AND table = %(t)s AND active", {"d": db, "t": table})[0]
            print(f"{table}: {rows} rows, {int(size) / 1e6:.1f} MB on disk, unpartitioned")
        for table in ("session_batches", "sessions"):
            t0 = time.monotonic()
            copied = migrations.repartition(ch, table)
            took = time.monotonic() - t0
            count = ch.execute(f"SELECT count() FROM {db}.{table}")[0][0]  # noqa: S608 -- fixed identifiers
            parts = ch.execute("SELECT uniqExact(partition) FROM system.parts WHERE database = %(d)s "
                               "AND table = %(t)s AND active", {"d": db, "t": table})[0][0]
            print(f"repartition {table}: {copied} rows copied in {took:.1f} s ({copied / took:,.0f} rows/s); "
                  f"now {count} rows in {parts} partitions")
        print(f"engine: {ch.execute('SELECT version()')[0][0]}")
    finally:
        client.close_all()
        if svc is not None:
            svc.stop()


if __name__ == "__main__":
    main()

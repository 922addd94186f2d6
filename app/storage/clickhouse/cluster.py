"""ClickHouse as a cluster (``CLICKHOUSE_CLUSTER``): durable INSERT settings and the layout.

The schema (app/storage/clickhouse/migrations.py) puts a ``Distributed`` table under each
single-node name in front of replicated ``<name>_local`` tables, sharded by
``cityHash64(project, session_id)``, so every query and INSERT of the code reads the same.

An INSERT is acknowledged only once durable:
- ``insert_distributed_sync=1`` (sent with every query, app/storage/clickhouse/client.py): the
  Distributed INSERT returns once each shard wrote its rows into its replicated table, not once
  they were queued on the initiator's disk (the default, which acknowledges rows a crash of that
  one server would lose and which reads cannot see yet);
- ``insert_quorum`` (a majority of each shard's replicas) where the server can run quorum
  INSERTs in parallel (``insert_quorum_parallel``, ClickHouse 20.10+). 18.16 allows one quorum
  INSERT per table at a time: concurrent writers fail with code 286 ("Another quorum insert has
  been already started"), 74 of 80 INSERTs from four writers in the probe, so there the rows are
  acknowledged once on one replica's disk and replicated from ZooKeeper's log within ~0.1 s.
"""
from __future__ import annotations

import time

from app.storage.clickhouse import migrations as clickhouse_migrations
from app.storage.clickhouse.client import ClickHouse, ClickHouseError, ident

# Longest wait for the quorum's replicas, ms: under the client's timeout, so a slow replica is a
# transient error (the flush requeues; a redelivery finds the rows already written).
QUORUM_TIMEOUT_MS = 10_000


def replicas_per_shard(ch: ClickHouse, cluster: str) -> int:
    """The fewest replicas any shard of ``cluster`` has (from ``system.clusters``)."""
    rows = ch.execute("SELECT shard_num, count() FROM system.clusters WHERE cluster = %(c)s GROUP BY shard_num",
                      {"c": cluster})
    if not rows:
        # Raised from inside a flush: "transient" requeues and pauses (loudly) instead of
        # dead-lettering every batch while the server's config is being fixed.
        raise ClickHouseError(f"CLICKHOUSE_CLUSTER={cluster!r} is not in this server's <remote_servers>",
                              transient=True)
    return min(int(n) for _shard, n in rows)


def _has_setting(ch: ClickHouse, name: str) -> bool:
    return bool(ch.execute("SELECT count() FROM system.settings WHERE name = %(n)s", {"n": name})[0][0])


def insert_settings(ch: ClickHouse, cluster: str) -> dict | None:
    """The INSERT settings of the pipeline on this engine: acknowledged once durable on a cluster.

    Without a cluster, what the engine offers (``async_insert`` with ``wait_for_async_insert``
    where it exists, else None). With one, also ``insert_distributed_sync=1`` and, where quorum
    INSERTs run in parallel and shards have replicas, a majority quorum.
    """
    out: dict = {}
    if ch.kind == "server" and clickhouse_migrations.detect(ch).async_insert:
        # async_insert merges small INSERTs from many workers; wait_for_async_insert keeps "the
        # INSERT returned" meaning "the rows are written", which the ack relies on.
        out.update(async_insert=1, wait_for_async_insert=1)
    if cluster and ch.kind == "server":
        out["insert_distributed_sync"] = 1
        replicas = replicas_per_shard(ch, cluster)
        if replicas > 1 and _has_setting(ch, "insert_quorum_parallel"):
            out.update(insert_quorum=replicas // 2 + 1, insert_quorum_parallel=1,
                       insert_quorum_timeout=QUORUM_TIMEOUT_MS)
    return out or None


def drop_expired_event_ids(ch: ClickHouse, cluster: str, before_ms: int) -> list[str]:
    """events_repo.drop_expired_event_ids on a cluster: the daily ``event_ids_local`` partitions
    of every shard that end at or before ``before_ms`` are dropped ``ON CLUSTER``.

    The single-node function finds no parts on a cluster (``event_ids`` is the Distributed
    table there) and 18.16 has no TTL, so without this the dedup state outlives the window.
    """
    db = ident(ch.database)
    local = clickhouse_migrations.local_table("event_ids")
    cutoff_day = time.strftime("%Y%m%d", time.gmtime(int(before_ms) // 1000 - 86400))
    rows = ch.execute(f"SELECT DISTINCT partition FROM cluster({ident(cluster)}, system, parts) "  # noqa: S608 -- cluster name via ident(); values bound
                      "WHERE database = %(db)s AND table = %(t)s AND active", {"db": db, "t": local})
    old = sorted(str(p).strip("'") for (p,) in rows if str(p).strip("'").isdigit() and str(p).strip("'") <= cutoff_day)
    for day in old:
        ch.execute(f"ALTER TABLE {db}.{local} ON CLUSTER {ident(cluster)} DROP PARTITION {int(day)}")
    return old

"""ClickHouse schema, created by feature detection so it runs on 18.16 and on current servers.

Canonical time columns are ``ts_ms``/``received_at_ms`` (Int64 epoch milliseconds) on every
engine, so every query reads the same way and millisecond precision always survives. Where
the server has them, a ``DateTime64(3)`` column, ``LowCardinality`` and ``TTL`` are added;
on 18.16 the column is a second-precision ``DateTime`` and there is no TTL.
Tables are ReplacingMergeTree keyed by their natural identity, so a row inserted twice
collapses; reads use ``FINAL`` or group by the key, so a duplicate never counts twice.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.storage.clickhouse import ident


@dataclass(frozen=True)
class Features:
    """What the connected engine supports."""

    version: str
    datetime64: bool
    low_cardinality: bool
    ttl: bool
    async_insert: bool


def _probe(ch, sql: str) -> bool:
    try:
        ch.execute(sql)
        return True
    except Exception:  # an unsupported function or syntax is the answer we are probing for
        return False


def detect(ch) -> Features:
    """Probe the engine for the features the schema can use."""
    version = ch.execute("SELECT version()")[0][0]
    dt64 = _probe(ch, "SELECT toDateTime64('2020-01-01 00:00:00.123', 3)")
    async_insert = bool(ch.execute("SELECT count() FROM system.settings WHERE name = 'async_insert'")[0][0])
    # TTL and stable LowCardinality arrived together with DateTime64 (19.x/20.x); 18.16 has
    # LowCardinality only behind an experimental flag, which we do not rely on.
    return Features(version=version, datetime64=dt64, low_cardinality=dt64, ttl=dt64, async_insert=async_insert)


def ddl(db: str, f: Features, ttl_days: int = 90, cluster: str = "") -> list[str]:
    """The CREATE statements for ``db`` on an engine with features ``f``."""
    db = ident(db)
    on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
    lc = "LowCardinality(String)" if f.low_cardinality else "String"
    if f.datetime64:
        ts_col = "DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(ts_ms, 'UTC')"
    else:
        ts_col = "DateTime MATERIALIZED toDateTime(intDiv(ts_ms, 1000), 'UTC')"
    ttl = f"\nTTL toDateTime(intDiv(received_at_ms, 1000)) + INTERVAL {int(ttl_days)} DAY" if (f.ttl and ttl_days) else ""

    def engine(table: str, version_col: str = "") -> str:
        if cluster:
            path = f"'/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}'"
            args = f"{path}, {version_col}" if version_col else path
            return f"ReplicatedReplacingMergeTree({args})"
        return f"ReplacingMergeTree({version_col})"

    return [
        f"CREATE DATABASE IF NOT EXISTS {db}{on}",
        f"""CREATE TABLE IF NOT EXISTS {db}.events{on} (
    project {lc},
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
    batch_id String
) ENGINE = {engine('events')}
PARTITION BY toYYYYMM(toDateTime(intDiv(ts_ms, 1000), 'UTC'))
ORDER BY (project, session_id, event_id){ttl}""",
        f"""CREATE TABLE IF NOT EXISTS {db}.session_batches{on} (
    project String,
    session_id String,
    version UInt32,
    batch_id String,
    events UInt32,
    created_ms Int64
) ENGINE = {engine('session_batches')}
ORDER BY (project, session_id, version, batch_id)""",
        f"""CREATE TABLE IF NOT EXISTS {db}.sessions{on} (
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
) ENGINE = {engine('sessions', 'forwarded_at_ms')}
ORDER BY (project, session_id, version)""",
    ]


def migrate(ch, ttl_days: int = 90, cluster: str = "") -> Features:
    """Create the database and tables (idempotent); returns the detected features."""
    features = detect(ch)
    for statement in ddl(ch.database, features, ttl_days, cluster):
        ch.execute(statement)
    return features

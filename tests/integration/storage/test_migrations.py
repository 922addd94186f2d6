"""Versioned migrations (issue 20, acceptance 3) on real servers: PostgreSQL, ClickHouse 18.16,
chDB and the ZooKeeper + 18.16 cluster.

From empty, and from the schema of the landed ``main`` with data in it (made by the pre-change
DDL: the partitioned layout of 7a6366f, and the unpartitioned ``session_batches``/``sessions`` of
the installs made before it), run twice: the second run applies nothing and changes nothing,
every row is kept (count and content). Two release steps at once: one applies, the other waits
for the lock and finds nothing pending.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from app.settings import load_settings
from app.storage import schema
from app.storage.clickhouse import client, migrations
from app.storage.clickhouse.queries import EVENT_COLUMNS, SESSION_COLUMNS, insert_events
from app.storage.postgres import SCHEMA as LANDED_PG_SCHEMA
from devtools.cost import unpartitioned_ddl
from devtools.wait import until

BIN = Path(sys.executable).parent
NOW = int(time.time() * 1000)
DAY = 86_400_000
BATCH_COLUMNS = ("project", "session_id", "version", "batch_id", "events", "created_ms")
CLUSTER = "observer"
ALL_VERSIONS = [m.version for m in migrations.MIGRATIONS]
PG_VERSIONS = [m.version for m in schema.POSTGRES]


# ------------------------------------------------------------------ the landed schemas
def _landed(ch, cluster: str = "", partitioned: bool = True) -> None:
    """The ClickHouse schema the landed main made (``partitioned``), or the one of the installs made
    before 7a6366f (``session_batches``/``sessions`` without PARTITION BY), by that version's DDL
    (``events`` by month, without ``retention_days``: before migration 3)."""
    f = migrations.detect(ch)
    statements = (migrations.ddl(ch.database, f, cluster=cluster, legacy=True) if partitioned
                  else unpartitioned_ddl(ch.database, f, cluster))
    for statement in statements:
        ch.execute(statement)


def _fill(ch, n_sessions: int = 300, settings=None) -> None:
    """Rows in every table, over 40 days: distinct keys (no merge may collapse two of them)."""
    events, batches, sessions = [], [], []
    for i in range(n_sessions):
        t = NOW - (i % 40) * DAY
        sid = f"s{i}"
        for j in range(3):
            events.append(("p", sid, str(uuid.UUID(int=i * 10 + j)), "click", t + j, t + j, f"https://x.test/{j}", "",
                           "", f'{{"i": {i}}}', f"r{i}", f"b{i}"))
        batches.append(("p", sid, 1, f"b{i}", 3, t))
        sessions.append(("p", sid, 1, t, t + 2, 2, 3, '{"click": 3}', "idle", t + 10, t + 20, f"p:{sid}:1",
                         "delivered"))
    ch.insert("events", EVENT_COLUMNS, events, settings=settings)
    ch.insert("session_batches", BATCH_COLUMNS, batches, settings=settings)
    ch.insert("sessions", SESSION_COLUMNS, sessions, settings=settings)


def _content(ch) -> dict[str, list[tuple]]:
    db = ch.database
    out = {}
    for table, cols in (("events", EVENT_COLUMNS), ("session_batches", BATCH_COLUMNS), ("sessions", SESSION_COLUMNS)):
        c = ", ".join(cols)
        out[table] = sorted(tuple(str(v) for v in r) for r in ch.execute(f"SELECT {c} FROM {db}.{table}"))  # noqa: S608
    # event_ids rows live the dedup window (+1 h): where the engine has TTL (chDB) a merge may drop
    # the older ones at any time (migration 3's inserts into event_ids start merges), so only the
    # last day's are compared
    out["event_ids"] = sorted(tuple(str(v) for v in r) for r in ch.execute(
        f"SELECT project, event_id, batch_id FROM {db}.event_ids WHERE received_at_ms >= {NOW - DAY}"))  # noqa: S608
    return out


def _tables(ch) -> list[tuple[str, str]]:
    """Every table's name and CREATE statement (what a second run must leave as it was)."""
    return sorted((str(n), str(q)) for n, q in ch.execute(
        "SELECT name, create_table_query FROM system.tables WHERE database = %(d)s", {"d": ch.database}))


def _recorded(ch) -> list[int]:
    return [int(v) for (v,) in ch.execute(f"SELECT version FROM {ch.database}.schema_migrations ORDER BY version")]  # noqa: S608


def _partition_keys(ch, cluster: str = "") -> dict[str, str]:
    t = migrations.local_table if cluster else (lambda name: name)
    rows = ch.execute("SELECT name, partition_key FROM system.tables WHERE database = %(d)s AND name IN %(t)s",
                      {"d": ch.database, "t": (t("session_batches"), t("sessions"), t("events"))})
    return {str(n): str(k) for n, k in rows}


def _fresh_ch(clickhouse_url: str):
    return client.get_clickhouse(clickhouse_url)


def _drop(ch) -> None:
    if ch.kind == "server":
        ch.execute(f"DROP DATABASE IF EXISTS {ch.database}")
    client.close_all()


def _view_feeds_event_ids(ch, settings=None) -> None:
    """After the move the view reads the new ``events``: a new batch's ids are in event_ids, with its class."""
    ids = [str(uuid.uuid4()) for _ in range(3)]
    batch = {"project": "p", "batch_id": "b-after", "received_at": NOW, "request_id": "r", "retention_days": 7,
             "events": [{"session_id": "after", "event_id": e, "type": "click", "ts_ms": NOW, "url": "u", "name": "",
                         "anonymous_id": "", "metadata": "{}"} for e in ids]}
    insert_events(ch, [batch], settings=settings)
    db = ch.database
    assert int(ch.execute(f"SELECT count() FROM {db}.event_ids WHERE batch_id = 'b-after'")[0][0]) == 3  # noqa: S608
    assert int(ch.execute(f"SELECT min(retention_days) FROM {db}.events WHERE batch_id = 'b-after'")[0][0]) == 7  # noqa: S608


# ------------------------------------------------------------------ ClickHouse: one node, both engines
def test_clickhouse_from_empty_twice(clickhouse_url):
    ch = _fresh_ch(clickhouse_url)
    try:
        _f, first = migrations.apply(ch)
        assert [m.version for m in first] == ALL_VERSIONS
        assert _recorded(ch) == ALL_VERSIONS
        assert migrations.unpartitioned(ch) == []
        _fill(ch, 50)
        before, tables = _content(ch), _tables(ch)
        _f, second = migrations.apply(ch)
        assert second == [], "the second run applies nothing"
        assert _recorded(ch) == ALL_VERSIONS, "each migration recorded once"
        assert _tables(ch) == tables and _content(ch) == before
    finally:
        _drop(ch)


@pytest.mark.parametrize("partitioned", [False, True], ids=["before-7a6366f", "landed-main"])
def test_clickhouse_from_the_landed_schema_with_data_twice(clickhouse_url, partitioned):
    """The landed main's tables (no version table), full of rows: migration 1 is a no-op,
    migration 2 moves unpartitioned session tables (every row kept, content equal), and the
    second run changes nothing."""
    ch = _fresh_ch(clickhouse_url)
    try:
        _landed(ch, partitioned=partitioned)
        assert bool(migrations.unpartitioned(ch)) is not partitioned
        _fill(ch, 2000)
        before = _content(ch)
        assert len(before["session_batches"]) == 2000 and len(before["events"]) == 6000
        _f, first = migrations.apply(ch)
        assert [m.version for m in first] == ALL_VERSIONS
        assert migrations.unpartitioned(ch) == []
        keys = _partition_keys(ch)
        assert "toYYYYMMDD" in keys["session_batches"] and "toYYYYMM" in keys["sessions"], keys
        assert keys["events"].startswith("(retention_days, toYYYYMMDD"), keys  # migration 3
        assert _content(ch) == before, "every row kept, column for column"
        assert not [n for n, _q in _tables(ch) if n.endswith(("_m2", "_pre_m2", "_m3", "_pre_m3"))], "none left behind"
        _view_feeds_event_ids(ch)
        before = _content(ch)
        parts = ch.execute("SELECT uniqExact(partition) FROM system.parts WHERE database = %(d)s "
                           "AND table = 'session_batches' AND active", {"d": ch.database})[0][0]
        assert int(parts) == 40, "one partition per day of the 40"
        tables = _tables(ch)
        _f, second = migrations.apply(ch)
        assert second == [] and _recorded(ch) == ALL_VERSIONS
        assert _tables(ch) == tables and _content(ch) == before
    finally:
        _drop(ch)


def test_the_move_catches_up_rows_written_to_the_old_table(clickhouse_url):
    """A writer's INSERT that landed in the old table between the copy and the swap (or a run cut
    short after the swap): the next run copies the missing rows over and drops the old table."""
    ch = _fresh_ch(clickhouse_url)
    try:
        _landed(ch, partitioned=False)
        _fill(ch, 100)
        before = _content(ch)
        db = ch.database
        # the state right after the swap: the new table holds the copy, the old one a late row too
        ch.execute(migrations.session_batches_ddl(db, "session_batches_m2"))
        cols = ", ".join(BATCH_COLUMNS)
        ch.execute(f"INSERT INTO {db}.session_batches_m2 ({cols}) SELECT {cols} FROM {db}.session_batches")  # noqa: S608
        late = ("p", "late", 1, "b-late", 1, NOW)
        ch.insert("session_batches", BATCH_COLUMNS, [late])
        ch.execute(f"RENAME TABLE {db}.session_batches TO {db}.session_batches_pre_m2, "
                   f"{db}.session_batches_m2 TO {db}.session_batches")
        assert migrations.repartition(ch, "session_batches") == 0  # nothing left to copy whole
        after = _content(ch)
        assert after["session_batches"] == sorted(before["session_batches"] + [tuple(map(str, late))])
        assert "session_batches_pre_m2" not in {n for n, _q in _tables(ch)}
    finally:
        _drop(ch)


def test_the_events_move_catches_up_rows_written_to_the_old_table(clickhouse_url):
    """Migration 3 cut short right after its swap, a writer's row in the old ``events`` and the view
    gone: the next run copies the row over, makes the view again and gives the row its event_ids."""
    ch = _fresh_ch(clickhouse_url)
    try:
        _landed(ch)
        _fill(ch, 100)
        db = ch.database
        ch.execute(migrations.events_ddl(db, migrations.detect(ch), "events_m3"))
        cols = ", ".join(EVENT_COLUMNS)
        ch.execute(f"INSERT INTO {db}.events_m3 ({cols}) SELECT {cols} FROM {db}.events")  # noqa: S608
        ch.execute(f"DROP TABLE {db}.event_ids_mv")
        late = ("p", "late", str(uuid.uuid4()), "click", NOW, NOW, "u", "", "", "{}", "r", "b-late")
        ch.insert("events", EVENT_COLUMNS, [late])
        ch.execute(f"RENAME TABLE {db}.events TO {db}.events_pre_m3, {db}.events_m3 TO {db}.events")
        before = _content(ch)
        assert ("p", late[2], "b-late") not in before["event_ids"]
        assert migrations.move_events(ch) == 0  # nothing left to copy whole
        after = _content(ch)
        assert after["events"] == sorted(before["events"] + [tuple(map(str, late))])
        # (event_ids older than the dedup window may leave meanwhile: chDB's TTL merges)
        assert after["event_ids"].count(("p", late[2], "b-late")) == 1
        assert "events_pre_m3" not in {n for n, _q in _tables(ch)}
        _view_feeds_event_ids(ch)
    finally:
        _drop(ch)


# ------------------------------------------------------------------ ClickHouse: the cluster layout
@pytest.mark.xdist_group("client-cluster")
@pytest.mark.parametrize("layout", [(2, 1), (1, 2)], ids=["2shards", "2replicas"])
def test_cluster_from_the_landed_schema_with_data_twice(clickhouse_clusters, layout):
    topology = clickhouse_clusters(*layout)
    db = f"obs_m_{uuid.uuid4().hex[:10]}"
    ch = client.get_clickhouse(topology.url(db))
    try:
        _landed(ch, cluster=CLUSTER, partitioned=False)
        assert migrations.unpartitioned(ch, CLUSTER) == ["session_batches_local", "sessions_local"]
        _fill(ch, 500, settings={"insert_distributed_sync": 1})
        before = _content(ch)
        _f, first = migrations.apply(ch, cluster=CLUSTER)
        assert [m.version for m in first] == ALL_VERSIONS
        assert _content(ch) == before, "every row kept, column for column"
        _view_feeds_event_ids(ch, settings={"insert_distributed_sync": 1})
        before = _content(ch)
        nodes = [client.get_clickhouse(n.url.rsplit("/", 1)[0] + "/" + db) for n in topology.nodes]
        for node in nodes:  # ON CLUSTER: every server's local tables moved, its record replicated
            assert migrations.unpartitioned(node, CLUSTER) == [], node
            assert "toYYYYMMDD" in _partition_keys(node, CLUSTER)["session_batches_local"]
            assert not migrations.legacy_events(node, CLUSTER), node
            until(lambda node=node: _recorded(node) == ALL_VERSIONS, timeout=20, what="the record on every server")
            assert not [n for n, _q in _tables(node) if n.endswith(("_m2", "_pre_m2", "_m3", "_pre_m3"))]
        local_rows = sum(int(n.execute(f"SELECT count() FROM {db}.session_batches_local")[0][0])  # noqa: S608
                         for n in nodes)
        assert local_rows == 500 * topology.replicas, "each row on one shard, on each of its replicas"
        tables = [_tables(n) for n in nodes]
        _f, second = migrations.apply(ch, cluster=CLUSTER)
        assert second == []
        assert [_tables(n) for n in nodes] == tables and _content(ch) == before
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {db} ON CLUSTER {CLUSTER}")
        client.close_all()


# ------------------------------------------------------------------ PostgreSQL
@pytest.fixture
def fresh_pg(pg_server):
    """A URL whose search_path is a new, empty schema."""
    name = f"obs_mig_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(pg_server)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in pg_server else "?"
    yield f"{pg_server}{sep}options=-csearch_path%3D{name}"
    from app.storage import postgres

    postgres.close_pools()
    conn.cursor().execute(f'DROP SCHEMA "{name}" CASCADE')
    conn.close()


def _pg(url: str, sql: str, params=()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def _pg_rows(url: str) -> dict[str, list[tuple]]:
    # the landed columns (later migrations may add some, e.g. projects.retention_days)
    cols = {"projects": "name, created_at", "api_keys": "*", "dead_letters": "*"}
    return {t: _pg(url, f"SELECT {c} FROM {t} ORDER BY 1") for t, c in cols.items()}  # noqa: S608


def test_postgres_from_empty_twice(fresh_pg):
    assert [m.version for m in schema.migrate_postgres(fresh_pg)] == PG_VERSIONS
    assert schema.migrate_postgres(fresh_pg) == []
    assert _pg(fresh_pg, "SELECT version, name FROM schema_migrations ORDER BY 1") == [
        (m.version, m.name) for m in schema.POSTGRES]


def test_postgres_from_the_landed_schema_with_data_twice(fresh_pg):
    _pg(fresh_pg, LANDED_PG_SCHEMA)  # what the landed main's migrate made (no version table)
    _pg(fresh_pg, "INSERT INTO projects (name) VALUES ('p')")
    _pg(fresh_pg, "INSERT INTO api_keys (project, prefix, key_hash) VALUES ('p', 'obs_x', '\\x01')")
    _pg(fresh_pg, "INSERT INTO dead_letters (kind, ref, payload, error) VALUES ('poison_batch', 'b', '{}', 'e')")
    before = _pg_rows(fresh_pg)
    assert [m.version for m in schema.migrate_postgres(fresh_pg)] == PG_VERSIONS
    assert _pg_rows(fresh_pg) == before
    assert schema.migrate_postgres(fresh_pg) == []
    assert _pg_rows(fresh_pg) == before
    assert _pg(fresh_pg, "SELECT count(*) FROM schema_migrations") == [(len(PG_VERSIONS),)]


# ------------------------------------------------------------------ two release steps at once
def test_two_release_steps_at_once_apply_each_migration_once(fresh_pg, clickhouse_server):
    """Both start while a third migrator holds the release lock: both say they wait; once it is
    released one applies everything and the other finds nothing pending."""
    db = f"obs_m_{uuid.uuid4().hex[:10]}"
    settings = load_settings(environ={}, overrides={"DATABASE_URL": fresh_pg,
                                                    "CLICKHOUSE_URL": f"{clickhouse_server}/{db}"})
    reports, waits, errors = [], [], []

    def release_step() -> None:
        try:
            reports.append(schema.migrate_all(settings, on_wait=waits.append))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    try:
        with schema.release_lock(fresh_pg):
            steps = [threading.Thread(target=release_step) for _ in range(2)]
            for t in steps:
                t.start()
            until(lambda: len(waits) == 2, timeout=30, what="both release steps waiting for the lock")
        for t in steps:
            t.join(timeout=120)
        assert not errors, errors
        applied = sorted(([v for v, _n in r.postgres], [v for v, _n in r.clickhouse or []]) for r in reports)
        assert applied == [([], []), (PG_VERSIONS, ALL_VERSIONS)], applied
        assert _pg(fresh_pg, "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY 1") == [
            (v, 1) for v in PG_VERSIONS]
        ch = client.get_clickhouse(settings.clickhouse_url)
        assert _recorded(ch) == ALL_VERSIONS
        assert "waiting" in waits[0]
    finally:
        client.get_clickhouse(settings.clickhouse_url).execute(f"DROP DATABASE IF EXISTS {db}")
        client.close_all()


def test_flask_migrate_prints_what_it_applied_then_up_to_date(fresh_pg, clickhouse_server, tmp_path):
    db = f"obs_m_{uuid.uuid4().hex[:10]}"
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "OBSERVER_ENV_FILE": str(tmp_path / "none.env"),
           "DATABASE_URL": fresh_pg, "CLICKHOUSE_URL": f"{clickhouse_server}/{db}"}
    (tmp_path / "none.env").write_text("")

    def flask(*args: str) -> str:
        out = subprocess.run([str(BIN / "flask"), "--app", "app", "migrate", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    try:
        status = flask("--status")
        assert "postgres\t1\tcurrent schema\tpending" in status
        assert "clickhouse\t2\tpartition session_batches and sessions by time\tpending" in status
        first = flask()
        assert "postgres: applied 1 current schema" in first
        assert "clickhouse: applied 2 partition session_batches and sessions by time" in first
        second = flask()
        assert "postgres: up to date" in second and "clickhouse: up to date" in second
        status = flask("--status")
        assert "pending" not in status, status
        assert status.count("\tapplied ") == len(schema.POSTGRES) + len(ALL_VERSIONS), status
    finally:
        client.get_clickhouse(f"{clickhouse_server}/{db}").execute(f"DROP DATABASE IF EXISTS {db}")
        client.close_all()

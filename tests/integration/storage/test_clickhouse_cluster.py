"""ClickHouse as a cluster (CLICKHOUSE_CLUSTER) on the real topology the toolkit starts.

ZooKeeper 3.8 and Debian's client-server 18.16 as two shards of one replica and as one
shard of two replicas (devtools/servers/clickhouse_cluster.py), all on 127.0.0.1. The pipeline's
plain functions (persist_batches, count_batches, claim, prepare) run against a single 18.16
node and against the cluster, with the cluster's INSERT settings, and must read back the same.
"""
from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
import redis as redis_lib

from app.events import flush as flush_mod
from app.events.persist import persist_batches, session_summary
from app.forwarding import prepare as service
from app.sessions.counting import apply_summary, count_batches
from app.sessions.store import SessionStore
from app.settings import load_settings
from app.storage.clickhouse import client, cluster, cluster_move, migrations, queries

# xdist_group: the session's ZooKeeper + ClickHouse clusters, started once, in one process.
pytestmark = pytest.mark.xdist_group("client-cluster")

S = load_settings()
CLUSTER = "observer"
IDLE_MS = S.session_idle_timeout * 1000
BASE = int(time.time() * 1000) - 2 * 3_600_000  # receive times two hours ago: claims pass no clock
LOCAL = [migrations.local_table(t) for t in migrations.DISTRIBUTED_TABLES]


def _db() -> str:
    return f"obs_c_{uuid.uuid4().hex[:10]}"


def _node_ch(topology, db: str, shard: int = 1, replica: int = 1):
    return client.get_clickhouse(topology.url(db, shard, replica))


def _migrated(topology, db: str):
    ch = _node_ch(topology, db)
    migrations.migrate(ch, cluster=CLUSTER)
    return ch


@pytest.fixture(params=[(2, 1), (1, 2)], ids=["2shards", "2replicas"])
def topology(request, clickhouse_clusters):
    yield clickhouse_clusters(*request.param)
    client.close_all()


def _batch(event_ids, sid, received, project="p1", kind="click"):
    events = [{"event_id": e, "type": kind, "ts_ms": received - 1000 + i, "session_id": sid,
               "url": f"https://x.test/{i % 3}", "name": "", "anonymous_id": "", "metadata": json.dumps({"i": i})}
              for i, e in enumerate(event_ids)]
    canon = json.dumps([project, events, received], sort_keys=True)
    return {"batch_id": uuid.uuid5(uuid.NAMESPACE_URL, canon).hex, "project": project,
            "request_id": f"req-{received}", "received_at": received, "events": events}


class Side:
    """One ClickHouse (single node or cluster) with its own session state, driven like the workers."""

    def __init__(self, ch, redis_url: str, prefix: str, settings: dict | None):
        self.ch, self.settings = ch, settings
        self.r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        self.store = SessionStore(self.r, prefix=prefix, idle_s=S.session_idle_timeout,
                                  max_s=S.session_max_duration, marker_ttl_s=S.batch_marker_ttl)
        self.claimed: list = []

    def ingest(self, *batches):
        """One events flush: persist, then the session step (a deep copy: each side gets the message)."""
        batches = copy.deepcopy(list(batches))
        persist_batches(self.ch, batches, insert_settings=self.settings,
                        dedup_window=S.dedup_window)
        count_batches(self.store, self.ch, batches, self.settings)

    def claim(self, at_ms: int):
        self.store.note_lag(0)
        self.claimed += self.store.claim_due(at_ms=at_ms)

    def read_back(self) -> dict:
        """What every read of the code answers: forward payloads, the dedup view, FINAL, lookups."""
        db, ch = self.ch.database, self.ch
        payloads = {}
        for c in self.claimed:
            snap = self.store.snapshot(c.project, c.session_id, c.version)
            prepared = service.prepare(ch, snap, project=c.project, session_id=c.session_id, version=c.version,
                                       settings=S)
            payloads[prepared.webhook_id] = prepared.payload
        sids = sorted({c.session_id for c in self.claimed})

        def q(sql):  # as text: chDB's JSON gives 64-bit integers as strings
            return [tuple(str(v) for v in row) for row in ch.execute(sql)]
        return {
            "payloads": payloads,
            "dedup": q(f"SELECT project, event_id, session_id, batch_id, type, ts_ms, received_at_ms, "
                       f"toUnixTimestamp(timestamp) FROM {db}.events_dedup ORDER BY project, event_id"),
            "final": q(f"SELECT project, session_id, event_id, batch_id, received_at_ms FROM {db}.events FINAL "
                       "ORDER BY project, session_id, event_id, batch_id"),
            "uniq": q(f"SELECT project, uniqExact(event_id) FROM {db}.events GROUP BY project ORDER BY project"),
            "batches": q(f"SELECT project, session_id, version, batch_id, events FROM {db}.session_batches FINAL "
                         "ORDER BY project, session_id, version, batch_id"),
            "versions": queries.max_versions(ch, [("p1", s) for s in sids] + [("p2", s) for s in sids]),
            "counted": queries.counted_versions(ch, [(r[0], r[1], r[3]) for r in q(
                f"SELECT project, session_id, version, batch_id FROM {db}.session_batches")]),
            "visible": [queries.count_session_batches(ch, c.project, c.session_id, c.version)
                        for c in self.claimed],
            "elsewhere": [sorted(queries.owned_elsewhere(ch, c.project, c.session_id, c.version))
                          for c in self.claimed],
            "unrecorded": queries.unrecorded_versions(ch, since_ms=0, quiet_before_ms=BASE + 10 * IDLE_MS,
                                                          limit=100),
            "sessions": q(f"SELECT project, session_id, version, event_count, counts FROM {db}.sessions FINAL "
                          "ORDER BY project, session_id, version"),
        }


def _scenario(sides, n_sessions: int):
    """The exactly-once cases on many sessions (spread over the shards), fed to every side alike."""
    ids = [str(uuid.uuid4()) for _ in range(n_sessions * 30)]
    for k in range(n_sessions):
        sid, project, e = f"s{k:02d}", ("p1", "p2")[k % 2], ids[k * 30:(k + 1) * 30]  # fixed: a fixed shard each
        b1, b2 = _batch(e[0:7], sid, BASE, project), _batch(e[4:11], sid, BASE + 5_000, project)  # an SDK resend
        whole = _batch(e[11:21], sid, BASE + 7_000, project)
        part = _batch(e[11:15] + e[21:22], sid, BASE + 6_000, project)  # a re-cut after a 413, received first
        late = _batch(e[9:11] + e[22:26], sid, BASE + 10_000 + IDLE_MS + 60_000, project)  # next version
        race_a = _batch(e[26:28], sid, BASE + 8_000, project)
        race_b = _batch(e[27:30], sid, late["received_at"] + 1, project)
        for side in sides:
            side.ingest(b1)
            side.ingest(b2, whole, part)
            side.ingest(b1)  # a redelivery: finds its rows, writes and counts nothing
            # two flushes that both looked before either wrote: both copies of e[27] are stored
            # (the later receipt first); e[27] belongs to version 1, and version 2 leaves it out
            queries.insert_events(side.ch, [race_b], settings=side.settings)
            queries.insert_events(side.ch, [race_a], settings=side.settings)
            apply_summary(side.store, side.ch, session_summary(race_a), side.settings)
            side.claim(BASE + 10_000 + IDLE_MS)
            side.ingest(late)
            apply_summary(side.store, side.ch, session_summary(race_b), side.settings)
    for side in sides:
        side.claim(BASE + 20_000 + 2 * IDLE_MS + 120_000)
        rows = [service.session_row(service.prepare(side.ch, side.store.snapshot(c.project, c.session_id, c.version),
                                                    project=c.project, session_id=c.session_id, version=c.version,
                                                    settings=S), "delivered")
                for c in side.claimed if c.session_id != "s00"]  # s00's versions stay unrecorded
        for row in rows:
            row[10] = 1  # forwarded_at_ms: the clock of the write, the same on both sides
        queries.insert_session_rows(side.ch, rows, settings=side.settings)


def _sync_replicas(topology, db: str) -> None:
    """Wait until every replica fetched what the others wrote (SYSTEM SYNC REPLICA, bounded by the server)."""
    for node in topology.nodes:
        ch = client.get_clickhouse(node.url.rsplit("/", 1)[0] + "/" + db)
        for table in LOCAL:
            ch.execute(f"SYSTEM SYNC REPLICA {db}.{table}")


def _snapshot(topology, db: str) -> dict:
    """Every server's create statements and row counts of ``db`` (local and Distributed tables)."""
    _sync_replicas(topology, db)
    out = {}
    for node in topology.nodes:
        ch = client.get_clickhouse(node.url.rsplit("/", 1)[0] + "/" + db)
        tables = ch.execute("SELECT name, engine, create_table_query FROM system.tables WHERE database = %(db)s "
                            "ORDER BY name", {"db": db})
        counts = {t: ch.execute(f"SELECT count() FROM {db}.{t}")[0][0]
                  for t in LOCAL + list(migrations.DISTRIBUTED_TABLES)}
        replicas = ch.execute("SELECT table, zookeeper_path, replica_name FROM system.replicas WHERE database = %(db)s "
                              "ORDER BY table", {"db": db})
        out[node.name] = {"tables": tables, "counts": counts, "replicas": replicas}
    return out


def test_migrations_twice_change_nothing(topology, redis_url):
    db = _db()
    ch = _migrated(topology, db)
    side = Side(ch, redis_url, "m:", cluster.insert_settings(ch, CLUSTER))
    _scenario([side], n_sessions=2)
    before = _snapshot(topology, db)
    t0 = time.monotonic()
    migrations.migrate(ch, cluster=CLUSTER)
    second = time.monotonic() - t0
    after = _snapshot(topology, db)
    for name, snap in after.items():
        print(f"{name}: {len(snap['tables'])} tables, rows {snap['counts']}")
    print(f"second migration: {second:.2f} s, identical create statements and row counts on "
          f"{len(after)} servers: {before == after}")
    assert before == after
    names = [t[0] for t in after[topology.nodes[0].name]["tables"]]
    assert names == sorted(["events", "events_local", "event_ids", "event_ids_local", "event_ids_mv", "events_dedup",
                            "schema_migrations",
                            "session_batches", "session_batches_local", "sessions", "sessions_local"])
    assert all(s["tables"] == after[topology.nodes[0].name]["tables"] for s in after.values())  # ON CLUSTER
    engines = dict((t[0], t[1]) for t in after[topology.nodes[0].name]["tables"])
    assert {engines[t] for t in LOCAL} == {"ReplicatedReplacingMergeTree"}
    assert {engines[t] for t in migrations.DISTRIBUTED_TABLES} == {"Distributed"}
    keys = dict((t[0], t[2]) for t in after[topology.nodes[0].name]["tables"])
    assert "cityHash64(project, session_id)" in keys["events"]
    assert after[topology.nodes[0].name]["counts"]["events"] > 0
    with pytest.raises(RuntimeError, match="set CLICKHOUSE_CLUSTER"):
        migrations.migrate(ch)  # the setting forgotten: nothing is touched
    assert _snapshot(topology, db) == after


def test_single_node_tables_are_not_migrated_in_place(clickhouse_clusters):
    """CLICKHOUSE_CLUSTER set on a database that holds the single-node tables: refused (moved instead)."""
    topology = clickhouse_clusters(2, 1)
    ch = _node_ch(topology, _db())
    migrations.migrate(ch)
    with pytest.raises(RuntimeError, match="clickhouse_to_cluster"):
        migrations.migrate(ch, cluster=CLUSTER)


@pytest.mark.parametrize("source_kind", ["server", "chdb"])
def test_single_node_install_moves_to_the_cluster_with_every_row(source_kind, clickhouse_clusters, clickhouse_server,
                                                                tmp_path, redis_url):
    topology = clickhouse_clusters(2, 1)
    src_url = f"{clickhouse_server}/{_db()}" if source_kind == "server" else f"chdb://{tmp_path / 'chdb'}"
    source = client.get_clickhouse(src_url)
    migrations.migrate(source)
    side = Side(source, redis_url, "mv:", None)
    _scenario([side], n_sessions=3)
    raw = _batch([str(uuid.uuid4()) for _ in range(3)], "dup-session", BASE)
    # A background merge may collapse the duplicate below before the move reads it (it did once
    # under a loaded make test): the scenario needs it kept as a row.
    source.execute(f"SYSTEM STOP MERGES {source.database}.events")
    queries.insert_events(source, [raw])
    queries.insert_events(source, [raw])  # a raw duplicate (a marker-less redelivery): kept as a row
    log = [{"at_ms": BASE + 5, "attempt": 1, "outcome": "delivered", "status": 200, "ms": 12, "request_id": "r-1"}]
    queries.insert_session_rows(source, [queries.session_row(
        project="mv", session_id="with-log", version=1, finalized_reason="idle", finalized_at_ms=BASE,
        totals={"first_ts_ms": BASE, "last_ts_ms": BASE, "event_count": 0, "counts": {}},
        webhook_id="mv:with-log:1", status="delivered", attempts=log)])
    expected = side.read_back()
    target = client.get_clickhouse(topology.url(source.database if source_kind == "server" else _db()))
    t0 = time.monotonic()
    reports = cluster_move.move(source, target, cluster=CLUSTER)
    elapsed = time.monotonic() - t0
    for r in reports:
        print(f"{source_kind} -> cluster  {r.line()}")
    print(f"moved in {elapsed:.2f} s")
    try:
        assert all(r.ok for r in reports) and reports[0].source_rows > reports[0].source_keys
        moved = Side(target, redis_url, "mv:", cluster.insert_settings(target, CLUSTER))
        moved.claimed = side.claimed
        assert moved.read_back() == expected
        assert queries.session_attempts(target, "mv", "with-log", 1) == log, "the delivery log moves too"
        # the view is back on the cluster: new events are indexed once, on their shard
        moved.ingest(_batch([str(uuid.uuid4()) for _ in range(4)], "after-move", BASE + 1))
        db = target.database
        assert target.execute(f"SELECT count() FROM {db}.event_ids WHERE session_id = 'after-move'")[0][0] == 4
        with pytest.raises(RuntimeError, match="already has data"):
            cluster_move.move(source, target, cluster=CLUSTER)
    finally:
        if source.kind == "server":
            source.execute(f"DROP DATABASE IF EXISTS {source.database}")
        client.close_all()


def test_pipeline_reads_the_same_on_the_cluster_as_on_one_node(topology, clickhouse_server, redis_url):
    single = client.get_clickhouse(f"{clickhouse_server}/{_db()}")
    migrations.migrate(single)
    ch = _migrated(topology, _db())
    settings = cluster.insert_settings(ch, CLUSTER)
    assert settings == {"insert_distributed_sync": 1}  # 18.16: no parallel quorum (app/storage/client/cluster.py)
    one, many = Side(single, redis_url, "one:", None), Side(ch, redis_url, "many:", settings)
    _scenario([one, many], n_sessions=4)
    a, b = one.read_back(), many.read_back()
    shards = {n.name: client.get_clickhouse(n.url.rsplit("/", 1)[0] + "/" + ch.database).execute(
        f"SELECT count() FROM {ch.database}.events_local")[0][0] for n in topology.nodes}
    print(f"{topology.shards}x{topology.replicas}: {len(b['payloads'])} payloads, {len(b['dedup'])} events_dedup rows, "
          f"{len(b['final'])} FINAL rows, {len(b['batches'])} session_batches; events_local per server {shards}; "
          f"equal to one node: {a == b}")
    assert len(a["payloads"]) == 8 and len(a["dedup"]) == 4 * 30
    assert len(a["unrecorded"]) == 2 and sum(map(len, a["elsewhere"])) == 4  # the race: e[27] of each session
    for key in a:
        assert a[key] == b[key], key
    if topology.shards > 1:
        assert all(shards.values()), shards  # sessions spread over both shards


def test_expired_event_ids_days_are_dropped_on_every_shard(clickhouse_clusters):
    """18.16 has no TTL: whole days of event_ids past the window go, on each shard's local table."""
    topology = clickhouse_clusters(2, 1)
    ch = _migrated(topology, _db())
    now = int(time.time() * 1000)
    old = [_batch([str(uuid.uuid4())], f"s{k:02d}", now - 3 * 86_400_000) for k in range(4)]
    queries.insert_events(ch, old + [_batch([str(uuid.uuid4())], "s00", now)])
    assert queries.drop_expired_event_ids(ch, now - 90_000_000) == []  # the single-node way finds nothing
    dropped = cluster.drop_expired_event_ids(ch, CLUSTER, now - 90_000_000)
    assert dropped == [time.strftime("%Y%m%d", time.gmtime((now - 3 * 86_400_000) // 1000))]
    assert ch.execute(f"SELECT count() FROM {ch.database}.event_ids")[0][0] == 1
    assert ch.execute(f"SELECT count() FROM {ch.database}.events")[0][0] == 5
    assert cluster.drop_expired_event_ids(ch, CLUSTER, now - 90_000_000) == []


def test_a_row_inserted_on_one_replica_is_on_the_other(clickhouse_clusters):
    topology = clickhouse_clusters(1, 2)
    db = _db()
    first = _migrated(topology, db)
    second = _node_ch(topology, db, replica=2)
    batch = _batch([str(uuid.uuid4()) for _ in range(5)], "replicated", BASE)
    t0 = time.monotonic()
    first.insert("events_local", queries.INSERT_EVENT_COLUMNS, queries.event_rows([batch]))
    deadline, lags = t0 + 10, {}
    while len(lags) < 2 and time.monotonic() < deadline:
        for table in ("events_local", "event_ids_local"):  # the view's part replicates on its own
            if table not in lags and second.execute(f"SELECT count() FROM {db}.{table}")[0][0] == 5:
                lags[table] = time.monotonic() - t0
        time.sleep(0.02)
    print("5 rows inserted on replica 1 are on replica 2 after "
          + ", ".join(f"{t}: {lag:.2f} s" for t, lag in sorted(lags.items())))
    assert set(lags) == {"events_local", "event_ids_local"}, lags
    first.insert("events_local", queries.INSERT_EVENT_COLUMNS, queries.event_rows([batch]))  # an identical block
    assert first.execute(f"SELECT count() FROM {db}.events_local")[0][0] == 5  # dropped by block deduplication


@pytest.mark.outage
def test_zookeeper_away_for_30_s_inserts_fail_transiently_and_resume_with_nothing_lost(clickhouse_clusters, redis_url):
    """Flushes keep coming every 0.5 s; while ZooKeeper is stopped each is requeued (never parked or
    dead-lettered), then all of them are stored once it is back."""
    topology = clickhouse_clusters(2, 1)
    ch = _migrated(topology, _db())
    side = Side(ch, redis_url, "zk:", cluster.insert_settings(ch, CLUSTER))
    seen: list[tuple[int | None, bool, str]] = []
    refused: list = []

    def insert(batches):
        try:
            persist_batches(ch, batches, insert_settings=side.settings,
                            dedup_window=S.dedup_window)
        except Exception as exc:
            seen.append((getattr(exc, "code", None), flush_mod.is_transient(exc), str(exc)[:160]))
            raise

    deps = flush_mod.FlushDeps(insert=insert,
                               count_sessions=lambda bs: count_batches(side.store, ch, bs, side.settings),
                               publish_session_step=refused.append, park=lambda i, at: refused.append(i),
                               dead_letter=lambda i, e: refused.append(i), schedule=(60.0,))
    sent, waiting, acked = [], [], set()
    failed_at = back_at = resumed_at = None
    t0 = time.monotonic()
    n = 0
    try:
        while time.monotonic() - t0 < 120:  # bounded: 30 s outage + recovery
            now = time.monotonic() - t0
            if failed_at is None and now > 3:
                topology.zookeeper.stop()
                failed_at = now
            if failed_at is not None and back_at is None and now > failed_at + 30:
                topology.zookeeper.restart()
                back_at = time.monotonic() - t0
            if back_at is None or not waiting:
                n += 1  # a new batch of two sessions (two shards, most of the time)
                b = _batch([str(uuid.uuid4()) for _ in range(3)], f"zk-a{n}", BASE + n)
                b["events"] += _batch([str(uuid.uuid4()) for _ in range(2)], f"zk-b{n}", BASE + n)["events"]
                sent.append(b)
                waiting.append(b)
            items = [flush_mod.Item(b["batch_id"], copy.deepcopy(b)) for b in waiting]
            out = flush_mod.run_flush(items, deps)
            done = {rid for rid, v in out.verdicts.items() if v == flush_mod.ACK}
            acked |= done
            waiting = [b for b in waiting if b["batch_id"] not in done]
            if back_at is not None and done and resumed_at is None:
                resumed_at = time.monotonic() - t0
            if back_at is not None and not waiting:
                break
            time.sleep(0.5)
    finally:
        if not topology.zookeeper.alive():
            topology.zookeeper.restart()
    codes = sorted({(c, t) for c, t, _m in seen}, key=str)
    assert seen and resumed_at is not None, (seen[:3], waiting[:1])
    print(f"ZooKeeper stopped at {failed_at:.1f} s, back at {back_at:.1f} s; inserts resumed "
          f"{resumed_at - back_at:.1f} s after it returned; {len(seen)} failed flushes, (code, transient): {codes}; "
          f"e.g. {seen[0][2]!r}")
    assert all(t for _c, t, _m in seen), seen[:3]
    assert not refused and not waiting
    db = ch.database
    expected = {e["event_id"] for b in sent for e in b["events"]}
    stored = {r[0] for r in ch.execute(f"SELECT event_id FROM {db}.events_dedup WHERE project = 'p1'")}
    counted = ch.execute(f"SELECT sum(events) FROM {db}.session_batches FINAL WHERE session_id LIKE 'zk-%%'")[0][0]
    print(f"{len(sent)} batches, {len(expected)} events sent; {len(stored & expected)} stored, "
          f"{counted} counted into sessions; lost {len(expected - stored)}")
    assert stored >= expected and counted == len(expected)
    assert acked == {b["batch_id"] for b in sent}

"""A person's data deleted on the cluster layout (CLICKHOUSE_CLUSTER): the mutations run on every
server's ``_local`` tables ``ON CLUSTER``, are waited for on every shard, and leave nothing of the
person on any server while the other person's rows stay. ZooKeeper + ClickHouse 18.16 as two shards
and as two replicas (devtools/servers/clickhouse_cluster.py); Redis and PostgreSQL real too."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from app import resources
from app.deletion import job
from app.deletion.store import DeletionStore
from app.events.persist import persist_batches
from app.sessions.counting import count_batches
from app.settings import load_settings
from app.storage.clickhouse import client, cluster, migrations
from devtools.wait import until

pytestmark = pytest.mark.xdist_group("client-cluster")
CLUSTER = "observer"


def _batch(sid: str, anon: str, received: int) -> dict:
    events = [{"event_id": str(uuid.uuid4()), "type": "click", "ts_ms": received - 1000 + i, "session_id": sid,
               "url": "https://x.test/", "name": "", "anonymous_id": anon, "metadata": json.dumps({"i": i})}
              for i in range(3)]
    return {"batch_id": uuid.uuid4().hex, "project": "p1", "request_id": "r", "received_at": received,
            "events": events}


@pytest.mark.parametrize("layout", [(2, 1), (1, 2)], ids=["2shards", "2replicas"])
def test_the_mutations_run_on_every_servers_local_tables(clickhouse_clusters, layout, monkeypatch, redis_url,
                                                          clean_pg):
    from app.storage import postgres

    with postgres.cursor(clean_pg) as cur:  # requests left open by an earlier test would run here too
        cur.execute("TRUNCATE deletion_audit, deletion_requests RESTART IDENTITY CASCADE")
    topology = clickhouse_clusters(*layout)
    db = f"obs_d_{uuid.uuid4().hex[:10]}"
    ch = client.get_clickhouse(topology.url(db, 1, 1))
    try:
        migrations.migrate(ch, cluster=CLUSTER)
        s = load_settings(overrides={"REDIS_URL": redis_url, "DATABASE_URL": clean_pg,
                                     "CLICKHOUSE_URL": topology.url(db, 1, 1), "CLICKHOUSE_CLUSTER": CLUSTER,
                                     "REDIS_KEY_PREFIX": f"dc{uuid.uuid4().hex[:6]}:", "UFSE_URL": ""})
        resources.reset()
        monkeypatch.setattr(resources, "settings", lambda: s)
        monkeypatch.setattr(resources, "clickhouse", lambda: ch)
        now = int(time.time() * 1000)
        batches = [_batch(f"s-{i}", "anon-1" if i % 2 else "anon-2", now - i) for i in range(20)]
        ins = cluster.insert_settings(ch, CLUSTER)
        persist_batches(ch, batches, insert_settings=ins, dedup_window=s.dedup_window)
        count_batches(resources.session_store(), ch, batches, ins)
        nodes = [client.get_clickhouse(n.url.rsplit("/", 1)[0] + "/" + db) for n in topology.nodes]
        if layout[0] == 2:  # rows on both shards, so both shards' mutations matter
            assert all(int(n.execute(f"SELECT count() FROM {db}.events_local")[0][0]) for n in nodes)  # noqa: S608

        req = DeletionStore(clean_pg).create("p1", "anonymous_id", "anon-1", "test", 3600)
        for _ in range(120):
            job.tick()
            row = DeletionStore(clean_pg).get(req)
            if row["state"] == "verified":
                break
            time.sleep(0.5)
        assert row["state"] == "verified", row
        assert row["counts"]["clickhouse"] == {"events": 30, "event_ids": 30, "session_batches": 10, "sessions": 0}
        for n in nodes:  # every server: its local tables mutated, nothing of anon-1 left (replicas: once caught up)
            done = n.execute("SELECT table, is_done FROM system.mutations WHERE database = %(d)s", {"d": db})
            assert {t for t, _ in done} == {migrations.local_table(t) for t in job.TABLES}, done
            until(lambda n=n: all(int(d) == 1 for _, d in n.execute(
                "SELECT table, is_done FROM system.mutations WHERE database = %(d)s", {"d": db})) and int(n.execute(
                    f"SELECT count() FROM {db}.events_local WHERE anonymous_id = 'anon-1'")[0][0]) == 0,  # noqa: S608
                  timeout=30, what="the server's mutations done and anon-1 gone")
        kept = int(ch.execute(f"SELECT count() FROM {db}.events WHERE anonymous_id = 'anon-2'")[0][0])  # noqa: S608
        assert kept == 30
        assert int(ch.execute(f"SELECT count() FROM {db}.session_batches")[0][0]) == 10  # noqa: S608
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {db} ON CLUSTER {CLUSTER}")
        client.close_all()
        resources.reset()

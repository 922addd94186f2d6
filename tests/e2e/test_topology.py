"""The scale-out topology end to end: two hosts' worth of Observer on engines that scale.

- session state and rate limits on a Redis Cluster (3 masters + 3 replicas);
- RabbitMQ as the broker (a private node: devtools/servers/rabbitmq.py);
- ClickHouse as a cluster of two shards with ZooKeeper (CLICKHOUSE_CLUSTER: replicated local
  tables, Distributed tables under the usual names);
- two web processes and two sets of workers and beats ("host A" and "host B"), each talking to
  its own ClickHouse node, as two machines would.

The same sessions are posted through both webs (a session's batches land on either host), one
batch twice (once per host). Checked: every accepted event stored once; every session delivered
once, with exactly its events; the Distributed reads through either node give the same answer.
Overrides, as every end-to-end test: SESSION_IDLE_TIMEOUT=3, SESSION_SWEEP_INTERVAL=0.5 and
EVENTS_FLUSH_INTERVAL=0.2 so sessions finalize within the test.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from devtools.keys import create_key
from devtools.stack import ObserverStack
from devtools.wait import until
from tests.e2e.conftest import SECRET

pytestmark = pytest.mark.e2e

SESSIONS, BATCHES, EVENTS = 12, 4, 5  # per session: batches, events per batch


@pytest.fixture(scope="module")
def topology(tmp_path_factory, database_url):
    from devtools.servers.clickhouse_cluster import start_clickhouse_cluster
    from devtools.servers.rabbitmq import start_rabbitmq
    from devtools.servers.redis_cluster import start_redis_cluster
    from devtools.sink import Sink

    base = tmp_path_factory.mktemp("topology")
    started = time.monotonic()
    ch = start_clickhouse_cluster(base / "ch", shards=2, replicas=1)
    rc = start_redis_cluster(base / "rc", masters=3, replicas=1)
    mq = start_rabbitmq(base / "mq")
    sink = Sink(secret=SECRET).start()
    db = f"obs_topo_{uuid.uuid4().hex[:8]}"
    common = {
        "REDIS_URL": rc.url, "SESSIONS_REDIS_URL": rc.url, "RATELIMIT_REDIS_URL": rc.url,
        "CELERY_BROKER_URL": mq.url, "DATABASE_URL": database_url,
        "CLICKHOUSE_CLUSTER": ch.name, "UFSE_URL": sink.url + "ufse", "UFSE_SECRET": SECRET,
        "SESSION_IDLE_TIMEOUT": "3", "SESSION_SWEEP_INTERVAL": "0.5", "EVENTS_FLUSH_INTERVAL": "0.2",
        "REDIS_KEY_PREFIX": f"topo{uuid.uuid4().hex[:6]}:", "RATE_LIMIT_DEFAULT": "1000/second",
        "RATE_LIMIT_PER_IP": "1000/second", "WEB_CONCURRENCY": "1", "FORWARD_CONCURRENCY": "1",
        "EVENTS_CONCURRENCY": "1",
    }
    hosts = []
    try:
        for shard in (1, 2):
            hosts.append(ObserverStack.for_tests(dict(common, CLICKHOUSE_URL=ch.url(db, shard=shard)), chdb=False))
        hosts[0].start_migrated()  # migrates ON CLUSTER
        hosts[1].start_migrated()  # migrates again: nothing to do
        key = create_key(database_url, "topo")
        print(f"topology up in {time.monotonic() - started:.1f} s: ClickHouse 2 shards + ZooKeeper, "
              f"Redis Cluster 3+3, RabbitMQ node {mq.url}, 2 web + 2 worker sets + 2 beats")
        yield {"ch": ch, "rc": rc, "sink": sink, "hosts": hosts, "key": key, "db": db}
    finally:
        for h in hosts:
            h.stop()
        sink.stop()
        mq.stop()
        rc.stop()
        ch.stop()


def _query(ch_cluster, shard: int, db: str, sql: str):
    from clickhouse_driver import Client

    node = ch_cluster.node(shard)
    client = Client("127.0.0.1", port=int(node.port), database=db, connect_timeout=2, send_receive_timeout=20)
    try:
        return client.execute(sql)
    finally:
        client.disconnect()


def test_two_hosts_on_the_cluster_topology_store_once_and_deliver_once(topology):
    hosts, key, sink, db = topology["hosts"], topology["key"], topology["sink"], topology["db"]
    now = int(time.time() * 1000)
    expected: dict[str, set[str]] = {}
    bodies = []
    for _s in range(SESSIONS):
        sid = f"topo-{uuid.uuid4().hex[:8]}"
        expected[sid] = set()
        for b in range(BATCHES):
            events = [{"event_id": str(uuid.uuid4()), "type": "click", "timestamp": now - 1000 + b * 10 + i,
                       "session_id": sid, "url": f"https://shop.test/{b}", "metadata": {"i": i}}
                      for i in range(EVENTS)]
            expected[sid] |= {e["event_id"] for e in events}
            bodies.append(events)
    statuses = []
    for n, events in enumerate(bodies):  # a session's batches alternate between the two hosts
        web = hosts[n % 2]
        statuses.append(requests.post(f"{web.url}/v1/events", json={"events": events},
                                      headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code)
    again = requests.post(f"{hosts[1].url}/v1/events", json={"events": bodies[0]},  # the same batch, other host
                          headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert set(statuses) == {202} and again.status_code == 202, statuses
    total = sum(len(v) for v in expected.values())

    def all_delivered() -> bool:
        for h in hosts:
            h.check_alive()
        return len({d["headers"]["webhook-id"] for d in sink.snapshot() if d["status"] == 200}) >= SESSIONS

    until(all_delivered, "every session delivered", timeout=120, raises=False)
    deliveries = [d for d in sink.snapshot() if d["status"] == 200]
    by_id: dict[str, list[dict]] = {}
    for d in deliveries:
        by_id.setdefault(d["headers"]["webhook-id"], []).append(d["body"])
    print(f"{total} events in {len(bodies) + 1} batches over 2 webs; {len(by_id)} sessions delivered "
          f"({len(deliveries)} deliveries)")
    assert sorted(by_id) == sorted(f"topo:{sid}:1" for sid in expected), "every session once, as version 1"
    for wid, payloads in by_id.items():
        assert len({json.dumps(p, sort_keys=True) for p in payloads}) == 1, f"{wid}: one content"
        sid = wid.split(":")[1]
        assert {e["event_id"] for e in payloads[0]["events"]} == expected[sid], wid
        assert payloads[0]["session"]["event_count"] == len(expected[sid])

    # The sessions rows are batched (forward.record flushes about once a second): wait for them.
    sessions_sql = "SELECT count(), uniqExact(session_id) FROM sessions FINAL WHERE project = 'topo'"
    until(lambda: _query(topology["ch"], 1, db, sessions_sql) == [(SESSIONS, SESSIONS)], "sessions rows",
          timeout=30, raises=False)
    for shard in (1, 2):  # Distributed reads through either host's node: the same answers
        rows = _query(topology["ch"], shard, db,
                      "SELECT uniqExact(event_id), count() FROM events_dedup WHERE project = 'topo'")
        assert rows == [(total, total)], (shard, rows)
        rows = _query(topology["ch"], shard, db, sessions_sql)
        assert rows == [(SESSIONS, SESSIONS)], (shard, rows)
    local = [_query(topology["ch"], shard, db, "SELECT uniqExact(session_id) FROM events_local")[0][0]
             for shard in (1, 2)]
    print(f"sessions per shard: {local}")
    assert sum(local) == SESSIONS and all(local), "sharded by session, every session on one shard"

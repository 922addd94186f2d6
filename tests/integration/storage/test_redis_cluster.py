"""Session state, retries, circuits, sweeps and rate limits on a real Redis Cluster.

A 3-master cluster with one replica each (devtools/servers/redis_cluster.py, built on loopback)
at Redis' own default ``cluster-node-timeout`` (15,000 ms: the failover test waits for what an
operator gets). Every script and multi-key call of Observer must stay in one slot: the cluster
refuses anything else (CROSSSLOT), so these tests fail on any key that lost its hash tag.
"""
from __future__ import annotations

import time
import uuid

import pytest

pytest.importorskip("redis.cluster")

from app.events.flush import is_transient
from app.events.persist import persist_batches
from app.retry.due import DueIndex
from app.sessions.counting import count_batches
from app.sessions.store import SessionStore
from app.settings import load_settings
from app.storage import redis_clients

# xdist_group: one Redis Cluster for the module, in one process.
pytestmark = pytest.mark.xdist_group("redis-cluster")

S = load_settings()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from devtools.servers.redis_cluster import start_redis_cluster

    started = time.monotonic()
    c = start_redis_cluster(tmp_path_factory.mktemp("rc"), masters=3, replicas=1)
    print(f"Redis Cluster 3 masters + 3 replicas formed in {time.monotonic() - started:.1f} s: {c.url}")
    yield c
    c.stop()


@pytest.fixture
def rc(cluster):
    client = redis_clients.client(cluster.url)
    yield client
    redis_clients.reset_clients()


def _store(rc, prefix: str) -> SessionStore:
    return SessionStore(rc, prefix=prefix, idle_s=S.session_idle_timeout,
                        max_s=S.session_max_duration, marker_ttl_s=S.batch_marker_ttl)


def _batch(sid: str, received: int, n: int = 2, project: str = "p1") -> dict:
    events = [{"event_id": str(uuid.uuid4()), "type": "click", "ts_ms": received - 100 + i, "session_id": sid,
               "url": "https://x.test/", "name": "", "anonymous_id": "", "metadata": "{}"} for i in range(n)]
    return {"batch_id": uuid.uuid4().hex, "project": project, "request_id": "r", "received_at": received,
            "events": events}


def test_settings_take_a_cluster_for_sessions_and_limits_and_refuse_it_as_broker(cluster):
    from app.settings import ConfigError

    s = load_settings({"SESSIONS_REDIS_URL": cluster.url, "RATELIMIT_REDIS_URL": cluster.url,
                       "CELERY_BROKER_URL": "amqp://guest@127.0.0.1//"})
    assert s.sessions_redis_url == cluster.url
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL: a Redis Cluster cannot be Celery's broker"):
        load_settings({"REDIS_URL": cluster.url})


def test_session_lifecycle_spans_every_master_one_slot_per_call(rc, cluster):
    """apply (pipelined across slots), mark written, claim, snapshot, complete, recover."""
    store = _store(rc, f"t{uuid.uuid4().hex[:6]}:")
    sids = [f"s{i}" for i in range(60)]
    masters = {int(cluster.master_of_slot(rc.keyslot(store.keys("p", sid)["live"])).port) for sid in sids}
    assert len(masters) == 3, "the sessions spread over every master"
    from app.sessions.store import Entry

    results = store.apply_many([Entry("p", f"b{i}", sid, (2, 10, 20), 1_000) for i, sid in enumerate(sids)])
    assert results == [(1, True)] * 60
    again = store.apply_many([Entry("p", f"b{i}", sid, (2, 10, 20), 1_000) for i, sid in enumerate(sids)])
    assert again == [(1, False)] * 60, "the markers answer on the cluster too"
    store.mark_written_many([("p", f"b{i}", sid, 1) for i, sid in enumerate(sids)])
    assert all(store.live("p", sid)["pending"] == "0" for sid in sids)
    store.note_lag(0)
    claimed = store.claim_due(at_ms=1_000 + S.session_idle_timeout * 1000)
    assert sorted(c.session_id for c in claimed) == sorted(sids)
    assert store.snapshot("p", "s0", 1)["events"] == "2"
    assert store.stale_outbox(0, at_ms=10**13) and True
    for c in claimed:
        store.complete(c.project, c.session_id, c.version)
    assert store.snapshot("p", "s0", 1) is None
    assert store.recover("p", "s-lost", 3, batches=2) is True
    assert store.recover("p", "s-lost", 3, batches=2) is False


def test_due_index_circuit_lock_and_heartbeats_on_the_cluster(rc):
    from app.forwarding.circuit import Circuit
    from app.observability.heartbeats import read_heartbeats

    prefix = f"t{uuid.uuid4().hex[:6]}:"
    index = DueIndex(rc, prefix, "events")
    for i in range(5):
        index.park(f"m{i}", {"i": i}, due_at=100.0 + i)
    assert [m for m, _p in index.due(now=102.5)] == ["m0", "m1", "m2"]
    index.done(["m0", "m1"])  # one transaction in one slot
    assert index.size() == 3 and index.release_all(now=50.0) == 3
    breaker = Circuit(rc, prefix, "ufse.test", threshold=S.forward_circuit_threshold, max_pause=S.forward_circuit_max)
    for _ in range(S.forward_circuit_threshold):
        breaker.failure()
    assert breaker.open_until() > 0 and breaker.success() is True
    lock = f"{prefix}claim-lock"
    assert rc.set(lock, "me", nx=True, px=30_000) and not rc.set(lock, "other", nx=True, px=30_000)
    from app.observability import heartbeats

    for node in ("events@h1", "events@h2", "forward@h1"):  # fields of one hash, in one slot
        heartbeats.write_worker(rc, prefix, {"worker": node, "held": 0, "last_progress": 1}, 60)
    beats = read_heartbeats(rc, prefix, stall_after=60)
    assert sorted(b["worker"] for b in beats) == ["events@h1", "events@h2", "forward@h1"], beats


@pytest.fixture
def env(redis_url, clean_pg):
    return {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": clean_pg,
            "REDIS_KEY_PREFIX": f"rc{uuid.uuid4().hex[:8]}:", "LOG_LEVEL": "WARNING"}


def test_rate_limits_count_on_the_cluster(cluster, env, clean_pg):
    """The rate limits on a Redis Cluster (app/web/limits.lua through the cluster client): a key's
    limit holds across the cluster."""
    from app.keys.store import KeyStore
    from app.web.factory import create_app

    _id, key = KeyStore(clean_pg).create("rl-cluster", rate_limit="3/minute")
    app = create_app(dict(env, RATELIMIT_REDIS_URL=cluster.url))
    client = app.test_client()
    now = int(time.time() * 1000)
    statuses = []
    for i in range(5):
        body = {"events": [{"event_id": str(uuid.uuid4()), "type": "page_view", "timestamp": now,
                            "session_id": f"s-{i}", "url": "https://x.test/"}]}
        statuses.append(client.post("/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}).status_code)
    assert statuses == [202, 202, 202, 429, 429], statuses


@pytest.fixture
def ch_server(clickhouse_server):
    """The 18.16 server only: one engine is enough for a Redis failover."""
    from app.storage.clickhouse import client as clickhouse
    from app.storage.clickhouse import migrations

    backend = clickhouse.get_clickhouse(f"{clickhouse_server}/obs_rc_{uuid.uuid4().hex[:8]}")
    migrations.migrate(backend)
    yield backend
    backend.execute(f"DROP DATABASE IF EXISTS {backend.database}")
    clickhouse.close_all()


@pytest.mark.outage
def test_master_killed_replica_promoted_every_batch_counted_once(rc, cluster, ch_server):
    """kill -9 of the master serving some sessions while flushes run: calls fail with errors the
    flush classifies as transient (so it requeues), the replica takes over after the cluster's
    node timeout, and redelivered batches count once: nothing lost, nothing twice."""
    ch = ch_server
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    store = _store(rc, prefix)
    sids = [f"s{i}" for i in range(30)]
    now = int(time.time() * 1000)
    victim = cluster.master_of_slot(rc.keyslot(store.keys("p1", sids[0])["live"]))
    pending = [[_batch(sid, now + r) for sid in sids] for r in range(8)]  # 8 flushes of 30 batches
    expected = {sid: 0 for sid in sids}
    errors: list[str] = []
    killed_at = recovered_at = None
    deadline = time.monotonic() + 240  # bounded; a failover takes the node timeout + an election
    while pending and time.monotonic() < deadline:
        flush = pending[0]
        if len(pending) == 6 and killed_at is None:
            victim.kill9()
            killed_at = time.monotonic()
        try:
            persist_batches(ch, [dict(b, events=list(b["events"])) for b in flush],
                            dedup_window=S.dedup_window)
            count_batches(store, ch, [dict(b, events=list(b["events"])) for b in flush])
        except Exception as exc:  # what the flush meets; it must be an outage, never a data error
            assert is_transient(exc), f"{type(exc).__name__}: {exc}"
            errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            time.sleep(0.5)
            continue  # the flush's messages are requeued and come again
        if killed_at is not None and recovered_at is None:
            recovered_at = time.monotonic()
        for b in pending.pop(0):
            expected[b["events"][0]["session_id"]] += len(b["events"])
    assert not pending, (f"still failing after 240 s: {len(errors)} errors, last {errors[-3:]}; "
                         f"cluster healthy: {cluster.healthy()}")
    print(f"master {victim.name} killed: {len(errors)} flushes failed transiently "
          f"({sorted(set(errors))}), counting again after {recovered_at - killed_at:.1f} s "
          f"(cluster-node-timeout {cluster.node_timeout_ms} ms)")
    assert errors, "the kill was felt"
    for sid in sids:
        live = store.live("p1", sid)
        assert int(live["events"]) == expected[sid] and int(live["batches"]) == 8, (sid, live, expected[sid])
    rows = ch.execute(f"SELECT count(), uniqExact(batch_id) FROM {ch.database}.session_batches FINAL")
    assert rows[0] == (240, 240)

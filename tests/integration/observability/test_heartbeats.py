"""Heartbeats on the real Redis: one writer, one reader, the worker, ClickHouse-owner and sweep beats."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from app.observability import heartbeats
from app.storage import redis_keys


@pytest.fixture
def r(redis_url):
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def prefix():
    return f"t{uuid.uuid4().hex[:8]}:"


def test_write_and_read_json_and_strings(r, prefix):
    assert heartbeats.read(r, prefix, "clickhouse") is None
    heartbeats.write(r, prefix, "clickhouse", {"ok": True, "version": "25.1", "at": 1.5}, 20)
    assert heartbeats.read(r, prefix, "clickhouse") == {"ok": True, "version": "25.1", "at": 1.5}
    assert r.get(f"{prefix}hb:clickhouse") == '{"ok": true, "version": "25.1", "at": 1.5}'
    assert 0 < r.ttl(f"{prefix}hb:clickhouse") <= 20
    heartbeats.write(r, prefix, "sweep", "not json", 30)
    assert heartbeats.read(r, prefix, "sweep") == "not json"


def test_mark_sweep_writes_epoch_seconds_for_a_day(r, prefix):
    heartbeats.mark_sweep(r, prefix, 1234.56789)
    assert r.get(f"{prefix}hb:sweep") == "1234.568"
    assert 86000 < r.ttl(f"{prefix}hb:sweep") <= 86400
    assert float(heartbeats.read(r, prefix, "sweep")) == 1234.568


def test_worker_heartbeats_and_the_stalled_one(r, prefix):
    busy = heartbeats.Heartbeat(lambda: r, prefix, "events@h1", lambda: (3, time.time() - 600))
    idle = heartbeats.Heartbeat(lambda: r, prefix, "forward@h1", lambda: (0, time.time() - 600))
    assert busy.beat()["held"] == 3 and idle.beat()["held"] == 0
    assert 0 < r.ttl(redis_keys.worker_heartbeats(prefix)) <= 30
    beats = {b["worker"]: b for b in heartbeats.read_heartbeats(r, prefix, stall_after=60)}
    assert set(beats) == {"events@h1", "forward@h1"}
    assert beats["events@h1"]["stalled"] is True, "holding messages with no progress"
    assert beats["forward@h1"]["stalled"] is False, "idle, holding nothing"
    # a worker that stopped writing: gone from the reading once its own expiry passed, and its
    # field is dropped (a restarted container comes back under a new hostname)
    later = {b["worker"] for b in heartbeats.read_heartbeats(r, prefix, stall_after=60, now=time.time() + 31)}
    assert later == set() and r.hlen(redis_keys.worker_heartbeats(prefix)) == 0


def test_clickhouse_owner_heartbeat_reports_the_version_then_the_failure(r, prefix):
    answers: list = [[("25.1.1",)]]
    class FakeClickHouse:
        def execute(self, sql):
            assert sql == "SELECT version()"
            if not answers:
                raise ConnectionError("chdb gone")
            return answers[0]

    stop = threading.Event()
    thread = heartbeats.start_clickhouse_owner_heartbeat(lambda: r, FakeClickHouse, prefix, interval=0.05, stop=stop)
    deadline = time.time() + 5
    while heartbeats.read(r, prefix, "clickhouse") is None and time.time() < deadline:
        time.sleep(0.02)
    beat = heartbeats.read(r, prefix, "clickhouse")
    assert beat["ok"] is True and beat["version"] == "25.1.1" and time.time() - beat["at"] < 5
    assert 0 < r.ttl(redis_keys.heartbeat(prefix, "clickhouse")) <= 20
    answers.clear()
    while heartbeats.read(r, prefix, "clickhouse")["ok"] and time.time() < deadline:
        time.sleep(0.02)
    beat = heartbeats.read(r, prefix, "clickhouse")
    assert beat["ok"] is False and "chdb gone" in beat["error"]
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_ready_reads_the_chdb_owners_heartbeat(r, prefix, redis_url, clean_pg, tmp_path):
    from app.web.factory import create_app

    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": clean_pg,
                      "REDIS_KEY_PREFIX": prefix, "CLICKHOUSE_URL": f"chdb://{tmp_path}/chdb", "LOG_LEVEL": "WARNING"})

    def check() -> dict:  # the operator listener's port (/ready answers nowhere else)
        return app.test_client().get("/ready", base_url="http://127.0.0.1:8001").get_json()["checks"]["clickhouse"]

    assert check()["ok"] is False and "no heartbeat" in check()["detail"]
    heartbeats.write(r, prefix, "clickhouse", {"ok": True, "version": "25.1.1", "at": time.time()}, 20)
    assert check()["ok"] is True and check()["detail"].startswith("chdb 25.1.1 (heartbeat")
    heartbeats.write(r, prefix, "clickhouse", {"ok": False, "error": "disk full", "at": time.time()}, 20)
    assert check() == {"ok": False, "detail": "the chDB owner worker reports ClickHouse failing (its log has why)"}

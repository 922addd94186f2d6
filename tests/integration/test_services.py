"""scripts/services.py starts real Redis, PostgreSQL and ClickHouse servers and stops them."""
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_services():
    if "services" in sys.modules and hasattr(sys.modules["services"], "start_clickhouse_server"):
        return sys.modules["services"]
    spec = importlib.util.spec_from_file_location("services", ROOT / "scripts" / "services.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["services"] = mod
    spec.loader.exec_module(mod)
    return mod


services = _load_services()


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_free_port_is_bindable():
    port = services.free_port()
    assert 0 < port < 65536
    assert not services.port_in_use(port)


def test_redis_starts_answers_and_stops(tmp_path):
    import redis

    with services.start_redis(tmp_path / "redis") as svc:
        assert svc.url == f"redis://127.0.0.1:{svc.port}/0"
        assert redis.Redis.from_url(svc.url).ping() is True
        assert services.redis_available(svc.url)
        r = redis.Redis.from_url(svc.url)
        assert r.config_get("appendonly")["appendonly"] == "yes"
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        r.set("k", "v")
        pid = svc.pid
    assert _gone(pid), f"redis pid {pid} still running after stop()"
    assert not services.redis_available(svc.url)
    # AOF persisted: a restart on the same dir sees the key
    with services.start_redis(tmp_path / "redis") as svc2:
        assert redis.Redis.from_url(svc2.url).get("k") == b"v"
    assert _gone(svc2.pid)


def test_postgres_starts_answers_and_stops(tmp_path):
    import psycopg2

    svc = services.start_postgres(tmp_path / "pg")
    try:
        assert svc.url == f"postgresql://postgres@127.0.0.1:{svc.port}/observer"
        assert services.postgres_available(svc.url)
        conn = psycopg2.connect(svc.url, connect_timeout=5)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == ("observer",)
        conn.close()
    finally:
        svc.stop()
    assert _gone(svc.pid), f"postgres pid {svc.pid} still running after stop()"
    assert not (tmp_path / "pg" / "data" / "postmaster.pid").exists()
    # the data dir is reused: no second initdb
    with services.start_postgres(tmp_path / "pg") as svc2:
        assert svc2.extra["initialized"] is False
        assert services.postgres_available(svc2.url)
    assert _gone(svc2.pid)


def test_clickhouse_server_starts_answers_and_stops(tmp_path):
    ok, message = services.clickhouse_server_available()
    if not ok:
        services.ensure_clickhouse_server()  # installs as root, else fails saying what to install
    from clickhouse_driver import Client

    with services.start_clickhouse_server(tmp_path / "ch") as svc:
        assert svc.url == f"clickhouse://default:@127.0.0.1:{svc.port}/default"
        client = Client.from_url(svc.url)
        (version,), = client.execute("SELECT version()")
        assert version.startswith("18.16"), version
        client.execute("CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x")
        client.execute("INSERT INTO t VALUES", [(1,), (2,)])
        assert client.execute("SELECT sum(x) FROM t") == [(3,)]
        client.disconnect()
        assert (tmp_path / "ch" / "data" / "data" / "default" / "t").is_dir()
        pid = svc.pid
    assert _gone(pid), f"clickhouse pid {pid} still running after stop()"


def test_probes_say_no_to_a_closed_port():
    port = services.free_port()
    assert not services.redis_available(f"redis://127.0.0.1:{port}/0")
    assert not services.postgres_available(f"postgresql://x@127.0.0.1:{port}/x")
    ok, message = services.rabbitmq_available(port=port)
    assert ok is False and str(port) in message


def test_busy_port_is_replaced_unless_strict(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with services.start_redis(tmp_path / "r", port=busy) as svc:
            assert svc.port != busy and services.redis_available(svc.url)
        with pytest.raises(RuntimeError, match="in use"):
            services.start_redis(tmp_path / "r", port=busy, strict_port=True)


def test_killed_leftover_is_stopped_on_next_start(tmp_path):
    """A server whose parent died without stopping it (pid file left) is stopped first."""
    svc = services.start_redis(tmp_path / "r")
    services._RUNNING.discard(svc)  # pretend this process forgot about it
    pid = svc.pid
    with services.start_redis(tmp_path / "r") as svc2:
        assert svc2.pid != pid
        assert svc.proc.wait(5) is not None  # it was stopped (reaped here: it is our child)
        assert _gone(pid)
        assert services.redis_available(svc2.url)
    assert _gone(svc2.pid)

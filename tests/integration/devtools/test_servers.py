"""devtools.servers starts real Redis, PostgreSQL and ClickHouse servers and stops them."""
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from devtools import servers as services
from devtools.net import free_port, port_in_use
from devtools.proc import RUNNING

ROOT = Path(__file__).resolve().parents[3]


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
    port = free_port()
    assert 0 < port < 65536
    assert not port_in_use(port)


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
    services.ensure_clickhouse_server()  # fails saying what to install when it is missing
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
    port = free_port()
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
    RUNNING.discard(svc)  # pretend this process forgot about it
    pid = svc.pid
    with services.start_redis(tmp_path / "r") as svc2:
        assert svc2.pid != pid
        assert svc.proc.wait(5) is not None  # it was stopped (reaped here: it is our child)
        assert _gone(pid)
        assert services.redis_available(svc2.url)
    assert _gone(svc2.pid)


_STARTER = """
import sys, threading
from pathlib import Path
from devtools import servers
box = []
# started from a thread: no parent-death signal, so a kill -9 of this process leaves it running
t = threading.Thread(target=lambda: box.append(servers.start_redis(Path(sys.argv[1]))))
t.start(); t.join()
print(box[0].pid, box[0].url, flush=True)
sys.stdin.read()
"""


def test_server_of_a_live_run_is_left_alone_and_of_a_dead_one_stopped(tmp_path):
    """Only what is truly left over is stopped: while its starter runs, a second start on the
    same data refuses (InUse) and the server keeps serving; after its starter's kill -9, the
    orphan is stopped and replaced."""
    import subprocess

    from devtools.leftovers import InUse

    starter = subprocess.Popen([sys.executable, "-c", _STARTER, str(tmp_path / "r")], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid, url = starter.stdout.readline().split()
        pid = int(pid)
        with pytest.raises(InUse, match=f"started by pid {starter.pid}"):
            services.start_redis(tmp_path / "r")
        assert services.redis_available(url)
        starter.kill()
        starter.wait(10)
        assert not _gone(pid, timeout=0.5), "the orphan runs on"
        with services.start_redis(tmp_path / "r") as svc:
            assert _gone(pid) and services.redis_available(svc.url)
    finally:
        starter.kill()
        with contextlib.suppress(ProcessLookupError, ValueError, NameError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- the toolkit's fault helpers

def _proc(tmp_path, name, code, **kw):
    from devtools.proc import Proc

    return Proc(name, [sys.executable, "-c", code], cwd=tmp_path, log_path=tmp_path / f"{name}.log", **kw)


def test_redis_kill9_restart_same_port_keeps_aof(tmp_path):
    """appendfsync always: a write answered OK survives kill -9; restart() reuses port and data."""
    import redis

    svc = services.start_redis(tmp_path / "r", appendfsync="always", maxmemory="64mb")
    try:
        r = redis.Redis.from_url(svc.url)
        assert r.config_get("appendfsync")["appendfsync"] == "always"
        assert r.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        r.set("k", "v")
        port, old = svc.port, svc.pid
        assert svc.kill9() == -signal.SIGKILL
        assert not services.redis_available(svc.url)
        svc.restart()
        assert svc.port == port and svc.pid != old
        assert redis.Redis.from_url(svc.url).get("k") == b"v"
    finally:
        svc.stop()


def test_sigstop_freezes_and_sigcont_resumes(tmp_path):
    import redis

    with services.start_redis(tmp_path / "r", appendonly=False) as svc:
        svc.sigstop()
        with pytest.raises(redis.exceptions.TimeoutError):
            redis.Redis.from_url(svc.url, socket_timeout=0.5).ping()
        svc.sigcont()
        assert redis.Redis.from_url(svc.url, socket_timeout=2).ping()
    assert _gone(svc.pid)


def test_postgres_stop_and_restart_on_same_port(tmp_path):
    import psycopg2

    svc = services.start_postgres(tmp_path / "pg")
    try:
        port = svc.port
        svc.stop()
        assert not services.postgres_available(svc.url)
        svc.restart()
        assert svc.port == port
        psycopg2.connect(svc.url, connect_timeout=5).close()
    finally:
        svc.stop()


def test_kill_children_only_and_stop_by_group(tmp_path):
    """kill_children() hits the pool (the leader's children, from psutil), not the leader; stop() ends the group."""
    code = ("import os, time, signal\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # a leader that ignores SIGTERM
            "kids = [os.fork() for _ in range(2)]\n"
            "if 0 in kids:\n    time.sleep(600)\n    os._exit(0)\n"
            "print('children', *kids, flush=True)\n"
            "while True:\n    time.sleep(0.1)\n")
    p = _proc(tmp_path, "pool", code, stop_signals=((signal.SIGTERM, 0.5),))
    p.ready_check = lambda: "children" in p.log_text()
    p.start()
    kids = [int(x) for x in p.log_text().split("children", 1)[1].split()]
    assert sorted(p.children()) == sorted(kids)
    from devtools.proc import pid_alive

    assert sorted(p.kill_children()) == sorted(kids)
    time.sleep(0.2)
    assert not any(pid_alive(k) for k in kids) and p.alive()  # zombies until the leader reaps them
    p.stop()
    assert _gone(p.pid)


def test_log_lines_prefixed_by_name(tmp_path):
    p = _proc(tmp_path, "talker", "print('hello'); print('world')").start()
    p.proc.wait(10)
    p.stop()
    lines = (tmp_path / "talker.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["talker | hello", "talker | world"]


def test_exit_while_starting_is_reported(tmp_path):
    from devtools.proc import ProcError

    p = _proc(tmp_path, "dies", "import sys; print('bye'); sys.exit(3)", ready=lambda: False)
    with pytest.raises(ProcError, match="exited with code 3"):
        p.start()

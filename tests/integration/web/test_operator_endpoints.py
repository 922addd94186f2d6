"""/ready and /metrics: served on the operator listener only, at a cost that does not grow with
the data, and telling no host or user (issue 19, finding 8).

Real gunicorn (gunicorn.conf.py binds both listeners), real Redis and PostgreSQL. The default
OPERATOR_PORT is replaced by a free port: several test processes start gunicorn at once on this
machine and the fixed default would collide; OPERATOR_HOST stays at its default (loopback).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from app.web.factory import create_app
from devtools.net import free_port
from devtools.wait import until

ROOT = Path(__file__).resolve().parents[3]
OPERATOR = 8001  # the default OPERATOR_PORT; the test client's base URL names the listener


@pytest.fixture
def env(redis_url, clean_pg):
    return {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": clean_pg,
            "REDIS_KEY_PREFIX": f"op{uuid.uuid4().hex[:8]}:", "LOG_LEVEL": "WARNING"}


def _error_shape(r) -> dict:
    body = r.json() if hasattr(r, "json") and callable(r.json) else r.get_json()
    assert set(body) == {"error"} and {"code", "message", "request_id"} <= set(body["error"]), body
    return body["error"]


@pytest.fixture
def gunicorn(env, tmp_path):
    port, operator = free_port(), free_port()
    (tmp_path / "empty.env").write_text("")
    proc_env = {**os.environ, **env, "PORT": str(port), "HOST": "127.0.0.1", "OPERATOR_PORT": str(operator),
                "WEB_CONCURRENCY": "1", "OBSERVER_ENV_FILE": str(tmp_path / "empty.env"), "PYTHONPATH": str(ROOT)}
    proc_env.pop("OPERATOR_HOST", None)
    with open(tmp_path / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"),
                                 "app:create_app()"], env=proc_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False
        until(up, "gunicorn /health", timeout=60)
        yield port, operator, tmp_path / "gunicorn.log"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_public_listener_does_not_serve_ready_or_metrics(gunicorn):
    port, operator, log = gunicorn
    public, ops = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{operator}"
    for path in ("/ready", "/metrics"):
        r = requests.get(public + path, timeout=10)
        assert r.status_code == 404, (path, r.status_code, r.text[:300])
        assert _error_shape(r)["code"] == "not_found"
        assert "observer_" not in r.text and "checks" not in r.text
    assert requests.get(public + "/health", timeout=10).status_code == 200  # liveness stays public
    r = requests.get(ops + "/ready", timeout=10)
    assert r.status_code == 200 and r.json()["checks"]["postgres"]["ok"] is True, r.text
    r = requests.get(ops + "/metrics", timeout=10)
    assert r.status_code == 200 and "observer_http_requests_total" in r.text
    # the operator listener is on loopback by default (OPERATOR_HOST unset)
    assert f",http://127.0.0.1:{operator} (" in log.read_text()  # "Listening at: public,operator (pid)"


def test_public_port_refuses_whatever_the_client_claims(env):
    """The listener is told by the server side of the connection, not by Host or X-Forwarded-*."""
    client = create_app(config=env).test_client()
    for path in ("/ready", "/metrics"):
        r = client.get(path, headers={"Host": f"127.0.0.1:{OPERATOR}", "X-Forwarded-Port": str(OPERATOR),
                                      "X-Forwarded-Host": f"127.0.0.1:{OPERATOR}"})
        assert r.status_code == 404, path
        assert client.get(path, base_url=f"http://127.0.0.1:{OPERATOR}").status_code == 200, path


def _commands(r: redis.Redis) -> dict:
    """Commands the server has run so far by name (INFO commandstats), INFO itself left out."""
    return {k: v["calls"] for k, v in r.info("commandstats").items() if k != "cmdstat_info"}


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test alone: INFO commandstats counts every client of a server, and
    the run's shared test server still hears from the threads of earlier tests."""
    from devtools.servers.redis import start_redis

    svc = start_redis(tmp_path / "redis", appendonly=False)
    yield svc.url.rsplit("/", 1)[0] + "/0"
    svc.stop()


def test_ready_costs_the_same_redis_commands_however_many_keys(env, private_redis):
    redis_url = private_redis
    env = {**env, "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url}
    r = redis.Redis.from_url(redis_url)
    client = create_app(config=env).test_client()
    prefix = env["REDIS_KEY_PREFIX"]

    def one_ready() -> int:
        before = _commands(r)
        resp = client.get("/ready", base_url=f"http://127.0.0.1:{OPERATOR}")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        after = _commands(r)
        ran = {k[8:]: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        # Connection set-up (a new pooled connection when checks overlap) and PINGs are no
        # reading of the data: they are bounded separately.
        setup = sum(ran.pop(k, 0) for k in ("hello", "select", "client", "auth", "ping"))
        assert setup <= 20, ran
        return ran

    client.get("/ready", base_url=f"http://127.0.0.1:{OPERATOR}")  # connections and pools made
    few = one_ready()
    pipe = r.pipeline(transaction=False)
    for i in range(50_000):  # what live sessions leave in the sessions Redis
        pipe.hset(f"{prefix}s:{{p:s{i}}}:state", "n", i)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    many = one_ready()
    print(f"Redis commands per /ready: {few} with an empty keyspace, {many} with {r.dbsize()} keys")
    assert many == few, f"/ready read the data with {few} on an empty keyspace and {many} with 50,000 keys"
    assert sum(few.values()) <= 4, few


def test_postgres_down_is_not_ready_and_names_no_host_or_user(env):
    down = f"postgresql://pg_user_x9:pw_secret_x9@127.0.0.1:{free_port()}/db_x9?connect_timeout=1"
    client = create_app(config={**env, "DATABASE_URL": down}).test_client()
    r = client.get("/ready", base_url=f"http://127.0.0.1:{OPERATOR}")
    assert r.status_code == 503, r.get_data(as_text=True)
    body = r.get_json()
    assert body["status"] == "degraded" and body["checks"]["postgres"]["ok"] is False
    assert body["checks"]["broker"]["ok"] is True
    text = json.dumps(body)
    for secret in ("pg_user_x9", "pw_secret_x9", "db_x9", "127.0.0.1"):
        assert secret not in text, (secret, text)


def test_ready_answers_within_its_timeout_when_a_store_hangs(env):
    """A Redis that accepts and never answers: /ready reports it after READY_TIMEOUT (2 s, the
    default), rather than after the Redis client's own 5 s socket timeout per call."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue
    threading.Thread(target=accept, daemon=True).start()
    try:
        hang = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        client = create_app(config={**env, "SESSIONS_REDIS_URL": hang}).test_client()
        t0 = time.monotonic()
        r = client.get("/ready", base_url=f"http://127.0.0.1:{OPERATOR}")
        took = time.monotonic() - t0
        body = r.get_json()
        assert r.status_code == 200, body  # broker and PostgreSQL answer: ready, degraded
        assert body["status"] == "degraded" and body["checks"]["sessions_redis"]["ok"] is False
        assert "READY_TIMEOUT" in body["checks"]["sessions_redis"]["detail"]
        assert took < 3.5, f"/ready took {took:.1f}s with READY_TIMEOUT=2"
    finally:
        stop.set()
        silent.close()
        for c in held:
            c.close()

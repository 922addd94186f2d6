"""The shipped Procfile as an operator runs it: ``flask --app app migrate && honcho start``.

One real stack from the Procfile under honcho (web, the four workers with -E, beat, Flower) on a
Redis of its own (the workers consume the plain queue names, so no other test's db may be
shared), this run's PostgreSQL schema and ClickHouse 18.16 server, and a UFSE sink, then:
- honcho keeps running (its old ``release:`` line exited after the migration and honcho then
  stopped everything, about 4 s after start) and serves an event end to end: one session is
  delivered to the sink;
- Flower's ``/api/tasks`` lists each batch's ``events.persist`` with its outcome and size, a
  delivery UFSE refused for good (400) as a FAILURE with the dead letter's reason, one it
  refused for now (500, retry parked) as a RETRY with the reason, and no ``maintenance.sweep``
  (its events are off).
About 11-15 s on the 2-core machine, most of it the eight processes starting.
"""
from __future__ import annotations

import ast
import os
import signal
import socket
import time
import uuid

import psutil
import pytest
import requests

from devtools import ROOT, checks, procfile, servers
from devtools.keys import create_key
from devtools.net import free_port
from devtools.proc import Proc, pid_alive
from devtools.sink import Sink
from devtools.wait import until
from tests.e2e.conftest import SECRET

pytestmark = pytest.mark.e2e


def _env(tmp_path, redis_url: str, database_url: str, ch_url: str, sink: Sink) -> dict:
    (tmp_path / "empty.env").write_text("")
    (tmp_path / "prom").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVER_", "CELERY_", "PROMETHEUS_"))}
    env.update({
        "PATH": f"{procfile.venv_bin()}:{env.get('PATH', '/usr/bin:/bin')}", "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1", "OBSERVER_ENV_FILE": str(tmp_path / "empty.env"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "BEAT_SCHEDULE_FILE": str(tmp_path / "beat"),
        "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": database_url,
        "CLICKHOUSE_URL": ch_url, "UFSE_URL": sink.url + "ufse", "UFSE_SECRET": SECRET,
        "REDIS_KEY_PREFIX": f"honcho{uuid.uuid4().hex[:6]}:",
        # honcho hands each process type its own PORT from this base, web (the first line) first.
        "PORT": str(free_port()), "HOST": "127.0.0.1", "OPERATOR_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()), "FLOWER_ADDRESS": "127.0.0.1",
        "FLOWER_BASIC_AUTH": "ops:" + uuid.uuid4().hex,
        # One process per pool: eight Python processes already share the machine's two cores.
        "WEB_CONCURRENCY": "1", "EVENTS_CONCURRENCY": "1", "SESSIONS_CONCURRENCY": "1", "FORWARD_CONCURRENCY": "1",
        # SESSION_IDLE_TIMEOUT override: the session must go idle and be forwarded within the
        # test (default 1800 s); the sweep and the flush run often enough to see it in seconds.
        "SESSION_IDLE_TIMEOUT": "3", "SESSION_SWEEP_INTERVAL": "0.5", "EVENTS_FLUSH_INTERVAL": "0.2",
    })
    return env


def _post(api: str, key: str, session_id: str) -> None:
    event = {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
             "session_id": session_id, "url": "https://shop.test/cart", "metadata": {"button": "buy"}}
    r = requests.post(f"{api}/v1/events", json={"events": [event]}, headers={"Authorization": f"Bearer {key}"},
                      timeout=10)
    assert r.status_code == 202, r.text


class Flower:
    """Flower's API with the dashboard's credentials (``FLOWER_BASIC_AUTH``; /api/* takes them)."""

    def __init__(self, port: str, basic_auth: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        user, _, password = basic_auth.partition(":")
        self.auth = (user, password)

    def get(self, path: str, **params: str) -> dict:
        r = requests.get(f"{self.url}{path}", params=params, auth=self.auth, timeout=5)
        r.raise_for_status()
        return r.json()

    def tasks(self, name: str) -> list[dict]:
        return list(self.get("/api/tasks", taskname=name).values())


def test_honcho_runs_the_procfile_and_flower_shows_the_work(tmp_path, database_url, clickhouse_server):
    redis = servers.start_redis(tmp_path / "redis", appendonly=False)
    redis_url = redis.url
    sink = Sink(secret=SECRET).start()
    env = _env(tmp_path, redis_url, database_url, f"{clickhouse_server}/obs_honcho_{uuid.uuid4().hex[:8]}", sink)
    key = create_key(database_url, "shop")
    tag = uuid.uuid4().hex[:6]
    delivered, refused, later = f"honcho-ok-{tag}", f"honcho-400-{tag}", f"honcho-500-{tag}"
    # 400: permanent, dead-lettered at once; 500: a retry parked for later (5 s and more).
    sink.set_plan(by_webhook_id={f"shop:{refused}:1": [400], f"shop:{later}:1": [500]})
    # The documented command, as a shell runs it (exec: honcho is the process this test stops).
    honcho = Proc("honcho", ["sh", "-c", f"flask --app app migrate && exec {procfile.venv_bin() / 'honcho'} "
                                         f"start -f Procfile -e {tmp_path / 'empty.env'} --no-colour"],
                  env=env, cwd=ROOT, log_path=tmp_path / "honcho.log", stop_signals=((signal.SIGTERM, 30.0),))
    api, flower = f"http://127.0.0.1:{env['PORT']}", Flower(env["FLOWER_PORT"], env["FLOWER_BASIC_AUTH"])
    started = time.monotonic()
    honcho.start(wait=False)
    children: set[int] = set()
    try:
        ready = checks.http_ok(f"http://127.0.0.1:{env['OPERATOR_PORT']}/ready",
                               lambda d: d["checks"]["clickhouse"]["ok"])
        until(ready, "web /ready", timeout=120, proc=honcho)
        host = socket.gethostname()
        workers = {f"{q}@{host}" for q in ("events", "sessions", "forward", "maintenance")}
        # Flower has the workers' events (so it will see the tasks' too).
        until(lambda: workers <= {n for n, alive in flower.get("/api/workers", status="true").items() if alive},
              "Flower seeing every worker", timeout=90, proc=honcho)
        children = {c.pid for c in psutil.Process(honcho.pid).children(recursive=True)}
        _post(api, key, delivered)
        _post(api, key, refused)
        _post(api, key, later)
        got = sink.wait_for(lambda rs: {r["headers"].get("webhook-id") for r in rs}
                            >= {f"shop:{delivered}:1", f"shop:{refused}:1", f"shop:{later}:1"}, timeout=60)
        ok = [r for r in got if r["headers"].get("webhook-id") == f"shop:{delivered}:1"]
        assert ok[0]["status"] == 200 and ok[0]["signature_valid"], ok
        # The old `release:` line exited about 4 s after start and honcho then stopped everything.
        time.sleep(max(0.0, 6 - (time.monotonic() - started)))
        assert honcho.alive(), honcho.log_tail(40)

        def persisted() -> list[dict]:
            done = [t for t in flower.tasks("events.persist") if t["state"] == "SUCCESS"]
            return done if len(done) >= 3 else []
        until(persisted, "three events.persist tasks in Flower", timeout=30, proc=honcho)
        persist = persisted()
        results = [ast.literal_eval(t["result"]) for t in persist]
        assert all(r["outcome"] == "stored" and r["events"] == 1 and r["stored"] == 1 and r["flush"] >= 1
                   for r in results), results
        assert all(t["args"].startswith("[<batch ") and t["received"] and t["started"] and t["runtime"] is not None
                   for t in persist), persist

        def dead() -> list[dict]:
            return [t for t in flower.tasks("forward.deliver") if t["state"] == "FAILURE"]
        until(dead, "a dead-lettered forward.deliver in Flower", timeout=30, proc=honcho)
        failure = dead()[0]
        assert "DeliveryDeadLettered" in failure["exception"] and "status=400" in failure["exception"], failure
        assert refused in failure["args"] or refused in failure["kwargs"], failure
        until(lambda: any(t["state"] == "SUCCESS" and t["result"] == "'delivered'"
                          for t in flower.tasks("forward.deliver")), "the delivered forward.deliver in Flower",
              timeout=30, proc=honcho)
        # UFSE's 500: the retry is parked (the sweep re-publishes it when due), so this message
        # ends as RETRY with the reason, acked, not re-sent by Celery.
        until(lambda: any(t["state"] == "RETRY" and later in t["args"] and "retrying" in (t["exception"] or "")
                          for t in flower.tasks("forward.deliver")), "the parked forward.deliver as RETRY in Flower",
              timeout=30, proc=honcho)
        assert flower.tasks("maintenance.sweep") == [], "the 5-second sweep is kept out of Flower"
        assert honcho.alive(), honcho.log_tail(40)
    finally:
        sink.stop()
        if honcho.alive():
            children |= {c.pid for c in psutil.Process(honcho.pid).children(recursive=True)}
        honcho.kill_group(signal.SIGTERM)  # honcho's own group: it stops its children (SIGKILL after 5 s)
        try:
            honcho.proc.wait(30)
        finally:
            honcho.stop()
            for pid in children:  # whatever honcho left (it starts each child in its own session)
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            redis.stop()

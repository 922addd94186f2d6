"""A key revoked with the CLI is refused by every web process within KEY_CACHE_TTL.

Two real gunicorn processes (one worker each, so two independent key caches) share Redis and
PostgreSQL; both accept the key (warming their caches), `flask --app app keys revoke ID` runs
in its own process, and each web process must answer 401 within TTL + 1 s.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import requests

from app.keys.store import KeyStore
from devtools import ROOT
from devtools.net import free_port

BIN = ROOT / ".venv" / "bin"

TTL = 1.0


def _event():
    return {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
            "session_id": "rev-1", "url": "https://shop.test/"}


class Web:
    """One gunicorn process, stopped by its PID (process group) on exit."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.env = {**env, "PORT": str(self.port), "OPERATOR_PORT": str(free_port())}
        with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"),
                                          "app:create_app()"], cwd=log.parent, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_up(self, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn not up: {self.log.read_text()[-3000:]}")

    def post(self, key: str) -> int:
        return requests.post(f"{self.url}/v1/events", json={"events": [_event()]},
                             headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def test_revocation_reaches_every_web_process_within_the_ttl(redis_url, database_url, tmp_path):
    (tmp_path / "empty.env").write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOST": "127.0.0.1", "OBSERVER_ENV_FILE": str(tmp_path / "empty.env"),
           "DATABASE_URL": database_url, "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url,
           "REDIS_KEY_PREFIX": f"rev{uuid.uuid4().hex[:6]}:", "KEY_CACHE_TTL": str(TTL), "WEB_CONCURRENCY": "1",
           "WEB_THREADS": "2", "RATE_LIMIT_DEFAULT": "1000/second", "RATE_LIMIT_PER_IP": "1000/second",
           "LOG_LEVEL": "WARNING"}
    key_id, key = KeyStore(database_url).create("revoke-test")
    other_id, other = KeyStore(database_url).create("revoke-test")
    with ExitStack() as stack:
        webs = []
        for i in range(2):
            w = Web(env, tmp_path / f"web{i}.log")
            stack.callback(w.stop)
            webs.append(w)
        for w in webs:
            w.wait_up()
        for w in webs:  # warm both caches
            assert w.post(key) == 202
            assert w.post(other) == 202

        # Each process is polled without pause from before the revoke until it refuses the key,
        # so its cache entry is as fresh as possible when the UPDATE commits.
        results: dict[int, dict] = {}

        def poll(i: int, w: Web) -> None:
            last_ok = first_401 = None
            statuses = set()
            give_up = time.monotonic() + 60
            while time.monotonic() < give_up:
                status = w.post(key)
                statuses.add(status)
                now = time.monotonic()
                if status == 202:
                    last_ok = now
                elif status == 401:
                    first_401 = now
                    break
                time.sleep(0.02)
            results[i] = {"last_202": last_ok, "first_401": first_401, "statuses": statuses}

        pollers = [threading.Thread(target=poll, args=(i, w)) for i, w in enumerate(webs)]
        for t in pollers:
            t.start()
        time.sleep(0.2)
        out = subprocess.run([str(BIN / "flask"), "--app", "app", "keys", "revoke", str(key_id)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        revoked_at = time.monotonic()  # the UPDATE was committed before the CLI exited
        for t in pollers:
            t.join(timeout=70)
        assert out.returncode == 0, out.stderr
        assert f"revoked key {key_id}" in out.stdout
        for i, res in results.items():
            assert res["statuses"] <= {202, 401}, res
            assert res["first_401"] is not None, f"web {i} still accepts the revoked key"
        flipped = {i: res["first_401"] - revoked_at for i, res in results.items()}
        assert all(t <= TTL + 1 for t in flipped.values()), flipped
        # the caches were really warm: each process accepted the key shortly before the commit
        assert all(res["last_202"] is not None and res["last_202"] > revoked_at - 5
                   for res in results.values()), results
        # stays refused; the other key of the same project is unaffected
        for w in webs:
            assert w.post(key) == 401
            assert w.post(other) == 202
        listing = subprocess.run([str(BIN / "flask"), "--app", "app", "keys", "list"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=60).stdout
        line = next(ln for ln in listing.splitlines() if ln.startswith(f"{key_id}\t"))
        assert "revoked" in line
    print("revocation seen " + ", ".join(f"{t:+.2f}s" for t in flipped.values()) + " after the CLI exited; last 202 "
          + ", ".join(f"{r['last_202'] - revoked_at:+.2f}s" for r in results.values()) + f" (KEY_CACHE_TTL={TTL})")

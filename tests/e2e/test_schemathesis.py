"""scripts/schemathesis_run.py against a real gunicorn web process (a small run; the full one,
1,000+ requests, is `.venv/bin/python scripts/schemathesis_run.py --url ... --key ...`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests

from app.keys.store import KeyStore
from tests.e2e.stack import BIN, ROOT, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def web(redis_url, database_url, tmp_path):
    """One gunicorn (no workers: the broker is a real Redis db that just holds the messages)."""
    (tmp_path / "empty.env").write_text("")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOST": "127.0.0.1", "PORT": str(port),
           "OBSERVER_ENV_FILE": str(tmp_path / "empty.env"), "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "CELERY_BROKER_URL": redis_url, "REDIS_KEY_PREFIX": f"st{uuid.uuid4().hex[:6]}:", "WEB_CONCURRENCY": "2",
           "RATE_LIMIT_DEFAULT": "100000/second", "RATE_LIMIT_PER_IP": "100000/second", "LOG_LEVEL": "WARNING"}
    log = tmp_path / "web.log"
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "app:create_app()"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"gunicorn not up: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url, KeyStore(database_url).create("fuzz")[1], log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_schemathesis_finds_no_5xx_and_no_contract_break(web):
    url, key, log = web
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "schemathesis_run.py"), "--url", url, "--key", key,
                          "--max-examples", "40", "--min-requests", "100", "--seed", "12345"],
                         capture_output=True, text=True, timeout=120)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report + "\n--- web log ---\n" + log.read_text()[-3000:]
    assert "5xx answers: 0" in out.stdout and "failures: 0 " in out.stdout, report
    total = int(out.stdout.split("total requests: ")[1].split()[0])
    assert total >= 100, report
    assert "POST /v1/events=" in out.stdout and "OPTIONS /v1/events=" in out.stdout
    print(out.stdout)

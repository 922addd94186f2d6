"""An over-limit body sent with its Content-Length gets a 413 the client can read, through gunicorn.

Answered before the body is read, a server closes a socket with unread data (above about 2 MiB)
and the client sees a connection reset instead of the 413. Real gunicorn (the
Procfile's config), a real client socket, the default limits (MAX_BODY_BYTES 1 MiB,
MAX_DRAIN 16 MiB in app/ingest/body.py).
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gunicorn_app(redis_url, database_url, tmp_path):
    port = _free_port()
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "OPERATOR_PORT": str(_free_port()),
           "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "OBSERVER_ENV_FILE": str(empty), "WEB_CONCURRENCY": "1", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(tmp_path / "gunicorn.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"),
                                 "app:create_app()"],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text())
    yield port
    proc.terminate()
    proc.wait(30)


@pytest.mark.parametrize("size_mib", [3, 12])
def test_over_limit_body_gets_a_readable_413(gunicorn_app, size_mib):
    body = b'{"events":[' + b" " * (size_mib * 1024 * 1024) + b"]}"
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn_app, timeout=30)
    started = time.monotonic()
    try:
        conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        status, payload = resp.status, resp.read()
    except (ConnectionResetError, BrokenPipeError) as exc:
        pytest.fail(f"{size_mib} MiB body: {type(exc).__name__} instead of a 413")
    print(f"{size_mib} MiB over-limit body: HTTP {status} in {time.monotonic() - started:.2f}s")
    assert status == 413
    assert json.loads(payload)["error"]["code"] == "payload_too_large"

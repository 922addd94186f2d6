"""`make run` as a newcomer meets it: scripts/devstack for real, on a temporary var/ and free ports.

One stack (cold: initdb, chDB, a new key) is started and then: a second start on the same var/
refuses, naming it, and changes nothing; the demo server answers the page and the bundle and
404 for everything else of sdk/; 20 idle seconds (one event sent) print its UFSE delivery and
nothing else but warnings and errors, while every process logs in full to var/log/; after a
kill -9 of the stack, the next start stops what it left behind and comes back on the same ports
with the same key. About 35-60 s.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from devtools import ROOT, console
from devtools.net import free_port
from devtools.proc import Proc, children_of, pid_alive
from devtools.stack import clean_environ
from devtools.wait import until

BANNER_END = "=" * 72
PORTS = ("PORT", "OPERATOR_PORT", "DEVSTACK_REDIS_PORT", "DEVSTACK_POSTGRES_PORT", "DEVSTACK_SINK_PORT",
         "DEVSTACK_FLOWER_PORT", "DEVSTACK_DEMO_PORT")


def _devstack(env: dict, log) -> Proc:
    """scripts/devstack's Python as a supervised process; its terminal output goes to ``log``."""
    return Proc("devstack", [sys.executable, "-m", "devtools.devstack"], env=env, cwd=ROOT,
                log_path=log, stop_signals=((signal.SIGINT, 40.0),))


def _terminal(p: Proc) -> list[str]:
    """What the user's terminal shows, one entry per line (the log prefix taken off)."""
    return [line.split(" | ", 1)[1] if " | " in line else line for line in p.log_text().splitlines()]


def _after_banner(p: Proc) -> list[str]:
    lines = _terminal(p)
    ends = [i for i, line in enumerate(lines) if line == BANNER_END]
    return lines[ends[1] + 1:] if len(ends) >= 2 else []


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 -- our own local server
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _post_event(api: str, key: str) -> None:
    body = {"events": [{"event_id": str(uuid.uuid4()), "type": "custom", "name": "hello",
                        "timestamp": int(time.time() * 1000), "session_id": "devstack-test",
                        "url": "http://127.0.0.1/", "metadata": {}}]}
    req = urllib.request.Request(f"{api}/v1/events", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 -- our own local server
        assert r.status == 202


def _ready(p: Proc, timeout: float = 120) -> str:
    """Wait for the banner; return the dev key it printed."""
    until(lambda: _terminal(p).count(BANNER_END) >= 2, "the devstack banner", timeout=timeout, proc=p)
    return next(x.split("=", 1)[1] for x in _terminal(p) if x.startswith("OBSERVER_API_KEY="))


def test_make_run_refuses_a_second_start_serves_only_the_demo_and_stays_quiet(tmp_path):
    if not (ROOT / "sdk" / "dist" / "observer.min.js").exists():
        pytest.fail("sdk/dist/observer.min.js is not built: make sdk (make test builds it)")
    var = tmp_path / "var"
    env = clean_environ(inherit_settings=False)
    for name in ("REDIS_URL", "DATABASE_URL", "CLICKHOUSE_URL", "UFSE_URL", "UFSE_SECRET",
                 "FLOWER_BASIC_AUTH", "DEVSTACK_VAR", *PORTS):
        env.pop(name, None)
    env.update({name: str(free_port()) for name in PORTS}, DEVSTACK_VAR=str(var), DEVSTACK_GRACE="5",
               SESSION_IDLE_TIMEOUT="3")
    api, demo = f"http://127.0.0.1:{env['PORT']}", f"http://127.0.0.1:{env['DEVSTACK_DEMO_PORT']}"
    ops = f"http://127.0.0.1:{env['OPERATOR_PORT']}"  # /ready and /metrics: the operator listener

    first = _devstack(env, tmp_path / "first.out").start()
    try:
        key = _ready(first)
        banner = "\n".join(_terminal(first))
        assert re.search(r"Observer is running: ready in \d+\.\d s", banner), banner
        assert f"Logs     {var / 'log'}/" in banner
        kids = children_of(first.pid)
        state = (var / "devstack.json").read_text()

        # A second start on the same var/ refuses, names the running one, and touches nothing.
        second = subprocess.run([sys.executable, "-m", "devtools.devstack"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert f"devstack pid {first.pid}" in second.stderr and f"API {api}" in second.stderr, second.stderr
        assert "Nothing was started or stopped" in second.stderr
        assert children_of(first.pid) == kids and all(pid_alive(k) for k in kids)
        assert (var / "devstack.json").read_text() == state
        assert (var / "dev_api_key").read_text().strip() == key
        assert _status(f"{ops}/ready") == 200

        # The demo server: the page and what it loads, nothing else of sdk/.
        assert _status(f"{demo}/demo/index.html?key={key}") == 200
        assert _status(f"{demo}/dist/observer.min.js") == 200
        for path in ("/node_modules/", "/package.json", "/src/global.ts", "/dist/", "/demo/../package.json"):
            assert _status(demo + path) == 404, path

        # Idle (but for one event): the terminal shows its delivery and nothing else but
        # warnings and errors; every process logs in full to var/log/.
        seen = len(_after_banner(first))
        owner_log = (var / "log" / "owner.log").stat().st_size
        _post_event(api, key)
        time.sleep(20)
        idle = [re.match(r"\d\d:\d\d:\d\d (\S+)\s+\| (.*)", x) for x in _after_banner(first)[seen:]]
        assert all(m and (console.important(m[2]) or m[1] == "sink" and m[2].startswith("UFSE <-"))
                   for m in idle), idle
        assert any(m[1] == "sink" and "demo/devstack-test v1: 1 events" in m[2] for m in idle), idle
        assert (var / "log" / "owner.log").stat().st_size > owner_log, "the worker's log is in var/log/"
        for name in ("web", "owner", "beat", "flower", "sink", "redis", "postgres", "demo", "migrate"):
            assert (var / "log" / f"{name}.log").stat().st_size > 0, name

        # kill -9 of the stack: the next start stops what it left and comes back as it was.
        first.kill9()
        again = _devstack(env, tmp_path / "again.out").start()
        try:
            assert _ready(again) == key
            assert _status(f"{ops}/ready") == 200
            assert not any(pid_alive(k) for k in kids)
            assert json.loads((var / "devstack.json").read_text())["pid"] == again.pid
        finally:
            assert again.stop() == 0, again.log_tail(40)
        assert not (var / "devstack.json").exists()
    finally:
        first.stop()


@pytest.mark.parametrize(("line", "shown"), [
    ('{"ts": "t", "level": "info", "logger": "celery.beat", "msg": "Scheduler: Sending due task"}', False),
    ('{"ts": "t", "level": "warning", "logger": "celery.worker.consumer", "msg": "Connection to broker lost"}', True),
    ('{"ts": "t", "level": "error", "logger": "tasks.forward", "msg": "x", "exc": "Traceback ..."}', True),
    ("[2026-12-07 13:49:10 +0000] [15409] [INFO] Booting worker with pid: 15412", False),
    ("[2026-12-07 13:49:10 +0000] [15409] [ERROR] Exception in worker process", True),
    ("[I 261207 13:49:12 command:177] Visit me at http://127.0.0.1:5555", False),
    ("[E 261207 13:50:19 events:228] Failed to capture events", True),
    ("[2026-12-07 13:49:12,000: WARNING/MainProcess] consumer: Connection to broker lost", True),
    ("/x/celery/platforms.py:841: SecurityWarning: You're running the worker with superuser privileges", True),
    ("Traceback (most recent call last):", True),
    ('  File "/x/app/factory.py", line 3, in create_app', True),
    ("psycopg2.OperationalError: connection refused", True),
    (" -------------- owner@vm v5.6.3 (recovery)", False),
    ("                .> events           exchange=events(direct) key=events", False),
])
def test_the_terminal_keeps_warnings_and_errors_only(line, shown):
    assert console.important(line) is shown

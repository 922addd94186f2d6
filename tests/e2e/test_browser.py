"""A real Chromium page with the SDK against the real pipeline (gunicorn + Celery + Redis + PG + ClickHouse).

The page, clicks, typing, fetch/XHR and closing are driven by sdk/test/browser/run.mjs
(playwright-core on the system Chromium); this test starts the pipeline, runs a scenario and
checks what reached ClickHouse.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.e2e.stack import ROOT, free_port

pytestmark = pytest.mark.e2e
SDK = ROOT / "sdk"


@pytest.fixture(scope="module", autouse=True)
def _chromium():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import services

    services.ensure_chromium()
    if not (SDK / "dist" / "observer.min.js").exists() or not (SDK / "node_modules" / "playwright-core").exists():
        pytest.fail("the SDK is not built: run `make sdk` (make test does)")


@pytest.fixture
def browser_stack(make_stack, database_url):
    stack = make_stack(engine="server")
    page_port = free_port()
    from app.keys.store import KeyStore

    _id, key = KeyStore(database_url).create("web", origins=[f"http://127.0.0.1:{page_port}"])
    stack.browser_key, stack.page_port = key, page_port
    return stack


def _run(stack, scenario: str) -> dict:
    env = {**os.environ, "OBSERVER_ENDPOINT": stack.url, "OBSERVER_API_KEY": stack.browser_key,
           "SCENARIO": scenario, "OBSERVER_PAGE_PORT": str(stack.page_port)}
    proc = subprocess.run(["node", "test/browser/run.mjs"], cwd=SDK, env=env, capture_output=True, text=True, timeout=180)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from run.mjs (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(lines[-1])
    assert proc.returncode == 0 and result["ok"], json.dumps(result, indent=1) + "\n" + proc.stderr + stack.logs()
    return result


def _events(stack, predicate_sql: str = "1") -> list[tuple]:
    from app.storage.clickhouse import get_clickhouse

    ch = get_clickhouse(stack.ch_url)
    return ch.execute(f"SELECT event_id, type, session_id, url, name, metadata, anonymous_id FROM {ch.database}.events FINAL "
                      f"WHERE project = 'web' AND {predicate_sql}")


def _wait_for_ids(stack, ids: set[str], timeout: float = 30) -> dict[str, tuple]:
    deadline = time.time() + timeout
    rows: dict[str, tuple] = {}
    while time.time() < deadline:
        rows = {r[0]: r for r in _events(stack)}
        if ids <= set(rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"missing in ClickHouse: {sorted(ids - set(rows))}\n{stack.logs()}")


def test_real_browser_main_scenario(browser_stack):
    result = _run(browser_stack, "main")
    expected = {e["event_id"]: e for e in result["expected_events"]}
    rows = _wait_for_ids(browser_stack, set(expected))
    for event_id, e in expected.items():
        assert rows[event_id][1] == e["type"]
        assert rows[event_id][2] == result["session_id"]
    types = {r[1] for r in rows.values()}
    assert {"page_view", "click", "rage_click", "error", "network", "navigation"} <= types, types
    assert set(result["events_before_close"]) <= set(rows), "events sent on page close did not arrive"
    dump = json.dumps([list(r) for r in _events(browser_stack)])
    for typed in result["typed_values"]:
        assert typed not in dump
    assert result["page_fetch_results"]["unchanged"]


def test_real_browser_backs_off_then_delivers(browser_stack):
    result = _run(browser_stack, "backoff")
    statuses = [r["status"] for r in result["requests"]]
    print(f"backoff: statuses {statuses}, gaps ms {result['gaps_ms']}")
    assert 503 in statuses and 429 in statuses and statuses[-1] == 202, statuses
    assert all(g >= 500 for g in result["gaps_ms"][:3]), result["gaps_ms"]  # Retry-After honoured
    _wait_for_ids(browser_stack, set(result["event_ids"]))


def test_shutdown_restores_globals_with_a_later_wrapper(browser_stack):
    result = _run(browser_stack, "shutdown")  # _run fails unless every check of the scenario passed
    assert not result["leftover_listeners"], result["leftover_listeners"]
    assert all(result["checks"].values()) and result["checks"], result["checks"]

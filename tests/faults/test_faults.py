"""Fault injection on the real pipeline: killed and stopped workers, ClickHouse and UFSE outages.

Each test drives a real stack (gunicorn + Celery + Redis + PostgreSQL + ClickHouse 18.16 + sink)
and checks that every accepted event still reaches ClickHouse and UFSE, exactly once per count.
"""
from __future__ import annotations

import signal
import time
import uuid
from urllib.parse import urlparse

import pytest
import requests

from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.e2e


def _post(stack, sid, n=3):
    events = [{"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000) - i,
               "session_id": sid, "url": "https://f.test/", "metadata": {"i": i}} for i in range(n)]
    r = requests.post(f"{stack.url}/v1/events", json={"events": events},
                      headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=10)
    assert r.status_code == 202, r.text
    return [e["event_id"] for e in events]


def _delivered(stack, sid, timeout=60):
    wid = f"{stack.project}:{sid}:1"
    try:
        got = stack.sink.wait_for(lambda ds: any(d["headers"].get("webhook-id") == wid and d["status"] == 200 for d in ds), timeout)
    except TimeoutError:
        raise AssertionError(f"{wid} not delivered\n{stack.logs(80)}")
    return [d for d in got if d["headers"].get("webhook-id") == wid and d["status"] == 200][-1]["body"]


@pytest.fixture
def stack_behind_proxy(make_stack, clickhouse_server):
    """Factory: a stack whose ClickHouse is reached through a TcpProxy; returns (stack, proxy)."""
    u = urlparse(clickhouse_server)
    proxies: list[TcpProxy] = []

    def factory(**env):
        proxy = TcpProxy(u.hostname, u.port)
        proxies.append(proxy)
        db = f"obs_fault_{uuid.uuid4().hex[:8]}"
        stack = make_stack(CLICKHOUSE_URL=f"clickhouse://default:@127.0.0.1:{proxy.port}/{db}", **env)
        stack.ch_url = f"{clickhouse_server}/{db}"  # the test itself reads ClickHouse directly
        return stack, proxy

    yield factory
    for proxy in proxies:
        proxy.close()


def test_worker_killed_mid_batch_redelivers(make_stack):
    # Messages sit unacked in celery-batches' buffer for 4 s; SIGKILL the events worker then.
    stack = make_stack(EVENTS_FLUSH_INTERVAL=4, EVENTS_FLUSH_EVERY=1000, BROKER_VISIBILITY_TIMEOUT=6)
    sid = f"kill-{uuid.uuid4().hex[:6]}"
    ids = _post(stack, sid, 5) + _post(stack, sid, 5)
    time.sleep(1)
    stack.signal("events", signal.SIGKILL)
    stack.respawn("events")
    body = _delivered(stack, sid, timeout=90)
    assert sorted(e["event_id"] for e in body["events"]) == sorted(ids)
    assert body["session"]["event_count"] == 10


def test_warm_shutdown_requeues_buffered_work(make_stack):
    stack = make_stack(EVENTS_FLUSH_INTERVAL=4, EVENTS_FLUSH_EVERY=1000)
    sid = f"term-{uuid.uuid4().hex[:6]}"
    ids = _post(stack, sid, 4)
    time.sleep(1)
    assert stack.signal("events", signal.SIGTERM) is not None  # warm shutdown ends by itself
    stack.respawn("events")
    body = _delivered(stack, sid)
    assert sorted(e["event_id"] for e in body["events"]) == sorted(ids)


def test_clickhouse_outage_loses_nothing(stack_behind_proxy):
    stack, proxy = stack_behind_proxy(EVENTS_MAX_ATTEMPTS=20)
    proxy.down()
    sid = f"chdown-{uuid.uuid4().hex[:6]}"
    ids = _post(stack, sid, 3) + _post(stack, sid, 2)  # the API does not need ClickHouse
    ready = requests.get(f"{stack.url}/ready", timeout=10).json()
    assert ready["status"] == "ok" and ready["checks"]["clickhouse"]["ok"] is False
    time.sleep(4)  # inserts fail and are re-published with backoff meanwhile
    proxy.up()
    body = _delivered(stack, sid, timeout=90)
    assert sorted(e["event_id"] for e in body["events"]) == sorted(ids)
    from app.storage.clickhouse import get_clickhouse

    ch = get_clickhouse(stack.ch_url)
    rows = ch.execute(f"SELECT uniqExact(event_id) FROM {ch.database}.events WHERE session_id = %(s)s", {"s": sid})
    assert rows[0][0] == 5


def test_ufse_unreachable_then_back(make_stack):
    stack = make_stack(FORWARD_MAX_RETRIES=20)
    port = urlparse(stack.sink.url).port
    stack.sink.stop()  # connection refused from now on
    sid = f"ufse-{uuid.uuid4().hex[:6]}"
    ids = _post(stack, sid, 2)
    time.sleep(6)  # idle timeout (3 s) passes, first attempts fail
    import sys

    from tests.e2e.stack import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    from ufse_sink import Sink

    from tests.e2e.conftest import SECRET

    stack.sink = Sink(port=port, secret=SECRET).start()
    body = _delivered(stack, sid, timeout=60)
    assert sorted(e["event_id"] for e in body["events"]) == sorted(ids)


def test_web_sigterm_under_load_keeps_every_accepted_event(make_stack):
    """gunicorn's warm shutdown: every request answered 202 had its batch published and stored."""
    import threading

    from app.storage.clickhouse import get_clickhouse

    stack = make_stack()
    accepted: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        session = requests.Session()
        for i in range(400):  # bounded; ends early once the server is gone
            if stop.is_set():
                return
            ev = {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
                  "session_id": f"sigterm-{n}", "url": "https://f.test/", "metadata": {"i": i}}
            try:
                r = session.post(f"{stack.url}/v1/events", json={"events": [ev]},
                                 headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=5)
            except requests.RequestException:
                return
            if r.status_code == 202:
                accepted.append(ev["event_id"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert stack.signal("web", signal.SIGTERM, wait=40) is not None
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(accepted) > 10
    ch = get_clickhouse(stack.ch_url)
    deadline = time.time() + 30
    stored: set = set()
    while time.time() < deadline:
        stored = {r[0] for r in ch.execute(f"SELECT event_id FROM {ch.database}.events WHERE session_id LIKE 'sigterm-%%'")}
        if set(accepted) <= stored:
            break
        time.sleep(0.5)
    assert set(accepted) <= stored, f"{len(set(accepted) - stored)} accepted events never stored"


def test_long_clickhouse_outage_parks_batches_then_replays(stack_behind_proxy):
    """Past EVENTS_MAX_ATTEMPTS a batch becomes a poison_batch dead letter; `dlq replay` stores it."""
    stack, proxy = stack_behind_proxy(EVENTS_MAX_ATTEMPTS=2)
    proxy.down()
    sid = f"parked-{uuid.uuid4().hex[:6]}"
    ids = _post(stack, sid, 3)
    deadline = time.time() + 30
    while time.time() < deadline and "1 dead letter(s)" not in stack.flask("dlq", "list", "--kind", "poison_batch").stdout:
        time.sleep(0.5)
    listing = stack.flask("dlq", "list", "--kind", "poison_batch").stdout
    assert "1 dead letter(s)" in listing, listing + stack.logs()
    proxy.up()
    assert "1 replay(s) enqueued" in stack.flask("dlq", "replay", "--all").stdout
    body = _delivered(stack, sid, timeout=60)
    assert sorted(e["event_id"] for e in body["events"]) == sorted(ids)
    assert "0 dead letter(s)" in stack.flask("dlq", "list").stdout

"""End to end over real processes: HTTP -> gunicorn -> Celery -> ClickHouse + Redis -> beat -> UFSE.

Runs on the ClickHouse 18.16 server (three workers, one per queue) and on chDB (one owning
thread-pool worker), and with RabbitMQ as the broker when one answers on 5672.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
import standardwebhooks

from devtools import servers as services
from devtools.wait import until
from tests.e2e.conftest import SECRET

pytestmark = pytest.mark.e2e


def _variants():
    v = [("server", "redis"), ("chdb", "redis")]
    if services.rabbitmq_available():
        v.append(("server", "amqp"))
    return v


@pytest.fixture(params=_variants(), ids=lambda p: f"{p[0]}-{p[1]}")
def stack(request, make_stack):
    engine, broker = request.param
    extra = {}
    if engine == "chdb":  # one worker only: it can serve its own /metrics on a fixed port
        from devtools.net import free_port

        extra["WORKER_METRICS_PORT"] = free_port()
    # RETRY_TIME_SCALE=0.01 compresses the UFSE retry schedule (5 s, 5 min, ...) to 0.05 s, 3 s, ...
    # so the 500, 500, 200 path below finishes in seconds; the schedule itself is tested at its
    # defaults in tests/unit/events/test_flush.py and by scripts/faults.
    extra["RETRY_TIME_SCALE"] = "0.01"
    s = make_stack(engine=engine, broker=broker, **extra)
    s.worker_metrics_port = extra.get("WORKER_METRICS_PORT")
    return s


def _event(sid, type_="click", ts=None, **extra):
    e = {"event_id": str(uuid.uuid4()), "type": type_, "timestamp": ts or int(time.time() * 1000), "session_id": sid,
         "url": "https://shop.test/cart", "metadata": {"button": "buy", "price": 12.5, "tags": ["a", "b"]}}
    e.update(extra)
    return e


def _post(stack, events, **headers):
    return requests.post(f"{stack.url}/v1/events", json={"events": events},
                         headers={"Authorization": f"Bearer {stack.api_key}", **headers}, timeout=10)


def _deliveries(stack, webhook_id):
    return [d for d in stack.sink.snapshot() if d["headers"].get("webhook-id") == webhook_id]


def _wait_delivered(stack, webhook_id, timeout=60):
    try:
        stack.sink.wait_for(lambda got: any(d["headers"].get("webhook-id") == webhook_id and d["status"] == 200
                                            for d in got), timeout)
    except TimeoutError:
        seen = [d["headers"].get("webhook-id") for d in stack.sink.snapshot()]
        raise AssertionError(f"{webhook_id} not delivered; got {seen}\n{stack.logs()}") from None
    return _deliveries(stack, webhook_id)


def _ch_rows(stack, sql):
    from app.storage.clickhouse.client import get_clickhouse

    if stack.engine == "chdb":
        return None  # chDB is owned by the worker process; checked through UFSE payloads instead
    return get_clickhouse(stack.ch_url).execute(sql.format(db=get_clickhouse(stack.ch_url).database))


def test_pipeline_end_to_end(stack):
    run = uuid.uuid4().hex[:6]
    a, b, c, d = (f"{x}-{run}" for x in "abcd")
    stack.sink.set_plan(by_webhook_id={f"shop:{c}:1": [500, 500], f"shop:{d}:1": [400]})
    t0 = int(time.time() * 1000) - 5000
    batch_a = [_event(a, "page_view", t0 + 1), _event(a, "click", t0 + 123, metadata={"deep": {"x": [1, {"y": "é"}]}}),
               _event(a, "custom", t0 + 7, name="signup")]
    r1 = _post(stack, batch_a, **{"X-Request-ID": f"req-{run}-1"})
    assert r1.status_code == 202 and r1.json()["accepted"] == 3, r1.text
    assert r1.headers["X-Request-ID"] == f"req-{run}-1"
    r2 = _post(stack, batch_a)  # the same batch posted twice changes nothing downstream
    assert r2.status_code == 202
    bad = _post(stack, [_event(b), {"event_id": "nope", "type": "click"}])
    assert bad.status_code == 202 and bad.json()["accepted"] == 1 and bad.json()["rejected"][0]["index"] == 1
    ev_c = _event(c, "error", metadata={"message": "boom"})
    assert _post(stack, [ev_c]).status_code == 202
    assert _post(stack, [_event(d)]).status_code == 202

    got_a = _wait_delivered(stack, f"shop:{a}:1")
    body = got_a[-1]["body"]
    assert [e["event_id"] for e in body["events"]] == [batch_a[0]["event_id"], batch_a[2]["event_id"],
                                                       batch_a[1]["event_id"]]
    assert body["events"][2]["metadata"] == {"deep": {"x": [1, {"y": "é"}]}}
    assert body["events"][2]["timestamp"].endswith(f".{(t0 + 123) % 1000:03d}Z")
    assert body["session"]["event_count"] == 3
    assert body["session"]["counts"] == {"page_view": 1, "click": 1, "custom": 1}
    # The batch was posted twice: the session names the request whose copy was counted first, and on
    # RabbitMQ two workers may take the copies in either order (the other is a duplicate).
    assert body["session"]["request_ids"] in ([f"req-{run}-1"], [r2.headers["X-Request-ID"]]), body["session"]
    hdrs = got_a[-1]["headers"]
    assert hdrs["x-request-id"]
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    signed = {k: hdrs[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    standardwebhooks.Webhook(SECRET).verify(raw, signed)
    assert all(d["signature_valid"] for d in stack.sink.snapshot())

    got_c = _wait_delivered(stack, f"shop:{c}:1")
    assert [d["status"] for d in got_c] == [500, 500, 200]
    # signed afresh on each attempt: every signature carries that attempt's own timestamp
    assert all(abs(int(x["headers"]["webhook-timestamp"]) - x["received_at"]) <= 2 and x["signature_valid"]
               for x in got_c)

    _wait_delivered(stack, f"shop:{b}:1")
    # d answered 400: dead-lettered, then replayed by the CLI under the same webhook-id
    until(lambda: "1 dead letter" in stack.flask("dlq", "list").stdout, "a dead letter", timeout=30, raises=False)
    listing = stack.flask("dlq", "list").stdout
    assert f"shop:{d}:1" in listing, listing + stack.logs()
    assert "replay(s) enqueued" in stack.flask("dlq", "replay", "--all").stdout
    got_d = _wait_delivered(stack, f"shop:{d}:1")
    assert [x["status"] for x in got_d] == [400, 200]
    assert "0 dead letter(s)" in stack.flask("dlq", "list").stdout

    # late events start version 2 of session a
    late = _event(a, "click")
    assert _post(stack, [late]).status_code == 202
    got_a2 = _wait_delivered(stack, f"shop:{a}:2")
    assert [e["event_id"] for e in got_a2[-1]["body"]["events"]] == [late["event_id"]]

    # the duplicate post left every count unchanged; ClickHouse has every accepted event
    assert len([x for x in _deliveries(stack, f"shop:{a}:1") if x["status"] == 200]) == 1
    rows = _ch_rows(stack, "SELECT event_id, ts_ms, metadata FROM {db}.events FINAL WHERE project = 'shop'")
    if rows is not None:
        by_id = {r[0]: r for r in rows}
        for e in batch_a + [late]:
            assert by_id[e["event_id"]][1] == e["timestamp"]
            assert json.loads(by_id[e["event_id"]][2]) == e["metadata"]
        sql = "SELECT uniqExact(event_id), count() FROM {db}.events FINAL WHERE session_id = '" + a + "'"
        assert _ch_rows(stack, sql)[0] == (4, 4)
        want = [(a, 1, 3, "delivered"), (a, 2, 1, "delivered")]
        sql = ("SELECT session_id, version, event_count, status FROM {db}.sessions FINAL "
               "WHERE session_id = '" + a + "' ORDER BY version")
        # the row is written just after UFSE's 200
        until(lambda: _ch_rows(stack, sql) == want, "sessions rows", timeout=10, raises=False)
        assert _ch_rows(stack, sql) == want
    metrics = requests.get(f"{stack.operator_url}/metrics", timeout=5).text
    assert "observer_events_accepted_total" in metrics
    assert 'observer_queue_depth{queue="events"}' in metrics and "observer_live_sessions" in metrics
    if stack.worker_metrics_port:
        worker = requests.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics", timeout=5).text
        assert 'observer_forward_attempts_total{destination="default",outcome="delivered"}' in worker, worker[:2000]

    # Every event accounted for, on every setup (chDB's read through its owning worker): what was
    # stored, and the ledger's identities with the exact counts of this test's requests.
    listed = stack.flask("events", "--project", "shop", "--session", a).stdout.splitlines()
    assert len(listed) == 4 and late["event_id"] in listed[0], listed

    def report() -> dict:
        return json.loads(stack.flask("report", "--project", "shop", "--since", "15m", "--json", check=False).stdout)

    # the ledgers flush each second; the last sessions row follows UFSE's 200
    until(lambda: report()["ok"], "report's identities", timeout=15, raises=False)
    rep = report()
    assert rep["ok"], json.dumps(rep, indent=1)
    # a: 3 + 3 (the same batch posted twice), b: 1 + 1 rejected, c, d, late a: 1 each
    assert (rep["ingest"]["received"], rep["ingest"]["accepted"], rep["ingest"]["rejected"]) == (11, 10, 1), rep
    assert (rep["storage"]["stored"], rep["storage"]["duplicates"]) == (7, 3), rep
    assert (rep["sessions"]["finalized"], rep["sessions"]["delivered"]) == (5, 5), rep

    # An event's timeline (flask trace): c was delivered after two failed attempts, the rejected
    # event keeps its reason, d was dead-lettered and replayed.
    out = stack.flask("trace", ev_c["event_id"], "--project", "shop").stdout
    tries = [line for line in out.splitlines() if "    attempt " in line]
    assert [t.split(": ", 1)[1].split(",")[0:2] for t in tries] == [
        ["retry", " HTTP 500"], ["retry", " HTTP 500"], ["delivered", " HTTP 200"]], out
    assert f"webhook-id shop:{c}:1" in out and "version 1: delivered" in out, out
    out = stack.flask("trace", "nope", "--project", "shop").stdout
    assert "REJECTED (invalid_event)" in out and "Must be a UUID" in out, out
    out = stack.flask("trace", "--session", f"shop:{d}").stdout
    assert "dead letter" in out and "replayed at" in out and "replay of dead letter" in out, out
    assert "HTTP 400" in out and "HTTP 200" in out, out
    print(out)

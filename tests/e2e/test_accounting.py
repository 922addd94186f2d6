"""Every event accounted for, over real processes (gunicorn, workers, beat, ClickHouse 18.16, the
UFSE sink): a client report counted once although sent twice, the live tail within a second of
the answer, ``report``'s identities holding, ``events`` listing what was stored, and ``report``
naming the storage stage once its output is deleted by hand.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from devtools.stack import ROOT

pytestmark = pytest.mark.e2e


def _event(sid, **extra):
    e = {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000), "session_id": sid,
         "url": "https://shop.test/cart"}
    e.update(extra)
    return e


def test_report_tail_and_events_account_for_every_event(make_stack):
    s = make_stack(engine="server")
    import redis

    from app.storage import redis_keys

    r = redis.Redis.from_url(s.env["REDIS_URL"], decode_responses=True)
    tail = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "tail", "--project", "shop", "--json",
                             "--seconds", "40"], cwd=str(ROOT), env=s.env, stdout=subprocess.PIPE, text=True)
    lines: list[tuple[float, dict]] = []
    reader = threading.Thread(target=lambda: [lines.append((time.time(), json.loads(x))) for x in tail.stdout],
                              daemon=True)
    reader.start()
    try:
        deadline = time.time() + 15
        while not r.hget(redis_keys.tails(s.env["REDIS_KEY_PREFIX"]), "shop") and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.2)  # each web process reads the registrations once a second
        sid = f"acct-{uuid.uuid4().hex[:8]}"
        report = {"id": str(uuid.uuid4()), "dropped": {"queue_full": 3, "expired": 2, "refused_400": 1}}
        headers = {"Authorization": f"Bearer {s.api_key}"}
        body = {"events": [_event(sid), _event(sid, type="custom", name="checkout"), _event(sid, type="nope")],
                "client_report": report}
        first = requests.post(f"{s.url}/v1/events", json=body, headers=headers, timeout=10)
        answered = time.time()
        assert first.status_code == 202 and first.json()["client_report"] == "counted", first.text
        # The answer was lost: the SDK sends the same report again with its next batch.
        again = requests.post(f"{s.url}/v1/events", json={"events": [_event(sid)], "client_report": report},
                              headers=headers, timeout=10)
        assert again.status_code == 202 and again.json()["client_report"] == "duplicate", again.text

        deadline = time.time() + 10
        while len(lines) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert len(lines) >= 2, f"tail printed {lines}\n{s.logs(80)}"
        (seen_at, doc) = lines[0]
        latency = seen_at - answered
        print(f"tail: first verdicts printed {latency * 1000:.0f} ms after the API's answer")
        assert latency < 1.0
        assert doc["request_id"] == first.json()["request_id"] and doc["accepted"] == 2 and doc["rejected"] == 1
        assert {e["verdict"] for e in doc["events"]} == {"accepted", "rejected"}
        assert [e["code"] for e in doc["events"] if e["verdict"] == "rejected"] == ["invalid_event"]

        s.sink.wait_for(lambda got: any(d["headers"].get("webhook-id") == f"shop:{sid}:1" for d in got), 60)
        time.sleep(1.5)  # the sessions row is written by the batched forward.record; the ledgers flush each second
        out = s.flask("report", "--project", "shop", "--since", "10m", "--json")
        rep = json.loads(out.stdout)
        print(s.flask("report", "--project", "shop", "--since", "10m").stdout)
        assert rep["ok"], rep
        assert rep["browser"] == {"queue_full": 3, "expired": 2, "refused_400": 1}, "counted once"
        assert rep["ingest"]["received"] == 4 and rep["ingest"]["accepted"] == 3
        assert rep["ingest"]["rejected_by_code"] == {"invalid_event": 1}
        assert rep["storage"]["stored"] == 3 and rep["sessions"]["finalized"] == 1
        assert rep["sessions"]["delivered"] == 1
        assert rep["recent_rejections"][0]["code"] == "invalid_event"

        listed = s.flask("events", "--project", "shop", "--session", sid).stdout.splitlines()
        assert len(listed) == 3 and all(sid in line for line in listed), listed

        # One stage's output deleted by hand: ClickHouse loses the stored events.
        from app.storage.clickhouse.client import get_clickhouse

        ch = get_clickhouse(s.ch_url)
        ch.execute(f"ALTER TABLE {ch.database}.events DELETE WHERE project = 'shop'")  # noqa: S608
        deadline = time.time() + 30
        while int(ch.execute(f"SELECT count() FROM {ch.database}.events")[0][0]) and time.time() < deadline:  # noqa: S608
            time.sleep(0.2)
        broken = s.flask("report", "--project", "shop", "--since", "10m", check=False)
        print(broken.stdout)
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "FAIL storage" in broken.stdout and "the events stage lost them" in broken.stdout
    finally:
        tail.terminate()
        tail.wait(10)

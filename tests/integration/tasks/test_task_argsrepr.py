"""Every kind of task message carries ids and counts in argsrepr/kwargsrepr, never event contents.

Task events (Flower, `celery events`) and Celery's own log lines show a message's argsrepr and
kwargsrepr, not its arguments: whoever can open Flower must not read URLs, names or metadata.
Each kind of message Observer publishes is published here through the code that publishes it
(the web's Publisher, the sweep's re-publishes, the fallback session step, retries), in a child
process on this test's own Redis, and the headers are captured from Celery's
``before_task_publish`` signal.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SECRETS = ("secret.example", "tok_4242", "card-holder", "Ada Lovelace", "checkout-name")

PUBLISH = r'''
import json, sys, time, uuid
from celery import signals
from celery.exceptions import Retry

captured = []

@signals.before_task_publish.connect
def grab(sender=None, headers=None, **_kw):
    captured.append({"task": sender, "argsrepr": headers.get("argsrepr"), "kwargsrepr": headers.get("kwargsrepr")})

now = int(time.time() * 1000)
events = [{"event_id": str(uuid.uuid4()), "type": "custom", "name": "checkout-name", "ts_ms": now + i,
           "session_id": f"sess-{i % 2}", "url": "https://secret.example/pay?token=tok_4242",
           "metadata": json.dumps({"card-holder": "Ada Lovelace"})} for i in range(3)]
batch = {"batch_id": "b" * 32, "project": "shop", "request_id": "req-1", "received_at": now, "events": events}

from app.broker import Publisher
from app.settings import load_settings
Publisher(load_settings()).publish_batch(batch, "req-1")          # web: events.persist

from tasks import forward, sessions
from tasks.app import celery, retry_in
from app import resources
from app.broker import send_session_update
from app.events import worker
from app.forwarding import parked
from app.events.persist import session_summary
from app.retry.countdown import Countdown
send_session_update(celery, session_summary(batch), batch["request_id"])   # fallback session step
worker.due_index().park(batch["batch_id"], {"batch": batch, "attempt": 1}, 0)
worker.republish_due(celery, limit=10)                                # parked batch re-published
parked.due_index().park(parked.member("shop", "sess-1", 3), {"attempt": 2}, 0)
parked.release_due(celery, 5)                                     # parked delivery re-published

# sessions.update retried after a transient Redis error (Task.retry re-publishes the message)
import redis
from app.sessions import update as update_step
def unavailable(*_a, **_k):
    raise redis.ConnectionError("sessions Redis away")
update_step.apply_summary = unavailable
resources.clickhouse = lambda: None
resources.session_store = lambda: None
resources.insert_settings = lambda: None
summary = session_summary(batch)
sessions.update.push_request(id=str(uuid.uuid4()), args=[summary], kwargs={}, retries=0, delivery_info={},
                             called_directly=False)
try:
    sessions.update.run(summary)
except Retry:
    pass
sessions.update.pop_request()

# forward.deliver retried (countdown) from inside the task
forward.deliver.push_request(id=str(uuid.uuid4()), args=["shop", "sess-1", 3], kwargs={}, retries=0,
                             delivery_info={}, called_directly=False)
try:
    raise retry_in(forward.deliver, Countdown(1.0, {"attempt": 1, "waits": 0, "due": False}))
except Retry:
    pass
forward.deliver.pop_request()
print(json.dumps(captured))
'''


def test_every_published_kind_shows_ids_and_counts_only(redis_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "PROMETHEUS_"))}
    (tmp_path / "empty.env").write_text("")
    env.update(REDIS_URL=redis_url, OBSERVER_ENV_FILE=str(tmp_path / "empty.env"), UFSE_URL="",
               REDIS_KEY_PREFIX="argsrepr:", LOG_LEVEL="ERROR", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", PUBLISH], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    captured = json.loads(r.stdout.strip().splitlines()[-1])
    kinds = [c["task"] for c in captured]
    assert kinds == ["events.persist", "sessions.update", "events.persist", "forward.deliver",
                     "sessions.update", "forward.deliver"], kinds
    for c in captured:
        shown = f"{c['argsrepr']} {c['kwargsrepr']}"
        assert not [s for s in SECRETS if s in shown], c
        assert len(shown) < 200, c
    assert captured[0]["argsrepr"] == f"[<batch {'b' * 32}: 3 events>]"
    assert captured[1]["argsrepr"] == captured[4]["argsrepr"] == f"[<summary {'b' * 32}: 2 sessions, 3 events>]"
    assert captured[2]["kwargsrepr"] == "{'attempt': 1}"
    assert captured[3]["argsrepr"] == "['shop', 'sess-1', 3]"

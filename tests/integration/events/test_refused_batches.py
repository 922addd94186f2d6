"""A batch ClickHouse refuses as data, over real servers: Redis (broker, journal, due-time index),
ClickHouse 18.16 refusing it (a column ``DEFAULT throwIf(...)``, as fault case 11 does) and
PostgreSQL for the dead letter. At the default EVENTS_RETRY_SCHEDULE, JOURNAL_GRACE and
DEDUP_WINDOW; time is not waited for: the journal sweep is given its clock.

Before the fix the refused batch's journal entry outlived its park and its dead letter: the
journal sweep re-published it every JOURNAL_GRACE with no attempt count, the park reset the count,
and the batch retried from the first step of its schedule for a day, dead-lettered again each time
its schedule ran out.
"""
from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace

import pytest
import redis as redis_lib

from app import maintenance, resources
from app.events import worker
from app.forwarding.deadletters import DeadLetters
from app.ingest.journal import Journal
from app.retry.due import DueIndex
from app.settings import load_settings
from app.storage.clickhouse import client as ch_client
from app.storage.clickhouse import migrations
from tasks.app import celery

POISON = "refused-batch-pill"


@pytest.fixture
def rig(redis_url, clean_pg, clickhouse_server, tmp_path, monkeypatch):
    db = f"obs_t_{uuid.uuid4().hex[:10]}"
    empty = tmp_path / "empty.env"
    empty.write_text("")
    s = load_settings({"OBSERVER_ENV_FILE": str(empty), "REDIS_URL": redis_url, "DATABASE_URL": clean_pg,
                       "CLICKHOUSE_URL": f"{clickhouse_server}/{db}",
                       "REDIS_KEY_PREFIX": f"rb{uuid.uuid4().hex[:8]}:"})
    resources.reset()
    monkeypatch.setattr(resources, "settings", lambda: s)
    ch = resources.clickhouse()
    migrations.migrate(ch)
    ch.execute(f"ALTER TABLE {db}.events ADD COLUMN poison UInt8 DEFAULT throwIf(name = '{POISON}')")
    monkeypatch.setitem(celery.conf, "broker_url", redis_url)
    monkeypatch.setattr(celery, "_pool", None)
    monkeypatch.setattr(celery.amqp, "_producer_pool", None)
    r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield SimpleNamespace(s=s, r=r, ch=ch, journal=Journal(r, s.redis_key_prefix, s.dedup_window),
                          due=DueIndex(r, s.redis_key_prefix, "events"), dlq=DeadLetters(clean_pg))
    ch.execute(f"DROP DATABASE IF EXISTS {db}")
    ch_client.close_all()
    resources.reset()
    from kombu import pools

    pools.reset()  # kombu's pools are global per URL: leave none behind for later tests


def _poison_batch(received_ms: int) -> dict:
    sid = f"s-{uuid.uuid4().hex[:6]}"
    events = [{"event_id": str(uuid.uuid4()), "type": "custom", "ts_ms": received_ms - 10, "session_id": sid,
               "url": "https://x.test/", "name": POISON if i == 0 else "", "anonymous_id": "", "metadata": "{}"}
              for i in range(3)]
    return {"batch_id": uuid.uuid4().hex, "project": "p1", "request_id": "req-poison", "received_at": received_ms,
            "events": events}


def _flush(batch: dict, attempt: int = 0) -> dict:
    req = SimpleNamespace(id=f"t-{uuid.uuid4().hex[:6]}", args=[batch], kwargs={"attempt": attempt} if attempt else {})
    return worker.flush(celery, [req])


def _journal_sweep(at_ms: int) -> int:
    """The sweep's journal step with the events queue empty (as after the flush acked)."""
    resources.sessions_redis().delete("events", "sessions")
    return maintenance.replay_journal(celery, limit=50, now_ms=at_ms)


def test_a_parked_batch_leaves_the_journal_and_keeps_its_attempt_count(rig):
    now = int(time.time() * 1000)
    batch = _poison_batch(now)
    rig.journal.write(batch)  # the API wrote it before publishing
    out = _flush(batch)
    assert list(out["verdicts"].values()) == ["ack"] and not out["pause"]
    [result] = out["results"].values()  # what Flower shows for its events.persist (tasks/batching.py)
    assert result["outcome"] == "parked" and result["batch_id"] == batch["batch_id"] and result["events"] == 3
    assert result["reason"].startswith("retry in ") and "ClickHouse" in result["reason"], result
    assert rig.due.due_at(batch["batch_id"]) is not None, "parked for its first retry"
    assert rig.journal.size() == 0, "the due-time index keeps the refused batch now; the journal entry must go"
    grace_ms = int(rig.s.journal_grace * 1000)
    assert _journal_sweep(now + grace_ms + 1000) == 0, "nothing for the journal sweep to re-publish"

    # A duplicate of the first delivery (a redelivered message) is refused and parked again:
    # it neither resets the attempt count nor postpones the retry.
    [(_, first)] = [(m, p) for m, p in rig.due.due(now=time.time() + 86400) if m == batch["batch_id"]]
    assert first is not None and first["attempt"] == 1
    due_first = rig.due.due_at(batch["batch_id"])
    _flush(batch, attempt=2)  # the retry (attempt 3 parked)
    _flush(batch)  # then a late duplicate with no count
    [(_, kept)] = [(m, p) for m, p in rig.due.due(now=time.time() + 86400) if m == batch["batch_id"]]
    assert kept is not None and kept["attempt"] == 3, f"the higher count is kept, got {kept and kept['attempt']}"
    assert rig.due.due_at(batch["batch_id"]) <= due_first


def test_a_dead_lettered_batch_is_dead_lettered_once(rig):
    now = int(time.time() * 1000)
    batch = _poison_batch(now)
    rig.journal.write(batch)
    last = len(rig.s.events_retry_schedule)  # the default schedule is spent at this attempt
    out = _flush(batch, attempt=last)
    assert list(out["verdicts"].values()) == ["ack"]
    [result] = out["results"].values()
    assert result["outcome"] == "dead_lettered" and result["batch_id"] == batch["batch_id"] and result["reason"]
    letters = rig.dlq.list(kind="poison_batch")
    assert [d["ref"] for d in letters] == [batch["batch_id"]]
    assert rig.journal.size() == 0, "the dead letter keeps the refused batch now; the journal entry must go"
    # A day of journal sweeps (every JOURNAL_GRACE) republishes nothing, so nothing is dead-lettered again.
    grace_ms = int(rig.s.journal_grace * 1000)
    republished = sum(_journal_sweep(now + k * (grace_ms + 1000)) for k in range(1, 6))
    assert republished == 0
    assert len(rig.dlq.list(kind="poison_batch")) == 1
    payload = rig.dlq.get(letters[0]["id"])["payload"]
    assert json.loads(json.dumps(payload))["batch"]["batch_id"] == batch["batch_id"]


def test_flush_results_name_each_batch_stored_then_duplicate(rig):
    """The per-request results Flower shows: a batch's first flush stores its events, its
    redelivery stores nothing new."""
    now = int(time.time() * 1000)
    batch = _poison_batch(now)
    for e in batch["events"]:
        e["name"] = "fine"

    def flushed() -> dict:
        [result] = _flush(json.loads(json.dumps(batch)))["results"].values()  # a fresh copy, as a redelivery
        return result
    assert flushed() == {"batch_id": batch["batch_id"], "events": 3, "outcome": "stored", "stored": 3}
    assert flushed() == {"batch_id": batch["batch_id"], "events": 3, "outcome": "duplicate", "stored": 0}

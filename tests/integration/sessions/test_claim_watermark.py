"""The claim waits for batches still waiting for storage (real Redis; ClickHouse refusing
connections on a real closed port). At the default SESSION_IDLE_TIMEOUT (1800 s) and LAG_FRESH_S.

Before: only a flush that reached the session step reported the pipeline's lag, so during a
ClickHouse outage no process reported any; the claim's watermark was the clock, and a session
whose last counted batch was idle for 30 min was frozen while a later batch of it sat in the
queue: that batch then opened version 2 and the session reached UFSE as two versions.
"""
from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
import redis as redis_lib

from app import resources
from app.events import worker
from app.events.persist import session_summary
from app.sessions.store import LAG_FRESH_S
from app.settings import load_settings
from tasks.app import celery


@pytest.fixture
def rig(redis_url, tmp_path, monkeypatch):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    s = load_settings({"OBSERVER_ENV_FILE": str(empty), "REDIS_URL": redis_url,
                       # nothing listens on port 1: every ClickHouse call is a real refused connection
                       "CLICKHOUSE_URL": "clickhouse://default:@127.0.0.1:1/observer",
                       "REDIS_KEY_PREFIX": f"wm{uuid.uuid4().hex[:8]}:"})
    resources.reset()
    monkeypatch.setattr(resources, "settings", lambda: s)
    yield SimpleNamespace(s=s, r=redis_lib.Redis.from_url(redis_url, decode_responses=True),
                          store=resources.session_store())
    resources.reset()


def _batch(sid: str, received_ms: int) -> dict:
    events = [{"event_id": str(uuid.uuid4()), "type": "click", "ts_ms": received_ms - 10, "session_id": sid,
               "url": "https://x.test/", "name": "", "anonymous_id": "", "metadata": "{}"}]
    return {"batch_id": uuid.uuid4().hex, "project": "p1", "request_id": "", "received_at": received_ms,
            "events": events}


def _session_due_a_minute_ago(rig, now: int) -> str:
    """A session counted (v1, written) whose deadline (receive + idle timeout) passed a minute
    ago, and no lag report yet."""
    sid = f"s-{uuid.uuid4().hex[:6]}"
    first = _batch(sid, now - rig.s.session_idle_timeout * 1000 - 60_000)
    rig.store.apply_batch("p1", first["batch_id"], {sid: tuple(session_summary(first)["sessions"][sid])},
                          at_ms=first["received_at"], version_floor=lambda _p, _s: 0)
    rig.store.mark_written("p1", first["batch_id"], {sid: 1})
    rig.r.delete(f"{rig.s.redis_key_prefix}sessions:lag")
    return sid


def test_a_session_is_not_claimed_while_its_batches_wait_for_storage(rig):
    assert worker.PAUSE_MAX < LAG_FRESH_S, "a paused worker reports again before its report goes stale"
    now = int(time.time() * 1000)
    idle_ms = rig.s.session_idle_timeout * 1000
    sid = _session_due_a_minute_ago(rig, now)  # counted before the outage began
    # Received 10 minutes ago, during the ClickHouse outage: every flush of it is requeued.
    waiting = _batch(sid, now - 600_000)
    out = worker.flush(celery, [SimpleNamespace(id="r1", args=[waiting], kwargs={})])
    assert (out["verdicts"], out["pause"]) == ({"r1": "requeue"}, True)
    assert out["results"]["r1"]["outcome"] == "requeued", out  # what Flower shows for it
    assert rig.store.lag_ms() >= 600_000, "the requeued batch's wait is the session step's lag"
    assert rig.store.claim_due() == [], "not frozen while a batch of it waits for storage"
    # Storage is back: the batch is counted into version 1, which is then claimed once.
    rig.store.apply_batch("p1", waiting["batch_id"], {sid: tuple(session_summary(waiting)["sessions"][sid])},
                          at_ms=waiting["received_at"])
    rig.store.mark_written("p1", waiting["batch_id"], {sid: 1})
    rig.store.note_lag(0)
    [claimed] = rig.store.claim_due(at_ms=now + idle_ms)
    assert claimed.version == 1 and rig.store.snapshot("p1", sid, 1)["batches"] == "2"


def test_no_claim_while_batches_wait_in_the_queue_and_no_events_worker_reports(rig):
    """Every events worker stopped: nothing reports a lag, and the watermark would be the clock.
    The sweep's backlog is the real events queue's length on this test's Redis broker."""
    from app.broker import queue_depth
    from app.names import Queue

    _session_due_a_minute_ago(rig, int(time.time() * 1000))
    rig.r.delete("events")
    backlog = lambda: queue_depth(celery, rig.s, Queue.EVENTS)  # noqa: E731
    rig.r.lpush("events", "a batch nobody consumes")  # a message waiting; its worker is gone
    assert rig.store.claim_due(backlog=backlog) == [], "held: a batch of it may be the one waiting"
    rig.r.delete("events")
    [claimed] = rig.store.claim_due(backlog=backlog)  # an idle pipeline: nothing waits, the clock rules
    assert claimed.version == 1

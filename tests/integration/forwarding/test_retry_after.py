"""A receiver's Retry-After can only lengthen a wait up to RETRY_AFTER_CAP, and no later attempt is
ever scheduled past the life of the version's frozen snapshot: it is dead-lettered with its reason
instead of ending "gone" when the snapshot expires.

Real deliveries to the UFSE sink (devtools/sink.py) answering 503 with ``Retry-After``; the
snapshot, due index and circuit on a real Redis, dead letters in PostgreSQL, events in chDB.
Every setting at its default. A snapshot "claimed 14 days ago less 30 minutes" is played by
setting its ``finalized_ms`` and its key's expiry as that claim would have left them.
"""
from __future__ import annotations

import time

import pytest

from app import resources
from app.forwarding import deliver as delivery
from app.forwarding import parked
from app.forwarding.client import RETRY_AFTER_CAP
from app.retry.countdown import Countdown
from app.storage import redis_keys
from devtools import sink as ufse_sink

CHDB_ONLY = pytest.mark.parametrize("clickhouse_url", ["chdb"], indirect=True)  # engine-agnostic decisions


def _final_key(w, project, sid, version):
    store = resources.session_store()
    return redis_keys.session_final(w.settings.redis_key_prefix, store.bucket_of(project, sid), project, sid, version)


@pytest.fixture
def sink(world):
    with ufse_sink.Sink(secret=None) as s:
        yield s


@CHDB_ONLY
@pytest.mark.parametrize("header", ["99999999", "Fri, 31 Dec 2100 23:59:59 GMT"])
def test_a_huge_retry_after_is_capped_and_parks_well_inside_the_snapshots_life(world, sink, header):
    w = world(sink.url + "ufse")
    ref = w.claimed()
    sink.set_plan([{"status": 503, "retry_after": header}])
    before = time.time()
    assert delivery.deliver(w.celery, *ref) == "retrying"
    assert sink.received[0]["status"] == 503
    due = parked.due_index().due_at(parked.member(*ref))
    assert due is not None, "parked for its next attempt"
    print(f"Retry-After {header!r}: parked for {due - before:.0f} s")
    assert before + RETRY_AFTER_CAP - 1 <= due <= time.time() + RETRY_AFTER_CAP + 1, \
        f"parked {due - before:.0f} s ahead; the cap is {RETRY_AFTER_CAP:.0f} s"
    snapshot_ttl = w.r.ttl(_final_key(w, *ref))
    assert due + delivery.SNAPSHOT_MARGIN_S < time.time() + snapshot_ttl, "due well before its snapshot expires"
    assert resources.dead_letters().list() == []


def _age_snapshot(w, ref, left_s: int) -> None:
    """As if the claim happened 14 days less ``left_s`` ago: its finalized_ms and its expiry."""
    key = _final_key(w, *ref)
    store = resources.session_store()
    w.r.hset(key, "finalized_ms", int((time.time() - store.final_ttl + left_s) * 1000))
    w.r.expire(key, left_s)


def _the_dead_letter(w, ref):
    rows = resources.dead_letters().list()
    assert [r["ref"] for r in rows] == [":".join(map(str, ref))], rows
    assert resources.session_store().snapshot(*ref) is None, "finished: the snapshot is forgotten"
    assert parked.due_index().due_at(parked.member(*ref)) is None, "nothing left parked"
    return rows[0]


@CHDB_ONLY
def test_a_retry_that_would_be_due_after_the_snapshot_expires_is_dead_lettered(world, sink):
    w = world(sink.url + "ufse")
    ref = w.claimed()
    _age_snapshot(w, ref, 1800)  # 30 min left: less than the capped Retry-After (1 h)
    sink.set_plan([{"status": 503, "retry_after": "99999999"}])
    assert delivery.deliver(w.celery, *ref) == "dead_lettered"
    row = _the_dead_letter(w, ref)
    assert "past its snapshot's expiry" in row["error"] and "503" in row["error"], row["error"]


@CHDB_ONLY
def test_an_open_circuit_wait_past_the_snapshot_is_dead_lettered(world, sink):
    """At the defaults the retry horizon (27.6 h) ends long before the snapshot (14 days), so this
    path was safe before the check; it keeps it safe if the two ever meet."""
    w = world(sink.url + "ufse")
    ref = w.claimed()
    c = parked.circuit()
    for _ in range(w.settings.forward_circuit_threshold):
        c.failure()
    assert c.open_until() > time.time(), "open"
    _age_snapshot(w, ref, 1800)
    assert delivery.deliver(w.celery, *ref) == "dead_lettered"
    assert sink.received == [], "nothing sent while the circuit is open"
    error = _the_dead_letter(w, ref)["error"]
    assert "whole retry horizon" in error or "circuit open" in error, error


@CHDB_ONLY
def test_a_storage_wait_past_the_snapshot_is_dead_lettered(world, sink):
    """ClickHouse failing mid-delivery: the forward task's storage path checks the snapshot's life too."""
    from app.storage.clickhouse.client import ClickHouseError

    w = world(sink.url + "ufse")
    ref = w.claimed()
    assert isinstance(delivery.storage_unavailable(*ref, 0, 0, ClickHouseError("down")), Countdown), \
        "a young snapshot waits out the outage"
    _age_snapshot(w, ref, 30)
    assert delivery.storage_unavailable(*ref, 0, 0, ClickHouseError("down")) == "dead_lettered"
    assert "storage unavailable" in _the_dead_letter(w, ref)["error"]


@CHDB_ONLY
def test_a_visibility_wait_past_the_snapshot_is_dead_lettered(world, sink):
    w = world(sink.url + "ufse")
    ref = w.claimed()
    key = _final_key(w, *ref)
    w.r.hset(key, mapping={"pending": 1, "batches": 99})  # a counted batch not written yet
    assert isinstance(delivery.deliver(w.celery, *ref), Countdown), "a young snapshot waits for the write"
    _age_snapshot(w, ref, 30)
    assert delivery.deliver(w.celery, *ref) == "dead_lettered"
    assert "not visible yet" in _the_dead_letter(w, ref)["error"]

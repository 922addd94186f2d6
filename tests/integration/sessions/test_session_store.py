"""Session state scripts on a real Redis: versions, atomic claims, expiries, idempotency."""
from __future__ import annotations

import threading

import pytest
import redis as redis_lib

from app.sessions.store import SessionStore


@pytest.fixture
def store(redis_url):
    r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    return SessionStore(r, prefix="t:", buckets=4, idle_s=30, max_s=3600, marker_ttl_s=600)


def test_apply_is_idempotent_per_batch(store):
    first = store.apply_batch("p", "b1", {"s": (3, 10, 20)}, at_ms=1_000)
    again = store.apply_batch("p", "b1", {"s": (3, 10, 20)}, at_ms=2_000)
    assert first == {"s": (1, True)} and again == {"s": (1, False)}
    live = store.live("p", "s")
    assert live["events"] == "3" and live["batches"] == "1" and live["first_ts"] == "10"


def test_claim_once_then_late_events_start_version_two(store):
    store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000)
    assert store.claim_due(at_ms=1_000 + 29_999) == []
    claimed = store.claim_due(at_ms=1_000 + 30_000)
    assert [(c.session_id, c.version) for c in claimed] == [("s", 1)]
    assert store.claim_due(at_ms=100_000) == []  # never twice
    assert store.snapshot("p", "s", 1)["reason"] == "idle"
    assert store.apply_batch("p", "b2", {"s": (1, 50, 50)}, at_ms=40_000) == {"s": (2, True)}
    store.complete("p", "s", 1)
    assert store.snapshot("p", "s", 1) is None


def test_max_duration_finalizes_busy_session(redis_url):
    r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    st = SessionStore(r, prefix="t:", buckets=2, idle_s=30, max_s=60, marker_ttl_s=600)
    for i in range(5):
        st.apply_batch("p", f"b{i}", {"s": (1, i, i)}, at_ms=i * 20_000)
    claimed = st.claim_due(at_ms=60_000)
    assert [c.version for c in claimed] == [1]
    assert st.snapshot("p", "s", 1)["reason"] == "max_duration"


def test_concurrent_claims_finalize_each_version_once(redis_url):
    r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    st = SessionStore(r, prefix="t:", buckets=8, idle_s=1, max_s=3600, marker_ttl_s=600)
    for i in range(200):
        st.apply_batch("p", f"b{i}", {f"s{i}": (1, i, i)}, at_ms=1_000)
    results: list = []

    def sweep():
        results.extend(st.claim_due(at_ms=10_000))

    threads = [threading.Thread(target=sweep) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [(c.session_id, c.version) for c in results]
    assert len(ids) == 200 and len(set(ids)) == 200


def test_every_key_expires(store):
    store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000)
    store.claim_due(at_ms=100_000)
    store.apply_batch("p", "b2", {"s": (1, 10, 10)}, at_ms=200_000)
    keys = store.r.keys("t:*")
    assert keys and all(store.r.ttl(k) > 0 for k in keys), {k: store.r.ttl(k) for k in keys}


def test_stale_outbox_is_restamped(store):
    store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000)
    store.claim_due(at_ms=50_000)
    assert store.stale_outbox(60, at_ms=100_000) == []
    stale = store.stale_outbox(60, at_ms=200_000)
    assert [(c.session_id, c.version) for c in stale] == [("s", 1)]
    assert store.stale_outbox(60, at_ms=200_001) == []  # re-stamped: not re-enqueued every sweep


def test_pipeline_lag_holds_back_claims(store):
    # Batches received at 1 s and 2 s; the second is counted late (the queue ran 5 s behind).
    store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000)
    store.note_lag(5_000)
    assert store.claim_due(at_ms=33_000) == []  # deadline 31 s, but the watermark is only 28 s
    store.apply_batch("p", "b2", {"s": (1, 20, 20)}, at_ms=2_000)
    assert store.live("p", "s")["deadline"] == "32000"  # extended by the late-counted batch
    store.note_lag(0)
    assert [(c.session_id, c.version) for c in store.claim_due(at_ms=33_000)] == [("s", 1)]
    assert store.snapshot("p", "s", 1)["batches"] == "2"  # one version, not split


def test_a_live_session_has_no_counter_key_and_the_next_version_starts_above_the_claimed_one(store):
    """Memory: the version counter exists only between a claim and the next version (its TTL is
    hours); the next version starts above the claimed one even while ClickHouse knows none."""
    store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000, version_floor=lambda p, s: 0)
    ver = store.keys("p", "s")["ver"]
    assert not store.r.exists(ver)
    store.note_lag(0)
    assert [c.version for c in store.claim_due(at_ms=1_000 + 30_000)] == [1]
    assert store.r.get(ver) == "1" and 0 < store.r.ttl(ver) <= store.ver_ttl
    assert store.apply_batch("p", "b2", {"s": (1, 50, 50)}, at_ms=40_000,
                             version_floor=lambda p, s: 0) == {"s": (2, True)}


def test_claims_wait_for_the_slowest_worker_set_that_reported_lately(store):
    """Two worker sets (two hosts): the one behind holds claims back even when the other, caught
    up, reported last; a set silent past LAG_FRESH_S no longer does."""
    from app.sessions.store import LAG_FRESH_S, now_ms

    store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000)
    store.note_lag(5_000, who="host-b:41")
    store.note_lag(0, who="host-a:17")  # written last
    assert store.lag_ms() == 5_000
    assert store.claim_due(at_ms=33_000) == []
    later = now_ms() + (LAG_FRESH_S + 1) * 1000
    assert store.lag_ms(at_ms=later) == 0, "stale reports are dropped"
    assert [(c.session_id, c.version) for c in store.claim_due(at_ms=33_000)] == [("s", 1)]


def test_out_of_order_batches_keep_the_latest_activity(store):
    store.apply_batch("p", "late", {"s": (1, 10, 10)}, at_ms=9_000)
    store.apply_batch("p", "early", {"s": (1, 5, 5)}, at_ms=4_000)
    live = store.live("p", "s")
    assert live["last_seen_ms"] == "9000" and live["started_ms"] == "4000" and live["deadline"] == "39000"


def test_pending_counts_batches_until_written_wherever_the_version_is(store):
    store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000)
    store.apply_batch("p", "b2", {"s": (1, 20, 20)}, at_ms=2_000)
    assert store.live("p", "s")["pending"] == "2"
    store.mark_written("p", "b1", {"s": 1})
    store.mark_written("p", "b1", {"s": 1})  # a redelivery marks again: no effect
    assert store.live("p", "s")["pending"] == "1"
    store.claim_due(at_ms=100_000)
    store.mark_written("p", "b2", {"s": 1})  # written after the claim froze the version
    assert store.snapshot("p", "s", 1)["pending"] == "0"
    assert store.apply_batch("p", "b2", {"s": (1, 20, 20)}, at_ms=3_000) == {"s": (1, False)}  # marker "1:w"


def test_new_versions_never_go_below_the_floor(store):
    asked = []

    def floor(project, sid):
        asked.append((project, sid))
        return 7

    assert store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000, version_floor=floor) == {"s": (8, True)}
    assert store.apply_batch("p", "b2", {"s": (1, 10, 10)}, at_ms=2_000, version_floor=floor) == {"s": (8, True)}
    assert asked == [("p", "s")]  # asked only when a version starts


def test_recover_skips_versions_redis_knows(store):
    store.apply_batch("p", "b1", {"s": (1, 10, 10)}, at_ms=1_000)
    assert store.recover("p", "s", 1, 1) is False  # live
    store.claim_due(at_ms=100_000)
    assert store.recover("p", "s", 1, 1) is False  # frozen
    store.complete("p", "s", 1)
    assert store.recover("p", "s", 1, 1) is False  # completed (tombstone)
    assert store.recover("p", "s", 5, 3, at_ms=7) is True
    assert store.snapshot("p", "s", 5)["pending"] == "0" and store.stale_outbox(0, at_ms=8)[0].version == 5
    assert store.recover("p", "s", 5, 3) is False  # queued once
    assert store.apply_batch("p", "b9", {"s": (1, 10, 10)}, at_ms=9_000) == {"s": (6, True)}

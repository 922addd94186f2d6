"""Exactly once over real servers: one event counts once, in one version, under one webhook-id.

Each test drives the pipeline's plain functions (persist -> session step -> claim -> forward)
over a real Redis, ClickHouse (18.16 server and chDB) and a real HTTP receiver, at the default
settings (DEDUP_WINDOW 86400, SESSION_IDLE_TIMEOUT 1800, BATCH_MARKER_TTL 900; a marker's expiry is
played by deleting it). Time is not
waited for: batches carry their receive time and claims take the clock as an argument.
"""
from __future__ import annotations

import base64
import json
import os
import time
import uuid

import pytest
import redis as redis_lib

from app.events.persist import persist_batches, session_summary
from app.forwarding import prepare as forward_step
from app.forwarding.client import UfseClient
from app.sessions.counting import apply_summary, count_batches
from app.sessions.store import SessionStore
from app.settings import load_settings
from app.storage.clickhouse import queries
from devtools import sink as ufse_sink

S = load_settings()
DAY_MS = 86_400_000
# Receive times start 23.5 h ago, so a resend "one day later" is still within the window and the
# event_ids TTL (window + 1 h, on chDB) has not expired any row while the test runs.
BASE = int(time.time() * 1000) - 23 * 3_600_000 - 1_800_000
IDLE_MS = S.session_idle_timeout * 1000
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def _ids(n):
    return [str(uuid.uuid4()) for _ in range(n)]


def _batch(event_ids, sid, received, project="p1"):
    events = [{"event_id": e, "type": "click", "ts_ms": received - 1000 + i, "session_id": sid,
               "url": f"https://x.test/{i % 3}", "name": "", "anonymous_id": "", "metadata": json.dumps({"i": i})}
              for i, e in enumerate(event_ids)]
    canon = json.dumps([project, events, received], sort_keys=True)
    return {"batch_id": uuid.uuid5(uuid.NAMESPACE_URL, canon).hex, "project": project,
            "request_id": f"req-{received}", "received_at": received, "events": events}


class Pipeline:
    """The tasks' steps, called in order as the workers would."""

    def __init__(self, ch, redis_url, sink):
        self.ch = ch
        self.r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        self.store = SessionStore(self.r, prefix=S.redis_key_prefix,
                                  idle_s=S.session_idle_timeout, max_s=S.session_max_duration,
                                  marker_ttl_s=S.batch_marker_ttl)
        self.sink = sink
        self.client = UfseClient(sink.url, SECRET, timeout=5)

    def ingest(self, *batches):
        """One events flush of ``batches``, with its session step (as events.persist runs them)."""
        persist_batches(self.ch, list(batches), dedup_window=S.dedup_window)
        counted = count_batches(self.store, self.ch, list(batches))
        return [counted.get(b["batch_id"], {}) for b in batches]

    def claim(self, at_ms):
        self.store.note_lag(0)  # the pipeline has caught up
        return self.store.claim_due(at_ms=at_ms)

    def deliver(self, claimed):
        """forward.deliver for each claimed version; returns the payloads UFSE accepted."""
        bodies = []
        for c in claimed:
            snap = self.store.snapshot(c.project, c.session_id, c.version)
            prepared = forward_step.prepare(self.ch, snap, project=c.project, session_id=c.session_id,
                                       version=c.version, settings=S)
            assert forward_step.send(self.client, prepared)[0].outcome == "delivered"
            self.store.complete(c.project, c.session_id, c.version)
            forward_step.record(self.ch, prepared, "delivered")
            bodies.append(prepared.payload)
        return bodies

    def live_events(self, sid, project="p1"):
        return int(self.store.live(project, sid).get("events", 0))


@pytest.fixture
def pipe(ch, redis_url):
    with ufse_sink.Sink(secret=SECRET) as sink:
        yield Pipeline(ch, redis_url, sink)


def _event_ids(body):
    return [e["event_id"] for e in body["events"]]


def _dedup_count(ch, sid):
    return ch.execute(f"SELECT count() FROM {ch.database}.events_dedup WHERE project = 'p1' AND session_id = %(s)s",
                      {"s": sid})[0][0]


def _deliveries_by_id(sink):
    by_id: dict[str, set] = {}
    for d in sink.snapshot():
        by_id.setdefault(d["headers"]["webhook-id"], set()).add(json.dumps(d["body"], sort_keys=True))
    return by_id


def test_resend_after_a_lost_202_counts_once_in_the_next_version(pipe):
    """The issue's scenario: 15 events in three overlapping batches, then 5 of them again with 5 new."""
    sid = "s-" + uuid.uuid4().hex[:8]
    e = _ids(15)
    pipe.ingest(_batch(e[0:7], sid, BASE))
    pipe.ingest(_batch(e[4:11], sid, BASE + 5_000))   # SDK retry after a lost 202, with more events
    pipe.ingest(_batch(e[9:15], sid, BASE + 10_000))
    assert pipe.live_events(sid) == 15  # session count: each event once
    [v1] = pipe.deliver(pipe.claim(BASE + 10_000 + IDLE_MS))
    assert sorted(_event_ids(v1)) == sorted(e) and v1["session"]["event_count"] == 15
    new = _ids(5)
    pipe.ingest(_batch(e[10:15] + new, sid, BASE + 10_000 + IDLE_MS + 60_000))
    assert pipe.live_events(sid) == 5
    [v2] = pipe.deliver(pipe.claim(BASE + 10_000 + 2 * IDLE_MS + 60_000))
    print("v1", v1["session"]["event_count"], "v2", v2["session"]["event_count"], v2["session"]["counts"])
    assert v2["session"]["version"] == 2
    assert sorted(_event_ids(v2)) == sorted(new)
    assert v2["session"]["event_count"] == 5 and v2["session"]["counts"] == {"click": 5}
    assert _dedup_count(pipe.ch, sid) == 20
    db = pipe.ch.database
    assert pipe.ch.execute(f"SELECT sum(event_count) FROM {db}.sessions FINAL WHERE session_id = %(s)s",
                           {"s": sid})[0][0] == 20
    delivered = [i for d in pipe.sink.snapshot() for i in _event_ids(d["body"])]
    assert len(delivered) == len(set(delivered)) == 20


def test_batch_split_differently_counts_once(pipe):
    """A batch of 10 and its re-cut after a 413 (two batches, one new event each), in one flush."""
    sid = "s-" + uuid.uuid4().hex[:8]
    e, n = _ids(10), _ids(2)
    whole = _batch(e, sid, BASE + 2_000)
    part1 = _batch(e[:4] + n[:1], sid, BASE + 1_000)  # received first: it owns e[0:4]
    part2 = _batch(e[4:] + n[1:], sid, BASE + 3_000)
    pipe.ingest(whole, part1, part2)
    assert pipe.live_events(sid) == 12
    raw = pipe.ch.execute(f"SELECT count() FROM {pipe.ch.database}.events WHERE session_id = %(s)s", {"s": sid})[0][0]
    assert raw == 12  # the copies were never stored
    assert _dedup_count(pipe.ch, sid) == 12
    [v1] = pipe.deliver(pipe.claim(BASE + 3_000 + IDLE_MS))
    assert sorted(_event_ids(v1)) == sorted(e + n) and v1["session"]["event_count"] == 12
    owners = dict(pipe.ch.execute(f"SELECT event_id, batch_id FROM {pipe.ch.database}.events_dedup "
                                  "WHERE session_id = %(s)s", {"s": sid}))
    assert {owners[i] for i in e[:4]} == {part1["batch_id"]} and {owners[i] for i in e[4:]} == {whole["batch_id"]}


def test_resend_one_day_later_within_the_window(pipe):
    """A resend 23 h 50 min later is still a duplicate; one received after the window counts again."""
    sid = "s-" + uuid.uuid4().hex[:8]
    e, n = _ids(5), _ids(2)
    pipe.ingest(_batch(e, sid, BASE))
    [v1] = pipe.deliver(pipe.claim(BASE + IDLE_MS))
    later = BASE + DAY_MS - 600_000
    pipe.ingest(_batch(e[2:] + n, sid, later))
    [v2] = pipe.deliver(pipe.claim(int(time.time() * 1000) + IDLE_MS))
    assert sorted(_event_ids(v1)) == sorted(e)
    assert v2["session"]["version"] == 2 and sorted(_event_ids(v2)) == sorted(n)
    assert v2["session"]["event_count"] == 2
    # Past the window the same id is a new occurrence (dedup state lives as long as the window).
    pipe.ingest(_batch(e[:1], sid, BASE + DAY_MS + 60_000))
    [v3] = pipe.deliver(pipe.claim(int(time.time() * 1000) + 2 * IDLE_MS + 1))
    assert _event_ids(v3) == e[:1]
    print("v1", len(v1["events"]), "v2", len(v2["events"]), "v3 (after the window)", len(v3["events"]))


def test_event_in_batches_of_two_versions_belongs_to_one_and_stays_after_optimize_final(pipe):
    """Two flushes that both looked before either wrote store one event twice; the rule picks one."""
    sid = "s-" + uuid.uuid4().hex[:8]
    shared, a1, c1 = _ids(3)
    early = _batch([shared, a1], sid, BASE)
    late = _batch([shared, c1], sid, BASE + 1_000)
    # The race: both batches stored with every event (later receipt written first: a merge
    # without a version column would keep it), then counted into consecutive versions.
    queries.insert_events(pipe.ch, [late])
    queries.insert_events(pipe.ch, [early])
    apply_summary(pipe.store, pipe.ch, session_summary(early))
    assert [c.version for c in pipe.claim(BASE + IDLE_MS)] == [1]
    apply_summary(pipe.store, pipe.ch, session_summary(late))
    ch, db = pipe.ch, pipe.ch.database

    def versions_of(event_id):
        return [v for v in (1, 2)
                if event_id in {r["event_id"] for r in queries.session_events(ch, "p1", sid, v, 100)}]

    before = {i: versions_of(i) for i in (shared, a1, c1)}
    assert before == {shared: [1], a1: [1], c1: [2]}
    assert queries.session_totals(ch, "p1", sid, 1, 10, 10)["event_count"] == 2
    assert queries.session_totals(ch, "p1", sid, 2, 10, 10)["event_count"] == 1
    for table in ("events", "event_ids"):
        ch.execute(f"OPTIMIZE TABLE {db}.{table} FINAL")
    after = {i: versions_of(i) for i in (shared, a1, c1)}
    print("owner versions before", list(before.values()), "after OPTIMIZE FINAL", list(after.values()))
    assert after == before
    assert ch.execute(f"SELECT batch_id FROM {db}.events_dedup WHERE event_id = %(e)s",
                      {"e": shared}) == [(early["batch_id"],)]
    raw = ch.execute(f"SELECT count() FROM {db}.events WHERE session_id = %(s)s", {"s": sid})[0][0]
    assert raw == 4 and _dedup_count(ch, sid) == 3  # raw count() exceeds; the view does not


def test_batch_stored_late_never_moves_a_delivered_event(pipe):
    """A batch received first but stored after another's version was delivered keeps nothing it shares."""
    sid = "s-" + uuid.uuid4().hex[:8]
    shared, b1, a1 = _ids(3)
    first_stored = _batch([shared, b1], sid, BASE + 10_000)
    pipe.ingest(first_stored)
    [v1] = pipe.deliver(pipe.claim(BASE + 10_000 + IDLE_MS))
    delayed = _batch([shared, a1], sid, BASE)  # received earlier, stored after v1 went out
    pipe.ingest(delayed)
    [v2] = pipe.deliver(pipe.claim(int(time.time() * 1000) + IDLE_MS))
    assert sorted(_event_ids(v1)) == sorted([shared, b1]) and _event_ids(v2) == [a1]
    pipe.ch.execute(f"OPTIMIZE TABLE {pipe.ch.database}.events FINAL")
    assert shared in _event_ids(forward_step.prepare(pipe.ch, {"pending": 0}, project="p1", session_id=sid, version=1,
                                                settings=S).payload)


def test_redelivery_after_its_marker_expired_counts_nothing(pipe):
    """The marker is gone (expired after BATCH_MARKER_TTL, evicted): ClickHouse's session_batches
    still knows the batch was counted, so the redelivery counts nothing."""
    sid = "s-" + uuid.uuid4().hex[:8]
    b = _batch(_ids(3), sid, BASE)
    assert pipe.ingest(b) == [{sid: 1}]
    for key in pipe.r.scan_iter(f"{S.redis_key_prefix}*applied:{b['batch_id']}:*"):
        pipe.r.delete(key)  # what the TTL does
    assert pipe.ingest(dict(b, events=list(b["events"]))) == [{sid: 1}]  # the redelivery
    assert pipe.store.live("p1", sid)["batches"] == "1" and pipe.store.live("p1", sid)["events"] == "3"
    [claimed] = pipe.claim(BASE + IDLE_MS)
    [body] = pipe.deliver([claimed])
    assert body["session"]["event_count"] == 3


def test_legacy_session_step_counted_twice_still_lets_its_version_be_delivered(pipe):
    """An older worker's sessions.update (no ClickHouse check): a lost marker, then a redelivery,
    counts the batch twice in Redis and once in ClickHouse, and the version is still delivered."""
    sid = "s-" + uuid.uuid4().hex[:8]
    b = _batch(_ids(3), sid, BASE)
    pipe.ingest(b)
    for key in pipe.r.scan_iter(f"{S.redis_key_prefix}*applied:{b['batch_id']}:*"):
        pipe.r.delete(key)  # the marker is lost (an eviction, a failover)
    apply_summary(pipe.store, pipe.ch, session_summary(b))  # the redelivery, on the old task
    assert pipe.store.live("p1", sid)["batches"] == "2"
    [claimed] = pipe.claim(BASE + IDLE_MS)
    snap = pipe.store.snapshot("p1", sid, claimed.version)
    assert queries.count_session_batches(pipe.ch, "p1", sid, 1) == 1 < int(snap["batches"])
    [body] = pipe.deliver([claimed])
    assert body["session"]["event_count"] == 3


def test_one_flush_of_many_batches_counts_each_once_with_one_session_batches_insert(pipe, monkeypatch):
    """The session step of a flush: every batch and session in one round, one INSERT."""
    sids = ["s-" + uuid.uuid4().hex[:8] for _ in range(5)]
    batches = [_batch(_ids(2), sids[i % 5], BASE + i) for i in range(20)]
    inserts = []
    real = queries.insert_session_batches
    monkeypatch.setattr(queries, "insert_session_batches",
                        lambda ch, rows, settings=None: inserts.append(len(rows)) or real(ch, rows, settings))
    got = pipe.ingest(*batches, batches[3])  # the same batch twice in one flush, too
    assert inserts == [20], inserts
    assert all(g == {b["events"][0]["session_id"]: 1} for g, b in zip(got, batches, strict=False))
    for sid in sids:
        assert pipe.store.live("p1", sid)["batches"] == "4" and pipe.store.live("p1", sid)["events"] == "8"


def test_readiness_waits_for_a_counted_batch_that_is_not_written(pipe):
    """The wait is real: a batch counted (Lua) whose session_batches row is not in yet holds the version."""
    sid = "s-" + uuid.uuid4().hex[:8]
    b1, b2 = _batch(_ids(2), sid, BASE), _batch(_ids(2), sid, BASE + 1_000)
    pipe.ingest(b1)
    persist_batches(pipe.ch, [b2])
    summary = session_summary(b2)
    per = {k: tuple(v) for k, v in summary["sessions"].items()}
    versions = pipe.store.apply_batch("p1", b2["batch_id"], per, at_ms=BASE + 1_000)  # counted, not yet written
    [claimed] = pipe.claim(BASE + 1_000 + IDLE_MS)
    snap = pipe.store.snapshot("p1", sid, claimed.version)
    with pytest.raises(forward_step.NotVisibleYet):
        forward_step.prepare(pipe.ch, snap, project="p1", session_id=sid, version=claimed.version, settings=S)
    queries.insert_session_batches(pipe.ch, [("p1", sid, versions[sid][0], b2["batch_id"], 2)])
    pipe.store.mark_written("p1", b2["batch_id"], {sid: versions[sid][0]})
    [body] = pipe.deliver([claimed])
    assert body["session"]["event_count"] == 4


def test_storage_outage_longer_than_the_marker_ttl_counts_the_batch_once_in_its_version(pipe):
    """ClickHouse goes away between a batch's Lua step and its session_batches INSERT (a real
    refused connection), for 20 minutes: longer than BATCH_MARKER_TTL (900 s at the defaults).
    The outage's length is played by deleting every marker whose real TTL is shorter than it.
    Before, the unwritten marker lived BATCH_MARKER_TTL: gone when ClickHouse came back, the
    redelivery counted the batch again into version 2, and the frozen version 1 kept pending=1
    until it was dead-lettered as never visible."""
    from app.storage.clickhouse.client import ClickHouseError, get_clickhouse

    outage_s = 20 * 60
    sid = "s-" + uuid.uuid4().hex[:8]
    b1, b2 = _batch(_ids(2), sid, BASE), _batch(_ids(3), sid, BASE + 1_000)
    pipe.ingest(b1)
    persist_batches(pipe.ch, [b2])  # b2's events are stored; then ClickHouse refuses connections
    down = get_clickhouse("clickhouse://default:@127.0.0.1:1/" + (pipe.ch.database or "x"))
    with pytest.raises(ClickHouseError):
        count_batches(pipe.store, down, [b2])  # the Lua step ran, the INSERT did not
    down.close()
    markers = list(pipe.r.scan_iter(f"{S.redis_key_prefix}*applied:{b2['batch_id']}:*"))
    assert markers and all(pipe.r.get(k) == "1" for k in markers), "counted into v1, not written"
    [claimed] = pipe.claim(BASE + 1_000 + IDLE_MS)  # the session goes idle meanwhile: v1 frozen, pending 1
    assert pipe.store.snapshot("p1", sid, 1)["pending"] == "1"
    for key in markers:
        if 0 <= pipe.r.ttl(key) < outage_s:
            pipe.r.delete(key)  # what its TTL does during the outage
    # ClickHouse is back: the message is redelivered (its events are found stored)
    assert pipe.ingest(dict(b2, events=list(b2["events"]))) == [{sid: 1}], "counted into v1, once"
    assert pipe.store.snapshot("p1", sid, 1)["pending"] == "0"
    assert not pipe.store.live("p1", sid), "no version 2 was started"
    [body] = pipe.deliver([claimed])
    assert body["session"]["event_count"] == 5 and body["session"]["version"] == 1
    assert all(0 < pipe.r.ttl(k) <= S.batch_marker_ttl for k in markers), "written: back to BATCH_MARKER_TTL"


def test_sessions_redis_lost_versions_continue_and_live_ones_are_reconciled(pipe):
    """FLUSHDB mid-run: versions go on from ClickHouse's highest; forgotten versions are delivered."""
    sid = "s-" + uuid.uuid4().hex[:8]
    now = int(time.time() * 1000)
    pipe.ingest(_batch(_ids(2), sid, now - 3 * IDLE_MS))
    pipe.deliver(pipe.claim(now - 2 * IDLE_MS))                         # v1 delivered
    v2_ids = _ids(3)
    pipe.ingest(_batch(v2_ids, sid, now - 2 * IDLE_MS + 1_000))
    assert [c.version for c in pipe.claim(now - IDLE_MS + 2_000)] == [2]  # v2 frozen, not delivered
    v3_ids = _ids(2)
    pipe.ingest(_batch(v3_ids, sid, now - 60_000))                      # v3 live
    pipe.r.flushdb()                                                    # the sessions Redis loses everything
    [got] = pipe.ingest(_batch(_ids(1), sid, now))
    assert got == {sid: 4}, got                                         # not 1: webhook-id p1:sid:1 was used
    from app.sessions.reconcile import reconcile

    # the quiet time a forgotten version must show (idle + 15 s), plus a minute: the rows above were
    # written after `now` (created_ms is the real clock), and a slow run takes seconds to get here
    later = now + (S.session_idle_timeout + 16 + 60) * 1000
    found = reconcile(pipe.store, pipe.ch, idle_s=S.session_idle_timeout, at_ms=later)
    assert sorted(c.version for c in found) == [2, 3]                   # v1 recorded, v4 live in Redis
    bodies = {b["session"]["version"]: b for b in pipe.deliver(found)}
    assert sorted(_event_ids(bodies[2])) == sorted(v2_ids) and sorted(_event_ids(bodies[3])) == sorted(v3_ids)
    assert reconcile(pipe.store, pipe.ch, idle_s=S.session_idle_timeout, at_ms=later) == []
    by_id = _deliveries_by_id(pipe.sink)
    print("webhook-ids delivered:", sorted(by_id))
    assert sorted(by_id) == [f"p1:{sid}:{v}" for v in (1, 2, 3)]
    assert all(len(contents) == 1 for contents in by_id.values())


def test_batch_counted_again_after_its_version_was_delivered_stays_in_that_version(pipe):
    """Markers lost after delivery (Redis lost its data), then the batch's session step runs again."""
    sid = "s-" + uuid.uuid4().hex[:8]
    b = _batch(_ids(3), sid, BASE)
    pipe.ingest(b)
    [v1] = pipe.deliver(pipe.claim(BASE + IDLE_MS))
    pipe.r.flushdb()
    assert pipe.ingest(b) == [{sid: 1}]  # ClickHouse knows it was counted into version 1: nothing counted
    # an older worker's task would count it again
    assert apply_summary(pipe.store, pipe.ch, session_summary(b)) == {sid: 2}
    extra = _batch(_ids(1), sid, BASE + IDLE_MS + 5_000)
    pipe.ingest(extra)
    [v2] = pipe.deliver(pipe.claim(int(time.time() * 1000) + IDLE_MS))
    assert len(v1["events"]) == 3 and _event_ids(v2) == [e["event_id"] for e in extra["events"]]
    assert forward_step.prepare(pipe.ch, {"pending": 0}, project="p1", session_id=sid, version=1,
                           settings=S).payload["session"]["event_count"] == 3

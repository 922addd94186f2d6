"""Pure helpers of the bench's parts: key kinds, marker projection, the settled-value check its
waits use, and the load generator's request bodies (devtools.load)."""
from __future__ import annotations

import json
import math

from devtools.bench.measure import MARKER, grown, kind_of, projected
from devtools.bench.phases import markers, steady
from devtools.load import BodyMaker, Shape, probe_prefix


def test_key_kinds_drop_hash_tags_and_ids():
    p = "obs:"
    assert kind_of("obs:s:{b3}:live:proj:r1s-c0-s5", p) == "s:live"
    assert kind_of("obs:s:{b12}:applied:9f86d081884c7d65:proj:sid", p) == "s:applied"
    assert kind_of("obs:s:{b0}:deadline", p) == "s:deadline"
    assert kind_of("obs:due:{events}:item:abc", p) == "due:item"
    assert kind_of("obs:claim-lock", p) == "claim-lock"
    assert kind_of("obs:batch:0123456789abcdef0123:stored", p) == "batch"
    assert kind_of("unacked", p) == "(other) unacked"
    assert kind_of("_kombu.binding.events", p) == "(other) ?"


def test_marker_memory_is_written_per_second_times_ttl_times_bytes():
    # 2,000 markers for 100,000 events = 20 per second at 1,000 events/s, kept 900 s, 120 B each
    got = projected(2000, 100_000, 900, 120)
    assert got["per_s_per_1k_eps"] == 20.0
    assert got["bytes_per_1k_eps"] == 20 * 900 * 120
    assert math.isclose(got["mb_per_1k_eps"], 2.16)
    assert math.isnan(projected(5, 0, 900, 120)["per_s_per_1k_eps"])


def test_grown_keeps_only_kinds_with_new_keys():
    before = {"s:live": {"keys": 10}, "s:applied": {"keys": 5}}
    after = {"s:live": {"keys": 10, "bytes_each": 1}, "s:applied": {"keys": 8, "bytes_each": 2}, "new": {"keys": 1}}
    assert grown(before, after) == {"s:applied": {"keys": 8, "bytes_each": 2, "new": 3}, "new": {"keys": 1, "new": 1}}


def test_the_marker_kind_is_the_session_stores_applied_key():
    assert kind_of("obs:s:{b7}:applied:5f0c2a9e:bench:r1s-c0-s3", "obs:") == MARKER
    assert kind_of("obsb:s:{b7}:applied:5f0c2a9e:bench:r1s-c0-s3", "obsb:") == MARKER


def test_steady_holds_once_the_value_repeats():
    values = iter([3, 0, 2, 0, 0, 0])
    check = steady(lambda: next(values), want=0)
    assert [check() for _ in range(5)] == [False, False, False, False, True]
    sizes = iter([5, 7, 7, 7])
    still = steady(lambda: next(sizes), times=3)
    assert [still() for _ in range(4)] == [False, False, False, True]


def test_bodies_have_the_shape_asked_for_and_unique_event_ids():
    maker = BodyMaker(Shape(batch=50, event_bytes=400), "r1s-", 3)
    ids = set()
    for seq in range(3):
        body, sid = maker.body(seq)
        events = json.loads(body)["events"]
        assert len(events) == 50
        assert {e["session_id"] for e in events} == {sid} == {f"r1s-c3-s{seq}"}
        sizes = [len(json.dumps(e, separators=(",", ":"))) for e in events]
        assert all(380 <= s <= 420 for s in sizes), sizes[:3]
        ids |= {e["event_id"] for e in events}
    assert len(ids) == 150
    many = BodyMaker(Shape(batch=50, sessions_per_batch=50, session_pool=12_500), "m-", 0)
    events = json.loads(many.body(2)[0])["events"]
    assert len({e["session_id"] for e in events}) == 50
    assert events[0]["session_id"] == "m-c0-s100"
    probe, sid = maker.body(9, "r1o-p7")
    assert sid == "r1o-p7" and sid.startswith(probe_prefix("r1o-"))
    small = json.loads(BodyMaker(Shape(batch=1, event_bytes=8192), "x-", 0).body(0)[0])["events"][0]
    assert 8100 <= len(json.dumps(small, separators=(",", ":"))) <= 8300


def test_gzip_bodies_decompress_to_the_same_shape():
    import gzip

    body, sid = BodyMaker(Shape(batch=20, gzip=True), "z-", 1).body(4)
    events = json.loads(gzip.decompress(body))["events"]
    assert len(events) == 20 and events[0]["session_id"] == sid == "z-c1-s4"


def test_marker_memory_is_projected_at_the_default_marker_ttl():
    """The TTL the projection uses is the settings' derived default (15 x the visibility timeout)."""
    none = markers({}, 1000)
    assert none["ttl_s"] == 900.0 and none["new_keys"] == 0
    seen = markers({MARKER: {"new": 2000, "ttl_s": 880.0, "bytes_each": 100.0}}, 20_000)
    assert seen["ttl_source"] == "BATCH_MARKER_TTL (Redis agrees)" and seen["ttl_s"] == 900.0

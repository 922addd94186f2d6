"""Pure helpers of the bench's parts: key kinds, marker projection, the marker found in the
session store's code, INSERT statements per table, and the generated request bodies."""
from __future__ import annotations

import json
import math

from benchkit.chstats import statements_per_table
from benchkit.load import BodyMaker, Shape, probe_prefix
from benchkit.redismem import grown, is_marker_kind, kind_of, marker_names, projected


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


def test_marker_names_are_read_from_the_store_code(tmp_path):
    store = tmp_path / "app" / "sessions"
    store.mkdir(parents=True)
    (store / "store.py").write_text(
        "class SessionStore:\n"
        "    def keys(self):\n"
        "        return {'live': f'{base}live:', 'seen': f'{base}seen:'}\n\n"
        "    def _marker(self, k, project, batch_id, sid):\n"
        "        return f\"{k['seen']}{batch_id}:{project}:{sid}\"\n\n"
        "    def other(self):\n"
        "        return k['live']\n")
    assert marker_names(tmp_path) == ["seen"]
    assert is_marker_kind("s:seen", ["seen"]) and not is_marker_kind("s:live", ["seen"])
    assert marker_names(tmp_path / "nowhere") == []


def test_insert_statements_are_counted_per_table_of_the_database():
    rows = [("INSERT INTO db1.events (a) VALUES", 500), ("INSERT INTO `db1`.`session_batches` VALUES", 20),
            ("insert into events VALUES", 100), ("INSERT INTO other.events VALUES", 7), ("SELECT 1", 0)]
    assert statements_per_table(rows, "db1") == [("events", 2, 600), ("session_batches", 1, 20)]


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


def test_saturation_names_the_parts_at_their_limit():
    from benchkit.limits import saturation, top

    cpu = {"web": 175.0, "events": 20.0, "broker redis": 90.0, "clickhouse": 10.0}
    cap = {"web": 2, "events": 2, "broker redis": 1, "clickhouse": 2}
    flags = saturation(cpu, cap, 2, backlog_s=1.0)
    assert flags == ["machine CPU (295 of 200 %)", "web (175 of 200 %)", "broker redis (90 of 100 %)"]
    behind = ["storage behind ingest (4.0 s of ingest not stored at the end)"]
    assert saturation({"web": 50.0}, {"web": 2}, 2, 4.0) == behind
    assert saturation({"web": 50.0}, {"web": 2}, 2, 2.5) == []
    assert saturation({"web": 50.0}, {"web": 2}, 2, float("nan")) == []
    # a kind that may use more processes than there are cores is capped at the machine
    assert saturation({"events": 170.0}, {"events": 4}, 2, 0.0) == ["events (170 of 200 %)"]
    assert top({**cpu, "load generator": 500.0}, 2) == "web 175, broker redis 90"


def test_gzip_bodies_decompress_to_the_same_shape():
    import gzip

    body, sid = BodyMaker(Shape(batch=20, gzip=True), "z-", 1).body(4)
    events = json.loads(gzip.decompress(body))["events"]
    assert len(events) == 20 and events[0]["session_id"] == sid == "z-c1-s4"


def test_a_full_machine_says_how_much_other_jobs_took():
    from benchkit.limits import OTHERS, saturation

    flags = saturation({"web": 120.0, OTHERS: 70.0}, {"web": 2}, 2, 0.0)
    assert flags == ["machine CPU (190 of 200 %, 70 of it other jobs)"]  # other jobs are never "a part"

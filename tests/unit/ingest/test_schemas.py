"""Unit tests for app.ingest.schemas: batch shape and per-event validation and normalization."""

import json
import uuid
from pathlib import Path

import pytest

from app.ingest.errors import InvalidBatch, TooManyEvents
from app.ingest.schemas import EVENT_TYPES, parse_batch, validate_events

NOW_MS = 1_795_773_600_000  # 2026-11-27T10:00:00.000Z
DAY_MS = 86_400_000
LIMITS = {"received_at_ms": NOW_MS, "max_event_bytes": 10_240, "max_past_ms": 7 * DAY_MS,
          "max_future_ms": 3_600_000}
EVENT_ID = "0b6f3c0e-8d1a-4c4e-9f50-3a1f7a2b9c01"


def event(**overrides):
    base = {"event_id": EVENT_ID, "type": "click", "timestamp": NOW_MS, "session_id": "s-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def check(*events, **limits):
    return validate_events(list(events), **{**LIMITS, **limits})


def accepted_one(**overrides):
    accepted, rejected = check(event(**overrides))
    assert rejected == [], rejected
    return accepted[0]


def rejected_one(raw, **limits):
    accepted, rejected = check(raw, **limits)
    assert accepted == []
    return rejected[0]


# --- parse_batch -------------------------------------------------------------------------

def test_parse_batch_returns_events_and_body_key():
    events, key = parse_batch({"events": [1, None, {}], "api_key": "obs_pk_x", "extra": {}},
                              max_events=10)
    assert events == [1, None, {}] and key == "obs_pk_x"


@pytest.mark.parametrize("body", [
    {"events": []}, {"events": [], "api_key": None}, {"events": [], "api_key": ""},
    {"events": [], "sent_at": NOW_MS}, {"events": [], "sent_at": "2026-11-27T10:00:00Z"},
    {"events": [], "sent_at": None},
])
def test_parse_batch_optional_fields(body):
    assert parse_batch(body, max_events=10)[1] is None


@pytest.mark.parametrize("body", [
    [], "events", None, 3, {}, {"events": None}, {"events": {}}, {"events": "[]"},
    {"events": [], "api_key": 5}, {"events": [], "api_key": "k" * 257},
    {"events": [], "sent_at": "2026-11-27T10:00:00"}, {"events": [], "sent_at": 1.5},
    {"events": [], "sent_at": True}, {"events": [], "sent_at": 1_700_000_000},
])
def test_parse_batch_refuses_non_batches(body):
    with pytest.raises(InvalidBatch) as info:
        parse_batch(body, max_events=10)
    assert (info.value.status, info.value.code) == (400, "invalid_batch")


def test_parse_batch_too_many_events():
    assert len(parse_batch({"events": [{}] * 1000}, max_events=1000)[0]) == 1000
    with pytest.raises(TooManyEvents) as info:
        parse_batch({"events": [{}] * 1001}, max_events=1000)
    assert (info.value.status, info.value.code) == (413, "too_many_events")
    assert info.value.details == {"max_events": 1000, "received": 1001}


# --- normalization -----------------------------------------------------------------------

def test_normalized_shape_and_order():
    got = accepted_one(event_id=EVENT_ID.upper(), url="https://example.com/a?b=1#c",
                       name="x", anonymous_id="anon.1", metadata={"k": [1, {"v": None}]})
    assert list(got) == ["event_id", "type", "ts_ms", "session_id", "url", "name",
                         "anonymous_id", "metadata", "index"]
    assert got == {"event_id": EVENT_ID, "type": "click", "ts_ms": NOW_MS, "session_id": "s-1",
                   "url": "https://example.com/a?b=1#c", "name": "x", "anonymous_id": "anon.1",
                   "metadata": {"k": [1, {"v": None}]}, "index": 0}


def test_absent_and_null_optionals_become_empty():
    got = accepted_one(url=None, name=None, anonymous_id=None, metadata=None)
    assert (got["url"], got["name"], got["anonymous_id"], got["metadata"]) == ("", "", "", {})
    got = accepted_one(url="", anonymous_id="")
    assert (got["url"], got["name"], got["anonymous_id"], got["metadata"]) == ("", "", "", {})


@pytest.mark.parametrize("value, expected", [
    ("2026-11-27T10:00:00.123Z", NOW_MS + 123),
    ("2026-11-27T10:00:00.1239Z", NOW_MS + 123),  # truncated, not rounded
    ("2026-11-27T10:00:00.999999999Z", NOW_MS + 999),
    ("2026-11-27T10:00:00.1Z", NOW_MS + 100),
    ("2026-11-27T10:00:00Z", NOW_MS),
    ("2026-11-27t10:00:00z", NOW_MS),
    ("2026-11-27 10:00:00,5+00:00", NOW_MS + 500),
    ("2026-11-27T11:30:00.007+01:30", NOW_MS + 7),
    ("2026-11-27T05:00:00.042-0500", NOW_MS + 42),
    (NOW_MS + 1, NOW_MS + 1),
])
def test_timestamps_keep_milliseconds(value, expected):
    assert accepted_one(timestamp=value)["ts_ms"] == expected


def test_every_event_type_is_accepted():
    for event_type in EVENT_TYPES:
        assert accepted_one(type=event_type, name="n")["type"] == event_type


# --- rejections --------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [None, 1, "event", [event()], True])
def test_not_an_object(raw):
    rejection = rejected_one(raw)
    assert rejection["code"] == "not_an_object" and rejection["index"] == 0


def test_event_too_large_counts_utf8_bytes():
    fits = event(metadata={"s": ""})
    room = 10_240 - len(json.dumps(fits, separators=(",", ":")).encode())
    assert check(event(metadata={"s": "x" * room}))[1] == []
    assert rejected_one(event(metadata={"s": "x" * (room + 1)}))["code"] == "event_too_large"
    # Two-byte characters count twice: the limit is on UTF-8 bytes, not characters.
    assert rejected_one(event(metadata={"s": "é" * (room // 2 + 1)}))["code"] == "event_too_large"


def test_too_large_is_checked_before_the_schema():
    assert rejected_one({"junk": "x" * 20_000})["code"] == "event_too_large"


@pytest.mark.parametrize("field, overrides", [
    ("event_id", {"event_id": ...}), ("event_id", {"event_id": "not-a-uuid"}),
    ("event_id", {"event_id": EVENT_ID.replace("-", "")}), ("event_id", {"event_id": 5}),
    ("type", {"type": ...}), ("type", {"type": "pageview"}), ("type", {"type": "CLICK"}),
    ("timestamp", {"timestamp": ...}), ("timestamp", {"timestamp": "2026-11-27T10:00:00"}),
    ("timestamp", {"timestamp": "2026-11-27"}), ("timestamp", {"timestamp": "yesterday"}),
    ("timestamp", {"timestamp": float(NOW_MS)}), ("timestamp", {"timestamp": True}),
    ("timestamp", {"timestamp": NOW_MS // 1000}), ("timestamp", {"timestamp": NOW_MS * 1000}),
    ("timestamp", {"timestamp": "2026-02-30T10:00:00Z"}),
    ("timestamp", {"timestamp": "2026-11-27T10:00:00+24:00"}),
    ("timestamp", {"timestamp": "2026-11-27T10:00:00+05:60"}),
    ("timestamp", {"timestamp": "2026-11-27T10:00:00." + "1" * 70 + "Z"}),
    ("timestamp", {"timestamp": "٢٠٢٦-11-27T10:00:00Z"}),
    ("timestamp", {"timestamp": None}), ("timestamp", {"timestamp": [NOW_MS]}),
    ("session_id", {"session_id": ...}), ("session_id", {"session_id": ""}),
    ("session_id", {"session_id": "a" * 129}), ("session_id", {"session_id": "a b"}),
    ("session_id", {"session_id": "a\n"}), ("session_id", {"session_id": "é"}),
    ("url", {"url": "javascript:alert(1)"}), ("url", {"url": "/relative"}),
    ("url", {"url": "https://"}), ("url", {"url": "https://x.com/" + "a" * 2048}),
    ("url", {"url": "https://x.com/a b"}), ("url", {"url": "http://[::1"}),
    ("url", {"url": "https://x.com/\x00"}), ("url", {"url": 5}),
    ("name", {"name": "n" * 201}), ("name", {"name": "a\x00b"}), ("name", {"name": ["n"]}),
    ("name", {"type": "custom"}), ("name", {"type": "custom", "name": ""}),
    ("anonymous_id", {"anonymous_id": "a@b"}), ("anonymous_id", {"anonymous_id": "a" * 129}),
    ("metadata", {"metadata": []}), ("metadata", {"metadata": "{}"}),
    ("metadata", {"metadata": {"a\x00": 1}}), ("metadata", {"metadata": {"a": ["\ud800"]}}),
    ("metadata", {"metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {}}}}}}}}}}}}),
    ("unknown", {"unknown": 1}),
])
def test_invalid_event(field, overrides):
    rejection = rejected_one(event(**overrides))
    assert rejection["code"] == "invalid_event"
    assert field in rejection["errors"], rejection
    assert all(isinstance(m, list) for m in rejection["errors"].values())


def test_limits_at_the_edge_are_accepted():
    nested = {"v": 1}
    for _ in range(9):  # metadata itself is level 1, so 10 levels in all
        nested = {"n": nested}
    got = accepted_one(session_id="a" * 128, anonymous_id="B" * 128, name="n" * 200,
                       url="http://x.com/" + "a" * (2048 - 13), metadata=nested,
                       event_id=str(uuid.uuid1()))
    assert got["metadata"] == nested


def test_deep_nesting_beyond_recursion_is_rejected_not_raised():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    assert rejected_one(event(metadata={"d": deep}))["code"] == "invalid_event"


@pytest.mark.parametrize("offset_ms, ok", [
    (-7 * DAY_MS, True), (-7 * DAY_MS - 1, False), (3_600_000, True), (3_600_001, False),
])
def test_timestamp_window(offset_ms, ok):
    accepted, rejected = check(event(timestamp=NOW_MS + offset_ms))
    if ok:
        assert len(accepted) == 1
    else:
        assert rejected[0]["code"] == "timestamp_out_of_range"
        assert list(rejected[0]["errors"]) == ["timestamp"]


def test_duplicate_event_id_keeps_the_first_accepted():
    first = event(session_id="first")
    invalid_copy = event(type="nope")
    upper_copy = event(event_id=EVENT_ID.upper(), session_id="second")
    accepted, rejected = check(invalid_copy, first, upper_copy)
    assert [e["session_id"] for e in accepted] == ["first"]
    assert [(r["index"], r["code"]) for r in rejected] == [(0, "invalid_event"),
                                                           (2, "duplicate_event_id")]


def test_partial_batch_keeps_order_and_indexes():
    events = [event(event_id=str(uuid.uuid4())) for _ in range(4)]
    events[1] = "nope"
    events[3]["type"] = "bogus"
    accepted, rejected = check(*events)
    assert [e["index"] for e in accepted] == [0, 2]
    assert [(r["index"], r["code"]) for r in rejected] == [(1, "not_an_object"), (3, "invalid_event")]


def test_openapi_event_types_match_the_schema():
    spec = json.loads((Path(__file__).parents[3] / "app/web/openapi.json").read_text())
    assert tuple(spec["components"]["schemas"]["EventType"]["enum"]) == EVENT_TYPES

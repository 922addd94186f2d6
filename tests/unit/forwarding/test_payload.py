"""The UFSE payload built from ClickHouse rows and totals."""

import json

from app.forwarding.payload import build_payload, encode, rfc3339_ms, webhook_id

T0 = 1_795_773_600_000  # 2026-11-27T10:00:00.000Z


def row(i, type_="click", **extra):
    base = {
        "event_id": f"00000000-0000-4000-8000-{i:012d}", "type": type_, "ts_ms": T0 + i * 1000 + 123,
        "received_at_ms": T0 + i * 1000 + 500, "session_id": "s-1", "url": "https://shop.test/p",
        "name": "", "anonymous_id": "", "metadata": json.dumps({"i": i}),
    }
    base.update(extra)
    return base


def totals(n, **extra):
    base = {"event_count": n, "counts": {"click": n}, "first_ts_ms": T0 + 123,
            "last_ts_ms": T0 + (n - 1) * 1000 + 123, "pages": ["https://shop.test/p"],
            "request_ids": ["r1", "r2"]}
    base.update(extra)
    return base


def build(rows, tot, **caps):
    args = dict(max_events=100, max_request_ids=10, max_pages=10)
    args.update(caps)
    return build_payload(project="proj", session_id="s-1", version=2, finalized_reason="idle",
                         finalized_at_ms=T0 + 3_600_000, event_rows=rows, totals=tot, **args)


def test_rfc3339_ms():
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339_ms(1_795_773_600_123) == "2026-11-27T10:00:00.123Z"
    assert rfc3339_ms(1_700_000_000_007) == "2023-11-14T22:13:20.007Z"
    assert rfc3339_ms(-1) == "1969-12-31T23:59:59.999Z"


def test_rfc3339_ms_keeps_exact_milliseconds():
    # Every millisecond value must survive; float division loses some of them.
    for ms in range(1000):
        assert rfc3339_ms(1_795_773_600_000 + ms).endswith(f".{ms:03d}Z")


def test_webhook_id():
    assert webhook_id("proj", "s-1", 3) == "proj:s-1:3"


def test_session_summary():
    payload = build([row(0), row(1), row(2, "error")], totals(3, counts={"click": 2, "error": 1}))
    session = payload["session"]
    assert session == {
        "project": "proj", "session_id": "s-1", "version": 2,
        "first_timestamp": "2026-11-27T10:00:00.123Z", "last_timestamp": "2026-11-27T10:00:02.123Z",
        "duration_ms": 2000, "event_count": 3, "counts": {"click": 2, "error": 1},
        "pages": ["https://shop.test/p"], "request_ids": ["r1", "r2"], "truncated": False,
        "finalized_reason": "idle", "finalized_at": "2026-11-27T11:00:00.000Z",
    }


def test_event_shape_and_metadata_parsed():
    payload = build([row(0, "custom", name="signup", anonymous_id="a-1",
                         metadata='{"plan":"pro","n":[1,2]}')], totals(1))
    assert payload["events"] == [{
        "event_id": "00000000-0000-4000-8000-000000000000", "type": "custom",
        "timestamp": "2026-11-27T10:00:00.123Z", "received_at": "2026-11-27T10:00:00.500Z",
        "session_id": "s-1", "url": "https://shop.test/p", "name": "signup",
        "anonymous_id": "a-1", "metadata": {"plan": "pro", "n": [1, 2]},
    }]


def test_empty_optional_columns_become_null():
    event = build([row(0)], totals(1))["events"][0]
    assert event["name"] is None and event["anonymous_id"] is None


def test_empty_or_corrupt_metadata_is_kept_not_dropped():
    events = build([row(0, metadata=""), row(1, metadata="{not json")], totals(2))["events"]
    assert events[0]["metadata"] == {}
    assert events[1]["metadata"] == {"_unparsed": "{not json"}


def test_events_keep_reader_order():
    rows = [row(0), row(1), row(2)]
    ids = [e["event_id"] for e in build(rows, totals(3))["events"]]
    assert ids == [r["event_id"] for r in rows]


def test_extra_row_means_truncated():
    rows = [row(i) for i in range(4)]  # the reader fetched max_events + 1
    payload = build(rows, totals(10), max_events=3)
    assert len(payload["events"]) == 3
    assert payload["session"]["truncated"] is True
    assert payload["session"]["event_count"] == 10
    # Summary times come from totals, not from the capped rows.
    assert payload["session"]["last_timestamp"] == rfc3339_ms(T0 + 9 * 1000 + 123)


def test_exactly_max_events_is_not_truncated():
    payload = build([row(i) for i in range(3)], totals(3), max_events=3)
    assert payload["session"]["truncated"] is False and len(payload["events"]) == 3


def test_pages_and_request_ids_are_capped():
    tot = totals(1, pages=[f"https://shop.test/{i}" for i in range(9)],
                 request_ids=[f"r{i}" for i in range(9)])
    session = build([row(0)], tot, max_pages=2, max_request_ids=3)["session"]
    assert session["pages"] == ["https://shop.test/0", "https://shop.test/1"]
    assert session["request_ids"] == ["r0", "r1", "r2"]


def test_missing_first_last_fall_back_to_rows():
    tot = {"event_count": 2, "counts": {"click": 2}, "pages": [], "request_ids": []}
    session = build([row(0), row(5)], tot)["session"]
    assert session["first_timestamp"] == rfc3339_ms(T0 + 123)
    assert session["duration_ms"] == 5000


def test_encode_is_compact_utf8_json():
    payload = build([row(0, metadata='{"city":"Z\u00fcrich"}')], totals(1))
    data = encode(payload)
    assert isinstance(data, bytes)
    assert b": " not in data and b", " not in data
    assert "Zürich".encode() in data
    assert json.loads(data) == payload

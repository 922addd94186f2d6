"""The fast path is the marshmallow path, only cheaper: equal results over generated bodies.

Each test runs both paths on the same generated input and compares everything a client or a
worker sees: accepted events (normalized dicts, in order, types included), rejections (index,
code, errors), parse_batch's answer or error, and the broker message built from the result.
The slow side is ``fast=False``: marshmallow alone, json.dumps sizes, stdlib JSON.
"""
from __future__ import annotations

import copy
import hashlib
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.ingest.body import _parse
from app.ingest.errors import IngestError
from app.ingest.message import batch_id_for, metadata_json
from app.ingest.privacy import DEFAULT_SENSITIVE_PARAMS, DROPPED_KEYS, mask_string, scrub_event
from app.ingest.schemas import check_events, parse_batch, validate_events
from tests.unit.ingest.strategies import LIMITS, NOW_MS, edge_events, raw_events, scalars, text, timestamps

# Bounded so the file runs in a few seconds; every run draws new examples.
DIFF = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def same(a, b) -> bool:
    """Equal, and equal in types and order too (1 == 1.0 == True for ==; not for repr)."""
    return a == b and repr(a) == repr(b)


def both_paths(events: list, max_event_bytes: int):
    fast = check_events(copy.deepcopy(events), max_event_bytes=max_event_bytes, **LIMITS)
    slow = check_events(copy.deepcopy(events), max_event_bytes=max_event_bytes, **LIMITS, fast=False)
    return fast, slow


def _reference_scrub_value(value, params):
    """The scrub walk of the release before the fast path, over mask_string without prefilters."""
    if isinstance(value, str):
        return mask_string(value, params, fast=False)
    if isinstance(value, dict):
        masked = 0
        for key in list(value):
            if isinstance(key, str) and key.lower() in DROPPED_KEYS:
                del value[key]
                masked += 1
                continue
            value[key], n = _reference_scrub_value(value[key], params)
            masked += n
        return value, masked
    if isinstance(value, list):
        masked = 0
        for i, item in enumerate(value):
            value[i], n = _reference_scrub_value(item, params)
            masked += n
        return value, masked
    return value, 0


def reference_scrub_event(event: dict, params=DEFAULT_SENSITIVE_PARAMS) -> int:
    masked = 0
    for field in ("url", "name"):
        if isinstance(event.get(field), str):
            event[field], n = mask_string(event[field], params, fast=False)
            masked += n
    if isinstance(event.get("metadata"), dict):
        masked += _reference_scrub_value(event["metadata"], params)[1]
    return masked


def reference_message(project: str, accepted: list[dict]) -> dict:
    """The broker message as the view built it before the fast path (json everywhere)."""
    events = []
    masked = 0
    for e in accepted:
        masked += reference_scrub_event(e)
        e.pop("index", None)
        e["metadata"] = json.dumps(e["metadata"], separators=(",", ":"), ensure_ascii=False)
        events.append(e)
    canon = json.dumps([project, events], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {"batch_id": hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()[:32], "events": events,
            "masked": masked}


def fast_message(project: str, accepted: list[dict], plain: list[bool]) -> dict:
    """The broker message as app/web/ingest.py builds it now."""
    events = []
    masked = 0
    for e, is_plain in zip(accepted, plain, strict=True):
        masked += scrub_event(e, DEFAULT_SENSITIVE_PARAMS)
        e.pop("index", None)
        e["metadata"] = metadata_json(e["metadata"], is_plain)
        events.append(e)
    return {"batch_id": batch_id_for(project, events), "events": events, "masked": masked}


def serialized_size(value) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


@st.composite
def event_lists(draw):
    """(events, max_event_bytes): the limit is often within a byte of an event's own size."""
    events = draw(st.lists(raw_events, min_size=1, max_size=6))
    limit = draw(st.sampled_from([10_240, 400, 250, None, None]))
    if limit is None:
        try:
            limit = serialized_size(events[0]) + draw(st.integers(-1, 1))
        except (TypeError, ValueError, RecursionError):
            limit = 10_240
    return events, limit


@DIFF
@given(case=event_lists())
def test_validate_events_fast_equals_marshmallow(case):
    events, max_event_bytes = case
    (accepted, rejected, plain), (slow_accepted, slow_rejected, _) = both_paths(events, max_event_bytes)
    for code in sorted({r["code"] for r in slow_rejected}):
        event(f"rejected: {code}")
    event(f"accepted: {len(accepted)}, by the fast path: {sum(plain)}")
    assert same(accepted, slow_accepted)
    assert same(rejected, slow_rejected)
    assert same(validate_events(copy.deepcopy(events), max_event_bytes=max_event_bytes, **LIMITS),
                (slow_accepted, slow_rejected))
    # ...and the broker message built from the fast result is the one built the old way.
    assert same(fast_message("shop", accepted, plain), reference_message("shop", slow_accepted))


@DIFF
@given(raw=edge_events(), slack=st.integers(-1, 1))
def test_one_field_at_its_limit(raw, slack):
    """Lengths, depth, range ends and the byte size, each at its limit and one past it."""
    for max_event_bytes in (10_240, serialized_size(raw) + slack):
        (accepted, rejected, plain), (slow_accepted, slow_rejected, _) = both_paths([raw], max_event_bytes)
        assert same((accepted, rejected), (slow_accepted, slow_rejected))
        assert same(fast_message("p", accepted, plain), reference_message("p", slow_accepted))


@DIFF
@given(events=st.lists(raw_events, min_size=1, max_size=4))
def test_events_as_the_parser_hands_them(events):
    """Through a JSON round trip (what the API validates: no NaN, no tuples, str keys)."""
    try:
        parsed = json.loads(json.dumps(events, ensure_ascii=False, allow_nan=False))
    except ValueError:
        return
    (accepted, rejected, plain), (slow_accepted, slow_rejected, _) = both_paths(parsed, 10_240)
    assert same((accepted, rejected), (slow_accepted, slow_rejected))
    assert same(fast_message("p", accepted, plain), reference_message("p", slow_accepted))


def parse_batch_answer(body, fast: bool):
    try:
        return "ok", parse_batch(copy.deepcopy(body), max_events=5, fast=fast)
    except IngestError as exc:
        return "error", (type(exc).__name__, exc.status, exc.code, exc.message, exc.details)


bodies = st.one_of(
    st.fixed_dictionaries({"events": st.lists(raw_events, max_size=7)},
                          optional={"sent_at": timestamps,
                                    "api_key": st.one_of(text, st.text(min_size=255, max_size=257),
                                                                                st.none(), scalars),
                                    "extra": scalars}),
    st.dictionaries(st.sampled_from(["events", "sent_at", "api_key", "x"]), scalars),
    scalars, st.lists(scalars, max_size=2),
)


edge_bodies = st.fixed_dictionaries({"events": st.lists(st.none(), min_size=4, max_size=6)}, optional={
    "sent_at": st.sampled_from([946_684_800_000, 946_684_799_999, 4_102_444_799_999, 4_102_444_800_000,
                                "2026-11-27T10:00:00Z", "2026-11-27T10:00:00", 1.5, True, None]),
    "api_key": st.one_of(st.text(alphabet="k\u00e9", min_size=255, max_size=257),
                         st.sampled_from(["", "k\x00", "\ud800", None]))})


@DIFF
@given(body=st.one_of(bodies, edge_bodies))
def test_parse_batch_fast_equals_marshmallow(body):
    assert same(parse_batch_answer(body, True), parse_batch_answer(body, False))


def parse_answer(raw: bytes, fast: bool):
    try:
        return "ok", _parse(raw, fast=fast)
    except IngestError as exc:
        return "error", (type(exc).__name__, exc.code, exc.message)


_NUMBERS = ["0", "-0", "-0.0", "1e400", "-1e400", "1e-400", "1E5", "12.5", "1.7976931348623157e308", str(2**63),
            str(2**64), str(-(2**63) - 1), "9" * 19, "9" * 18, "1" * 400, "1" * 5000, "NaN", "Infinity", "01", "1.",
            ".5"]
_STRINGS = ['"\\ud800"', '"\\ud83d\\ude00"', '"\\udc00\\ud800"', '"\\u0000"', '"\x1f"', '"\x7f"', '"caf\u00e9"']


@st.composite
def json_bytes(draw):
    """Bodies as bytes: serialized values, odd numbers and escapes, deep nesting, BOMs, junk."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        value = {"events": draw(st.lists(raw_events, max_size=4))}
        try:
            out = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=False,
                             indent=draw(st.sampled_from([None, 1]))).encode("utf-8", "surrogatepass")
        except ValueError:
            out = b"{}"
    elif kind == 1:
        out = ('{"events":[' + draw(st.sampled_from(_NUMBERS + _STRINGS)) + "]}").encode()
    elif kind == 2:
        depth = draw(st.sampled_from(_DEPTHS))
        out = b"[" * depth + b"]" * depth
    elif kind == 3:
        out = draw(st.binary(max_size=40))
    elif kind == 4:
        out = draw(st.text(alphabet='{}[]",:0123456789.eE-+ \ntrufalsn\\u', max_size=40)).encode()
    else:
        out = ("[" + ",".join(['{"a":[1]}'] * draw(st.integers(240, 260))) + "]").encode()
    prefix = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b" "]))
    return prefix + out


_DEPTHS = [10, 400, 499, 500, 501, 900, 980, 990, 1000, 1024, 1025, 5000]


@DIFF
@given(raw=json_bytes())
def test_body_parse_orjson_equals_json(raw):
    fast, slow = parse_answer(raw, True), parse_answer(raw, False)
    assert same(fast, slow)


@pytest.mark.parametrize("raw", [('{"events":[' + v + "]}").encode() for v in _NUMBERS + _STRINGS]
                         + [b"[" * d + b"]" * d for d in _DEPTHS] + [b'{"a":[' * d + b"1" + b"]}" * d for d in _DEPTHS]
                         + [b"\xef\xbb\xbf[1]", b"\xef\xbb\xbf\xef\xbb\xbf[1]", b"\xed\xa0\x80", b'"\xed\xa0\x80"',
                            b'"\xc0\xaf"', b'"\xf4\x90\x80\x80"', b"", b" ", b'{"a":1,"a":2}', b'{"a":1,"b":2,"a":3}',
                            b"[1,]", b'"\t"'])
def test_body_parse_edges(raw):
    """Numbers json and orjson read differently, nesting around both limits, BOMs, bad UTF-8."""
    assert same(parse_answer(raw, True), parse_answer(raw, False))


@pytest.mark.parametrize("meta", [{"tiny": 1e-05}, {"big": 2**64}, {"nan": float("nan")}, {"inf": [float("inf")]},
                                  {"literal": "\\u0000"}])
def test_values_orjson_writes_differently_take_the_slow_path(meta):
    event = {"event_id": "0b6f3c0e-8d1a-4c4e-9f50-3a1f7a2b9c01", "type": "click", "timestamp": NOW_MS,
             "session_id": "s", "metadata": meta}
    accepted, rejected, plain = check_events([event], max_event_bytes=10_240, **LIMITS)
    assert rejected == [] and plain == [False]
    assert metadata_json(accepted[0]["metadata"], False) == json.dumps(meta, separators=(",", ":"), ensure_ascii=False)

"""Unit tests for app.ingest.message: batch ids and metadata strings equal to the json-built ones."""
from __future__ import annotations

import hashlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.message import batch_id_for, metadata_json
from app.ingest.privacy import DEFAULT_SENSITIVE_PARAMS, scrub_event
from app.ingest.schemas import check_events
from tests.unit.ingest.strategies import LIMITS, events, json_values, text

SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def json_batch_id(project: str, events: list[dict]) -> str:
    """batch_id_for as the previous release defined it (json.dumps); web processes of both may run at once."""
    canon = json.dumps([project, events], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()[:32]


EVENTS = [{"event_id": "0b6f3c0e-8d1a-4c4e-9f50-3a1f7a2b9c01", "type": "click", "ts_ms": 1795773600123,
           "session_id": "s-1",
           "url": "https://shop.test/cart?token=[redacted]", "name": "caf\u00e9 \U0001f600 \"q\" \\ \u2028",
           "anonymous_id": "", "metadata": '{"button":"buy","price":12.5,"deep":{"a":[1,"x\\n"]}}'},
          {"event_id": "0b6f3c0e-8d1a-4c4e-9f50-3a1f7a2b9c02", "type": "custom", "ts_ms": 1795773600124,
           "session_id": "s-1",
           "url": "", "name": "signup", "anonymous_id": "anon.1", "metadata": "{}"}]


def test_batch_id_is_the_previous_releases():
    # Computed by the json.dumps version (the release before orjson): a rolling deploy, where
    # a retried batch may reach a web process of either release, keeps one batch_id per batch.
    assert batch_id_for("shop", EVENTS) == "a3004478906f3333636fa43b9549f1cd" == json_batch_id("shop", EVENTS)


def test_batch_id_is_stable_and_content_bound():
    again = json.loads(json.dumps(EVENTS))
    assert batch_id_for("shop", again) == batch_id_for("shop", EVENTS)
    assert batch_id_for("shop", again[:1]) != batch_id_for("shop", EVENTS)
    assert batch_id_for("other", EVENTS) != batch_id_for("shop", EVENTS)
    # Key order inside an event does not matter (sorted), event order does.
    assert batch_id_for("shop", [dict(reversed(list(e.items()))) for e in EVENTS]) == batch_id_for("shop", EVENTS)
    assert batch_id_for("shop", EVENTS[::-1]) != batch_id_for("shop", EVENTS)


view_events = st.fixed_dictionaries({
    "event_id": st.uuids().map(str), "type": st.sampled_from(["click", "custom"]), "ts_ms": st.integers(0, 2**62),
    "session_id": text, "url": text, "name": text, "anonymous_id": text,
    "metadata": json_values.map(lambda v: json.dumps({"v": v}, separators=(",", ":"), ensure_ascii=False)),
})


@SETTINGS
@given(project=text, events=st.lists(view_events, max_size=4))
def test_batch_id_equals_the_json_definition(project, events):
    """Any text (controls, quotes, U+2028, astral, lone surrogates) in the view's event shape."""
    assert batch_id_for(project, events) == json_batch_id(project, events)


@SETTINGS
@given(raw=events())
def test_metadata_json_equals_json_dumps_after_scrubbing(raw):
    accepted, _rejected, plain = check_events([raw], max_event_bytes=10_240, **LIMITS)
    for event, is_plain in zip(accepted, plain, strict=True):
        scrub_event(event, DEFAULT_SENSITIVE_PARAMS)
        expected = json.dumps(event["metadata"], separators=(",", ":"), ensure_ascii=False)
        assert metadata_json(event["metadata"], is_plain) == expected


def test_metadata_json_falls_back_when_orjson_cannot_write():
    meta = {"big": 2**70, "odd": "\ud800"}
    assert metadata_json(meta, True) == json.dumps(meta, separators=(",", ":"), ensure_ascii=False)

"""Validate a batch and its events (marshmallow) into normalized event dicts."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from app.ingest import fastpath
from app.ingest.errors import InvalidBatch, TooManyEvents
from app.ingest.timestamps import MAX_TS_MS, MIN_TS_MS, Timestamp
from app.ingest.validators import (
    EVENT_TYPES,
    ID_PATTERN,
    MAX_API_KEY_CHARS,
    MAX_METADATA_DEPTH,
    MAX_NAME_CHARS,
    MAX_URL_CHARS,
    UUID_PATTERN,
    clean_text,
    http_url,
    metadata_depth,
    optional_id,
)

# Re-exported for callers that read the limits from the schema module.
__all__ = ["EVENT_TYPES", "MAX_NAME_CHARS", "MAX_URL_CHARS", "MAX_METADATA_DEPTH", "MIN_TS_MS", "MAX_TS_MS",
           "EventSchema", "BatchSchema", "parse_batch", "validate_events", "check_events"]


def _id_field(required: bool) -> fields.String:
    return fields.String(required=required, allow_none=not required,
                         validate=validate.Regexp(ID_PATTERN, error="Must be 1-128 of [A-Za-z0-9._:-]."))


class EventSchema(Schema):
    """One event as the SDK sends it; unknown fields are refused."""

    class Meta:
        unknown = RAISE

    event_id = fields.String(required=True, validate=validate.Regexp(UUID_PATTERN, error="Must be a UUID."))
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    timestamp = Timestamp(required=True)
    session_id = _id_field(required=True)
    url = fields.String(allow_none=True, validate=[validate.Length(max=MAX_URL_CHARS), http_url])
    name = fields.String(allow_none=True,
                         validate=[validate.Length(max=MAX_NAME_CHARS), clean_text])
    anonymous_id = fields.String(allow_none=True, validate=optional_id)
    metadata = fields.Dict(allow_none=True, validate=metadata_depth)

    @validates_schema
    def _custom_needs_name(self, data: dict, **kwargs: Any) -> None:
        if data.get("type") == "custom" and not data.get("name"):
            raise ValidationError("Required for custom events.", "name")


class BatchSchema(Schema):
    """The request body: events plus optional sent_at and api_key; other keys are ignored."""

    class Meta:
        unknown = EXCLUDE

    # allow_none on items: a null event is rejected alone (not_an_object), not the batch.
    events = fields.List(fields.Raw(allow_none=True), required=True)
    sent_at = Timestamp(allow_none=True)
    api_key = fields.String(allow_none=True, validate=[validate.Length(max=MAX_API_KEY_CHARS), clean_text])


_EVENT_SCHEMA = EventSchema()
_BATCH_SCHEMA = BatchSchema()


def parse_batch(obj: object, *, max_events: int, fast: bool = True) -> tuple[list, str | None]:
    """Return (raw events, body api_key or None) from a parsed body, or raise.

    ``fast=False`` runs marshmallow alone: the reference the fast path is tested against.
    """
    if not isinstance(obj, dict):
        raise InvalidBatch()
    events = obj.get("events")
    # Counted before marshmallow walks the list, so an oversized batch costs nothing more.
    if isinstance(events, list) and len(events) > max_events:
        raise TooManyEvents(f"A batch may hold at most {max_events} events.",
                            details={"max_events": max_events, "received": len(events)})
    plain = fastpath.accept_batch(obj) if fast else None
    if plain is not None:
        return plain
    try:
        data = _BATCH_SCHEMA.load(obj)
    except ValidationError as exc:
        raise InvalidBatch(details=exc.messages) from exc
    return data["events"], data.get("api_key") or None


def _rejection(index: int, code: str, errors: dict) -> dict:
    return {"index": index, "code": code, "errors": errors}


def _serialized_size(raw: dict) -> int:
    text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: lone surrogates are refused by the schema, not by a crash here.
    return len(text.encode("utf-8", "surrogatepass"))


def _normalize(data: dict, index: int) -> dict:
    return {
        "event_id": data["event_id"].lower(),
        "type": data["type"],
        "ts_ms": data["timestamp"],
        "session_id": data["session_id"],
        "url": data.get("url") or "",
        "name": data.get("name") or "",
        "anonymous_id": data.get("anonymous_id") or "",
        "metadata": data.get("metadata") or {},
        "index": index,
    }


def _check_one(raw: Any, index: int, max_event_bytes: int) -> tuple[str, dict]:
    """Return ("ok", normalized event) or (rejection code, errors)."""
    if not isinstance(raw, dict):
        return "not_an_object", {"_schema": ["Must be an object."]}
    try:
        size = _serialized_size(raw)
    except RecursionError:
        return "invalid_event", {"_schema": ["Nested too deeply."]}
    if size > max_event_bytes:
        return "event_too_large", {"_schema": [f"Over {max_event_bytes} bytes serialized."]}
    try:
        return "ok", _normalize(_EVENT_SCHEMA.load(raw), index)
    except ValidationError as exc:
        return "invalid_event", exc.normalized_messages()


def validate_events(raw_events: list, *, received_at_ms: int, max_event_bytes: int,
                    max_past_ms: int, max_future_ms: int, fast: bool = True) -> tuple[list[dict], list[dict]]:
    """Split raw events into (accepted normalized events, rejections), keeping request order."""
    accepted, rejected, _plain = check_events(raw_events, received_at_ms=received_at_ms,
                                              max_event_bytes=max_event_bytes,
                                              max_past_ms=max_past_ms, max_future_ms=max_future_ms, fast=fast)
    return accepted, rejected


def check_events(raw_events: list, *, received_at_ms: int, max_event_bytes: int, max_past_ms: int,
                 max_future_ms: int, fast: bool = True) -> tuple[list[dict], list[dict], list[bool]]:
    """validate_events, plus for each accepted event whether the fast path took it (its metadata is plain).

    ``fast=False`` runs marshmallow alone: the reference the fast path is tested against.
    """
    accepted: list[dict] = []
    rejected: list[dict] = []
    plain: list[bool] = []
    seen: set[str] = set()
    earliest, latest = received_at_ms - max_past_ms, received_at_ms + max_future_ms
    for index, raw in enumerate(raw_events):
        event = fastpath.accept_event(raw, index, max_event_bytes) if fast else None
        fast_hit = event is not None
        if event is None:
            code, event = _check_one(raw, index, max_event_bytes)
        else:
            code = "ok"
        if code != "ok":
            rejected.append(_rejection(index, code, event))
        elif not earliest <= event["ts_ms"] <= latest:
            rejected.append(_rejection(index, "timestamp_out_of_range", {"timestamp": [
                f"Must be within {max_past_ms} ms before and {max_future_ms} ms after receipt."]}))
        elif event["event_id"] in seen:
            # The first accepted copy wins; a retried SDK batch may repeat an id.
            rejected.append(_rejection(index, "duplicate_event_id",
                                       {"event_id": ["Repeats an earlier event of this batch."]}))
        else:
            seen.add(event["event_id"])
            accepted.append(event)
            plain.append(fast_hit)
    return accepted, rejected, plain

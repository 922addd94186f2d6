"""Validate a batch and its events (marshmallow) into normalized event dicts."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from app.ingest.errors import InvalidBatch, TooManyEvents

EVENT_TYPES = ("page_view", "click", "rage_click", "error", "network", "navigation",
               "web_vital", "custom")
MAX_NAME_CHARS = 200
MAX_URL_CHARS = 2048
MAX_METADATA_DEPTH = 10
# Integers outside [2000, 2100) are almost always seconds or microseconds sent by mistake.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

_ID = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")
_UUID = re.compile(r"\A[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
# re.ASCII: \d would otherwise accept any Unicode digit (e.g. Arabic-Indic numerals).
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
                  r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?", re.ASCII)
# NUL breaks C consumers; lone surrogates cannot be encoded as UTF-8 for storage.
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _clean_text(value: str) -> None:
    if _BAD_CHARS.search(value):
        raise ValidationError("Must not contain NUL characters or unpaired surrogates.")


def _http_url(value: str) -> None:
    if not value:
        return
    _clean_text(value)
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc \
            or any(c.isspace() for c in value):
        raise ValidationError("Must be an absolute http(s) URL or empty.")


def _optional_id(value: str) -> None:
    # Empty means "not known", as does absent or null.
    if value and not _ID.match(value):
        raise ValidationError("Must be 0-128 of [A-Za-z0-9._:-].")


def _metadata(value: dict) -> None:
    # Iterative walk: the depth limit must hold before anything recurses over the value.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _clean_text(node)
        elif isinstance(node, (dict, list)):
            if depth > MAX_METADATA_DEPTH:
                raise ValidationError(f"Must not nest deeper than {MAX_METADATA_DEPTH} levels.")
            if isinstance(node, dict):
                for key in node:
                    _clean_text(key)
                stack.extend((child, depth + 1) for child in node.values())
            else:
                stack.extend((child, depth + 1) for child in node)


def _iso_to_ms(text: str) -> int | None:
    """Return epoch ms for an ISO 8601 string with an offset, None if it has none."""
    match = _ISO.fullmatch(text)
    if not match:
        raise ValueError(text)
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = match.groups()
    if not zulu and not sign:
        return None
    offset = timedelta(0)
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(text)
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                      tzinfo=timezone(offset))
    # Sub-millisecond digits are truncated, never rounded, so a time never moves forward.
    millis = int((frac or "0")[:3].ljust(3, "0"))
    return (moment - _EPOCH) // timedelta(milliseconds=1) + millis


class Timestamp(fields.Field):
    """ISO 8601 with a UTC offset, or integer epoch milliseconds, loaded as epoch ms."""

    default_error_messages = {
        "invalid": "Must be an ISO 8601 string with a UTC offset or integer epoch milliseconds.",
        "naive": "Must carry a UTC offset or 'Z'.",
        "range": "Must be between 2000-01-01 and 2100-01-01 (epoch milliseconds).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or \
                (isinstance(value, str) and len(value) > 64):
            raise self.make_error("invalid")
        if isinstance(value, str):
            try:
                millis = _iso_to_ms(value)
            except (ValueError, OverflowError) as exc:
                raise self.make_error("invalid") from exc
            if millis is None:
                raise self.make_error("naive")
        else:
            millis = value
        if not MIN_TS_MS <= millis < MAX_TS_MS:
            raise self.make_error("range")
        return millis


def _id_field(required: bool) -> fields.String:
    return fields.String(required=required, allow_none=not required,
                         validate=validate.Regexp(_ID, error="Must be 1-128 of [A-Za-z0-9._:-]."))


class EventSchema(Schema):
    """One event as the SDK sends it; unknown fields are refused."""

    class Meta:
        unknown = RAISE

    event_id = fields.String(required=True, validate=validate.Regexp(_UUID, error="Must be a UUID."))
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    timestamp = Timestamp(required=True)
    session_id = _id_field(required=True)
    url = fields.String(allow_none=True, validate=[validate.Length(max=MAX_URL_CHARS), _http_url])
    name = fields.String(allow_none=True,
                         validate=[validate.Length(max=MAX_NAME_CHARS), _clean_text])
    anonymous_id = fields.String(allow_none=True, validate=_optional_id)
    metadata = fields.Dict(allow_none=True, validate=_metadata)

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
    api_key = fields.String(allow_none=True, validate=[validate.Length(max=256), _clean_text])


_EVENT_SCHEMA = EventSchema()
_BATCH_SCHEMA = BatchSchema()


def parse_batch(obj: object, *, max_events: int) -> tuple[list, str | None]:
    """Return (raw events, body api_key or None) from a parsed body, or raise."""
    if not isinstance(obj, dict):
        raise InvalidBatch()
    events = obj.get("events")
    # Counted before marshmallow walks the list, so an oversized batch costs nothing more.
    if isinstance(events, list) and len(events) > max_events:
        raise TooManyEvents(f"A batch may hold at most {max_events} events.",
                            details={"max_events": max_events, "received": len(events)})
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
        return "invalid_event", exc.messages


def validate_events(raw_events: list, *, received_at_ms: int, max_event_bytes: int,
                    max_past_ms: int, max_future_ms: int) -> tuple[list[dict], list[dict]]:
    """Split raw events into (accepted normalized events, rejections), keeping request order."""
    accepted: list[dict] = []
    rejected: list[dict] = []
    seen: set[str] = set()
    earliest, latest = received_at_ms - max_past_ms, received_at_ms + max_future_ms
    for index, raw in enumerate(raw_events):
        code, event = _check_one(raw, index, max_event_bytes)
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
    return accepted, rejected

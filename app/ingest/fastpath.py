"""The common, plainly valid event and batch, accepted without walking marshmallow.

Each function here either returns exactly what the marshmallow path (``app.ingest.schemas``)
returns for an input it accepts, or ``None``: "not sure", and the caller runs marshmallow,
which stays the one definition of the contract and the only source of error answers. So a
check here may be stricter than the schema (exact types, an ASCII-only URL shape) but never
looser. ``tests/unit/ingest/test_fastpath_differential.py`` compares both over generated bodies.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
from marshmallow import ValidationError

from app.ingest.timestamps import MAX_TS_MS, MIN_TS_MS, iso_to_ms
from app.ingest.validators import (
    BAD_CHARS,
    EVENT_TYPES,
    ID_PATTERN,
    MAX_API_KEY_CHARS,
    MAX_METADATA_DEPTH,
    MAX_NAME_CHARS,
    MAX_URL_CHARS,
    UUID_PATTERN,
    http_url,
)

_TYPES = frozenset(EVENT_TYPES)
_EVENT_KEYS = frozenset(("event_id", "type", "timestamp", "session_id", "url", "name",
                         "anonymous_id", "metadata"))
# Printable ASCII only, a non-empty netloc without brackets: urlsplit gives an http(s) scheme
# and that netloc, raises nothing, and there is no whitespace, NUL or surrogate, so
# validators.http_url accepts it. Anything else goes to http_url itself.
_PLAIN_URL = re.compile(r"\A[Hh][Tt][Tt][Pp][Ss]?://[^/?#\[\]\x00-\x20\x7f-\U0010ffff]+"
                        r"(?:[/?#][!-~]*)?\Z")
# orjson writes NUL as this escape; a literal backslash-u0000 also contains it (a false alarm,
# which only sends the event to marshmallow).
_NUL_ESCAPE = b"\\u0000"
# Below this magnitude orjson writes some floats differently from repr (1e-05 as 0.00001):
# the bytes, and so the size and the stored string, would differ from json.dumps.
_MIN_PLAIN_FLOAT = 1e-4


def timestamp_ms(value: Any) -> int | None:
    """Epoch ms for a timestamp the Timestamp field accepts, else None."""
    millis: int | None
    if type(value) is int:
        millis = value
    elif type(value) is str and len(value) <= 64:
        try:
            millis = iso_to_ms(value)
        except (ValueError, OverflowError):
            return None
        if millis is None:
            return None
    else:
        return None
    return millis if MIN_TS_MS <= millis < MAX_TS_MS else None


def _plain_metadata(meta: dict) -> bool:
    """True when metadata is within the depth limit and holds only values orjson writes as json does."""
    stack = [(meta, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            return False
        for value in (node.values() if type(node) is dict else node):
            kind = type(value)
            if kind is str or kind is int or kind is bool or value is None:
                continue  # strings: checked on the serialized bytes; huge ints: orjson raises
            if kind is float:
                if not (value == 0.0 or _MIN_PLAIN_FLOAT <= abs(value) < math.inf):
                    return False
            elif kind is dict or kind is list:
                stack.append((value, depth + 1))
            else:
                return False
    return True


def _plain_url(url: str) -> bool:
    if len(url) > MAX_URL_CHARS:
        return False
    if not url or _PLAIN_URL.match(url):
        return True
    try:
        http_url(url)
    except ValidationError:
        return False
    return True


def accept_event(raw: Any, index: int, max_event_bytes: int) -> dict | None:
    """The normalized event for a plainly valid event, else None.

    An event accepted here has metadata that orjson writes exactly as json.dumps does, and
    scrubbing (masks are ASCII, keys are only dropped) keeps it so.
    """
    if type(raw) is not dict or not _EVENT_KEYS.issuperset(raw):
        return None
    event_id, kind, session_id = raw.get("event_id"), raw.get("type"), raw.get("session_id")
    if type(event_id) is not str or not UUID_PATTERN.match(event_id) or type(kind) is not str \
            or kind not in _TYPES or type(session_id) is not str or not ID_PATTERN.match(session_id):
        return None
    ts_ms = timestamp_ms(raw.get("timestamp"))
    url, name, anonymous_id, meta = raw.get("url"), raw.get("name"), raw.get("anonymous_id"), raw.get("metadata")
    if ts_ms is None \
            or (url is not None and (type(url) is not str or not _plain_url(url))) \
            or (name is not None and (type(name) is not str or len(name) > MAX_NAME_CHARS)) \
            or (kind == "custom" and not name) \
            or (anonymous_id is not None and (type(anonymous_id) is not str
                                             or (anonymous_id and not ID_PATTERN.match(anonymous_id)))) \
            or (meta is not None and type(meta) is not dict):
        return None
    try:
        # The event as json.dumps(ensure_ascii=False) writes it, byte for byte: the same
        # escapes, and what could differ raises (lone surrogates, non-str keys, integers over
        # 64 bits) or is refused by _plain_metadata (small floats, NaN). Depth is bounded by
        # orjson (it raises past 254) until _plain_metadata checks the real limit.
        serialized = orjson.dumps(raw)
    except TypeError:
        return None
    # NUL anywhere (name, metadata strings and keys; the other fields' patterns exclude it).
    if len(serialized) > max_event_bytes or _NUL_ESCAPE in serialized \
            or (meta is not None and not _plain_metadata(meta)):
        return None
    return {"event_id": event_id.lower(), "type": kind, "ts_ms": ts_ms, "session_id": session_id,
            "url": url or "", "name": name or "", "anonymous_id": anonymous_id or "",
            "metadata": dict(meta) if meta else {}, "index": index}


def accept_batch(obj: Any) -> tuple[list, str | None] | None:
    """(events, body api_key or None) for a plainly valid batch object, else None."""
    if type(obj) is not dict or type(obj.get("events")) is not list:
        return None
    sent_at, api_key = obj.get("sent_at"), obj.get("api_key")
    if sent_at is not None and timestamp_ms(sent_at) is None:
        return None
    if api_key is not None and (type(api_key) is not str or len(api_key) > MAX_API_KEY_CHARS
                                or BAD_CHARS.search(api_key)):
        return None
    return list(obj["events"]), api_key or None

"""Hypothesis strategies for ingest bodies: valid events, each kind of invalid field, edge values.

Shared by the differential tests of the fast path (validation, parsing, scrubbing, hashing).
"""
from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta

from hypothesis import strategies as st

from app.ingest.timestamps import MAX_TS_MS, MIN_TS_MS
from app.ingest.validators import EVENT_TYPES, MAX_METADATA_DEPTH

NOW_MS = 1_795_773_600_000  # 2026-11-27T10:00:00.000Z
DAY_MS = 86_400_000
# Wide windows, so timestamps from all over [2000, 2100) reach the schema's own checks.
LIMITS = {"received_at_ms": NOW_MS, "max_past_ms": 100 * 365 * DAY_MS, "max_future_ms": 100 * 365 * DAY_MS}
ID_CHARS = "ABCXYZabcxyz0189._:-"

# Text with what breaks naive code: NUL, controls, quotes, backslashes, lone surrogates,
# astral characters, Unicode whitespace and digits, and plain ASCII.
_ODD = "\x00\x01\x1f\x7f\"\\/\u2028\u00e9\u0660\u3000\ud800\udfff\U0001f600 \t\n=@?&#;+()-.:0123456789"
text = st.one_of(st.text(max_size=30), st.text(alphabet=_ODD + "abcXYZ", max_size=30),
                 st.text(alphabet=st.characters(codec="utf-8"), max_size=20))

uuids = st.one_of(
    st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex), st.uuids().map(lambda u: str(u) + "\n"),
    st.sampled_from(["", "not-a-uuid", "0b6f3c0e-8d1a-4c4e-9f50-3a1f7a2b9c0g", str(uuid.UUID(int=0))]),
    st.integers(), st.none(),
)
ids = st.one_of(
    st.text(alphabet=ID_CHARS, min_size=0, max_size=130),
    st.text(alphabet=ID_CHARS, min_size=127, max_size=129),
    text, st.integers(), st.none(),
)
kinds = st.one_of(st.sampled_from(EVENT_TYPES), st.sampled_from(["", "CLICK", "pageview", "click "]),
                  st.integers(), st.none())

_FORMATS = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dt%H:%M:%S", "%Y-%m-%d %H:%M:%S"]


@st.composite
def iso_timestamps(draw):
    """ISO 8601 strings in every form the Timestamp field reads, and near misses."""
    wide = draw(st.integers(0, 5)) == 5
    moment = draw(st.datetimes(min_value=datetime(1000 if wide else 2000, 1, 2),
                               max_value=datetime(9999 if wide else 2099, 12, 30)))
    if draw(st.integers(0, 3)) == 3:  # near the [2000, 2100) range edges
        moment = draw(st.sampled_from([datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59),
                                       datetime(2100, 1, 1), datetime(1999, 12, 31, 23, 59, 59),
                                       datetime(2026, 11, 27, 10)]))
        moment += timedelta(seconds=draw(st.integers(-90_000, 90_000)))
    out = moment.strftime(draw(st.sampled_from(_FORMATS)))
    digits = draw(st.integers(0, 10))
    if digits:
        out += draw(st.sampled_from(".,")) + draw(st.text(alphabet="0123456789", min_size=digits, max_size=digits))
    if draw(st.integers(0, 4)) < 4:
        offset = draw(st.sampled_from(["Z", "+01:00", "-05:30", "z", "+00:00", "-00:00", "+0530", "-23:59", "+23:59"]))
    else:
        offset = draw(st.one_of(st.sampled_from(["", "+24:00", "+05:60", "+1:00", "Z "]),
                                st.builds(lambda s, h, m, colon: f"{s}{h:02d}{colon}{m:02d}", st.sampled_from("+-"),
                                          st.integers(0, 25), st.integers(0, 61), st.sampled_from([":", ""]))))
    out += offset
    if draw(st.integers(0, 4)) < 4:
        return out
    return draw(st.sampled_from([out.replace("1", "\u0661"), "0000" + out[4:], out + "x" * 60, out[:10],
                                 out.replace("-", "/")]))


timestamps = st.one_of(
    st.integers(MIN_TS_MS, MAX_TS_MS - 1),
    st.sampled_from([MIN_TS_MS, MIN_TS_MS - 1, MAX_TS_MS, MAX_TS_MS - 1, NOW_MS, NOW_MS // 1000, 2**64, -1, 0]),
    st.integers(), iso_timestamps(), st.booleans(), st.floats(), st.none(), text,
)

_HOSTS = ["shop.test", "x.com", "EXAMPLE.com:8080", "user:pw@x.com", "[::1]", "[::1", "x]", "127.0.0.1:",
          "ex\u00e4mple.com", "\uff21.com", "a b.com", ""]
_PATHS = ["", "/", "/a?b=1#c", "/cart?item=3&token=abc", "/p?email=jane%40example.com", "/ a", "/\x00", "/\ud800",
          "/x\x7f", "/%zz", "?q=1", "#frag", "/caf\u00e9", "/" + "a" * 2030, "/a\tb", "/\u3000"]


@st.composite
def urls(draw):
    """http(s) URLs with easy and awkward netlocs and paths, other schemes, and junk."""
    scheme = draw(st.sampled_from(["http://", "https://", "HTTPS://", "hTtP://", "ftp://", "javascript:",
                                   "http:/", "//", "", "\x01https://", " https://"]))
    url = scheme + draw(st.sampled_from(_HOSTS)) + draw(st.sampled_from(_PATHS))
    return draw(st.one_of(st.just(url), st.just(url[:2048]), st.just(""), text))


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-4, 9.99e-5, 1e-5, 1e-7, 5e-324, 1e16, 1e22, 12.5, math.nan, math.inf]),
    text,
)


def nested(depth: int):
    """A value nested exactly ``depth`` containers deep (1 = a flat dict)."""
    def wrap(value, level):
        return {"n": value} if level % 2 else [value]
    def build(leaf):
        value = leaf
        for level in range(depth - 1):
            value = wrap(value, level)
        return {"d": value}
    return scalars.map(build)


json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=12)
metadata = st.one_of(
    st.dictionaries(text, json_values, max_size=5),
    st.dictionaries(st.sampled_from(["button", "selector", "message"]), text, max_size=3),
    st.integers(MAX_METADATA_DEPTH - 2, MAX_METADATA_DEPTH + 1).flatmap(nested),
    st.builds(lambda n: {"pad": "x" * n}, st.integers(0, 10_300)),
    st.none(), st.just({}), st.lists(scalars, max_size=2), text,
)

FIELDS = {"event_id": uuids, "type": kinds, "timestamp": timestamps, "session_id": ids,
          "url": st.one_of(urls(), st.none()),
          "name": st.one_of(text, st.text(min_size=199, max_size=201), st.none()),
          "anonymous_id": st.one_of(ids, st.just("")),
          "metadata": metadata}
_GOOD_URLS = st.sampled_from(["https://shop.test/cart?item=3", "http://x.com", "HTTPS://EXAMPLE.com:8080/a?b=1#c",
                              "https://shop.test/reset?token=s3cr3t&page=2", "https://user@x.com/p",
                              "https://x.com/caf\u00e9",
                              ""]) | st.integers(2033, 2035).map(lambda n: "https://x.com/" + "a" * n)
_OPTIONAL = {"url": st.one_of(_GOOD_URLS, urls(), st.none()),
             "name": st.one_of(st.text(max_size=20), st.just("jane@example.com paid 4111 1111 1111 1111"), st.none(),
                               st.text(alphabet="ab\u00e9", min_size=199, max_size=201)),
             "anonymous_id": st.one_of(st.text(alphabet=ID_CHARS, max_size=128), st.none(),
                                       st.text(alphabet=ID_CHARS, min_size=127, max_size=129)),
             "metadata": st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=4), metadata,
                                   # values json and orjson write differently: the slow path's to handle
                                   st.dictionaries(st.text(max_size=3), st.sampled_from(
                                       [1e-5, -9.99e-5, 2**64, -(2**63) - 1, math.nan, math.inf, "\\u0000"]),
                                       min_size=1, max_size=2))}
_VALID = {"event_id": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())),
          "type": st.sampled_from(EVENT_TYPES),
          "timestamp": st.one_of(st.integers(MIN_TS_MS, MAX_TS_MS - 1), iso_timestamps()),
          "session_id": st.text(alphabet=ID_CHARS, min_size=1, max_size=128)}


@st.composite
def events(draw):
    """A raw event: mostly valid, with at most a couple of fields replaced by anything, dropped or added."""
    event = {name: draw(strategy) for name, strategy in _VALID.items()}
    for name in draw(st.sets(st.sampled_from(sorted(_OPTIONAL)), max_size=4)):
        event[name] = draw(_OPTIONAL[name])
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        name = draw(st.sampled_from(sorted(FIELDS)))
        if draw(st.integers(0, 5)) == 5:
            event.pop(name, None)
        else:
            event[name] = draw(FIELDS[name])
    if draw(st.integers(0, 9)) == 9:
        event[draw(st.sampled_from(["unknown", "Type", "metadata "]))] = draw(scalars)
    if event.get("type") == "custom" and draw(st.integers(0, 3)) < 3:
        event["name"] = draw(text)
    return event


raw_events = st.one_of(events(), events(), events(), events(), events(), events(), events(), events(), events(),
                       st.none(), scalars, st.lists(scalars, max_size=2))


_EDGES = {
    "name": st.text(alphabet="ab\u00e9\U0001f600", min_size=199, max_size=201),
    "url": st.integers(2033, 2035).map(lambda n: "https://x.com/" + "a" * n),
    "session_id": st.text(alphabet=ID_CHARS, min_size=127, max_size=129) | st.just(""),
    "anonymous_id": st.text(alphabet=ID_CHARS, min_size=127, max_size=129) | st.just(""),
    "metadata": st.integers(MAX_METADATA_DEPTH - 1, MAX_METADATA_DEPTH + 1).flatmap(nested),
    "timestamp": st.sampled_from([MIN_TS_MS - 1, MIN_TS_MS, MAX_TS_MS - 1, MAX_TS_MS, "1999-12-31T23:59:59.999Z",
                                  "2000-01-01T00:00:00Z", "2099-12-31T23:59:59.999Z", "2100-01-01T00:00:00Z",
                                  "2000-01-01T00:59:59.999+01:00", "2100-01-01T00:59:59+01:00",
                                  "2026-11-27T10:00:00" + "0" * 45 + "Z",
                                  "2026-11-27T10:00:00." + "1" * 9 + "Z", "2026-11-27T10:00:00." + "1" * 10 + "Z"]),
    "type": st.just("custom"),
}


@st.composite
def edge_events(draw):
    """A valid event with exactly one field at (or one step past) its limit."""
    event = {name: draw(strategy) for name, strategy in _VALID.items()}
    field = draw(st.sampled_from(sorted(_EDGES)))
    event[field] = draw(_EDGES[field])
    if field == "type" and draw(st.booleans()):
        event["name"] = draw(st.sampled_from(["", "n", None]))
    return event

"""app.ingest.timestamps.iso_to_ms (integer arithmetic) against the timedelta version it replaced."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.timestamps import _ISO, iso_to_ms
from tests.unit.ingest.strategies import iso_timestamps

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timedelta_iso_to_ms(text: str) -> int | None:
    """The previous implementation, kept as the reference."""
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
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=timezone(offset))
    millis = int((frac or "0")[:3].ljust(3, "0"))
    return (moment - _EPOCH) // timedelta(milliseconds=1) + millis


def answer(fn, text):
    try:
        return "ok", fn(text)
    except (ValueError, OverflowError) as exc:
        return "error", type(exc).__name__


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(iso_timestamps(), st.text(alphabet="0123456789-:TZ+.", max_size=30)))
def test_iso_to_ms_equals_the_timedelta_version(text):
    assert answer(iso_to_ms, text) == answer(timedelta_iso_to_ms, text)


def test_known_values():
    assert iso_to_ms("2026-11-27T10:00:00.123Z") == 1_795_773_600_123
    assert iso_to_ms("2026-11-27T11:30:00.007+01:30") == 1_795_773_600_007
    assert iso_to_ms("0001-01-01T00:00:00+23:59") == timedelta_iso_to_ms("0001-01-01T00:00:00+23:59")
    assert iso_to_ms("9999-12-31T23:59:59.999-23:59") == timedelta_iso_to_ms("9999-12-31T23:59:59.999-23:59")
    assert iso_to_ms("2026-11-27T10:00:00") is None

"""Event timestamps: ISO 8601 with a UTC offset, or integer epoch milliseconds, as epoch ms."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from marshmallow import fields

# Integers outside [2000, 2100) are almost always seconds or microseconds sent by mistake.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000
# re.ASCII: \d would otherwise accept any Unicode digit (e.g. Arabic-Indic numerals).
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
                  r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?", re.ASCII)
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


def iso_to_ms(text: str) -> int | None:
    """Return epoch ms for an ISO 8601 string with an offset, None if it has none."""
    match = _ISO.fullmatch(text)
    if not match:
        raise ValueError(text)
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = match.groups()
    if not zulu and not sign:
        return None
    offset_minutes = 0
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(text)
        offset_minutes = (int(off_h) * 60 + int(off_m)) * (-1 if sign == "-" else 1)
    # datetime() refuses what is no calendar day or clock time (Feb 30, hour 24); the rest
    # is integer arithmetic (the local time minus its offset is UTC).
    hour, minute, second = int(hour), int(minute), int(second)
    days = datetime(int(year), int(month), int(day), hour, minute, second).toordinal() - _EPOCH_ORDINAL
    seconds = days * 86_400 + hour * 3_600 + (minute - offset_minutes) * 60 + second
    # Sub-millisecond digits are truncated, never rounded, so a time never moves forward.
    return seconds * 1000 + int((frac or "0")[:3].ljust(3, "0"))


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
                millis = iso_to_ms(value)
            except (ValueError, OverflowError) as exc:
                raise self.make_error("invalid") from exc
            if millis is None:
                raise self.make_error("naive")
        else:
            millis = value
        if not MIN_TS_MS <= millis < MAX_TS_MS:
            raise self.make_error("range")
        return millis

"""Retry timing shared by every step that retries: exponential backoff with full jitter, and
Retry-After parsing (the forward client, the sessions.update task)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

# 2**62 already dwarfs any sane cap; bounding the exponent avoids float overflow.
_MAX_EXPONENT = 62


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Return a delay uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    # Full jitter spreads retries of many sessions that failed together (AWS builders' library).
    return rng() * ceiling


def retry_after_seconds(header_value: str | None, now: float | None = None) -> float | None:
    """Return seconds to wait from a Retry-After value (delta-seconds or HTTP-date), else None."""
    if header_value is None:
        return None
    value = header_value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until_http_date(value, time.time() if now is None else now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until_http_date(value: str, now: float) -> float | None:
    """Return seconds from now until an HTTP-date (0 if past), or None if unparseable."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        # RFC 9110 dates are always GMT; a zone-less value is not one we can trust.
        return None
    return max(0.0, when.timestamp() - now)

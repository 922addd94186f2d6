"""Retry timing: the one place retry arithmetic lives.

- ``backoff_delay``: exponential backoff with full jitter (the sessions step's countdown).
- ``doubling``: a doubling delay without jitter (forward countdowns, the circuit's pauses, which
  the circuit's Lua picks from ``doubling_schedule``).
- ``pause_delay``: the events worker's pause while ClickHouse is away (doubling, half jitter).
- ``schedule_delay`` / ``jittered``: a step of a configured schedule, with half jitter (refused
  batches, UFSE deliveries).
- ``retry_after_seconds``: a Retry-After header as seconds.
"""
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


def doubling(n: int, *, base: float, cap: float) -> float:
    """``min(cap, base * 2**n)``, no jitter (n counts from 0)."""
    return min(cap, base * 2.0 ** min(n, _MAX_EXPONENT))


def doubling_schedule(*, base: float, cap: float) -> tuple[float, ...]:
    """``doubling(n)`` for n = 0, 1, ... up to the first entry at the cap (or the exponent bound):
    entry ``min(n, len - 1)`` is ``doubling(n)`` for every n >= 0."""
    out = [doubling(0, base=base, cap=cap)]
    while out[-1] < cap and out[-1] > 0 and len(out) <= _MAX_EXPONENT:
        out.append(doubling(len(out), base=base, cap=cap))
    return tuple(out)


def pause_delay(n: int, *, cap: float, scale: float, rng: Callable[[], float] = random.random) -> float:
    """Pause number ``n`` (from 0): ``min(cap, 2**n)`` seconds, scaled, jittered into [half, all]."""
    return min(cap, 2.0 ** min(n, _MAX_EXPONENT)) * scale * (0.5 + 0.5 * rng())


def jittered(delay: float, scale: float = 1.0, rng: Callable[[], float] = random.random) -> float:
    """``delay`` scaled, with jitter in [delay/2, delay] so retries of many items spread out."""
    return max(0.0, delay * scale * (0.5 + 0.5 * rng()))


def schedule_delay(schedule: tuple[float, ...], attempt: int, scale: float = 1.0,
                   rng: Callable[[], float] = random.random) -> float | None:
    """Delay before retry number ``attempt`` (0-based), or None once the schedule is spent."""
    if attempt >= len(schedule):
        return None
    return jittered(schedule[attempt], scale, rng)


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

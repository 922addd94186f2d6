"""Statistics of the bench: percentiles, medians over runs (nested), formatting.

Pure functions on plain lists and dicts (no numpy), so the unit tests can pin their behaviour.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

NAN = float("nan")


def isnum(v: Any) -> bool:
    """A real number that is not NaN (bools are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def pct(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile, p in 0..100 (p99 of 100 values is the 99th smallest); NaN if empty.

    Nearest rank, not interpolation: a percentile is always a latency that was observed.
    """
    s = sorted(v for v in values if isnum(v))
    if not s:
        return NAN
    if p <= 0:
        return s[0]
    rank = math.ceil(p / 100.0 * len(s))
    return s[min(len(s), max(1, rank)) - 1]


def median(values: Iterable[Any]) -> float:
    """Median of the numeric values (NaN and None dropped); NaN when none is left."""
    vals = [v for v in values if isnum(v)]
    return statistics.median(vals) if vals else NAN


def median_of(runs: list[Any]) -> Any:
    """The run-by-run median of a list of equally shaped results.

    Numbers: the median of the runs that have one (NaN and None are left out). Dicts: key by key,
    over the keys of any run. Lists are per-run detail and are not merged: the first run's is
    kept. Anything else (strings): the most common value, the earliest run's on a tie.
    """
    present = [r for r in runs if r is not None]
    if not present:
        return None
    if all(isinstance(r, dict) for r in present):
        keys: list = []
        for r in present:
            keys += [k for k in r if k not in keys]
        return {k: median_of([r.get(k) for r in present]) for k in keys}
    if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in present):
        return median(present)
    if isinstance(present[0], list):
        return present[0]
    counts: dict = {}
    for r in present:
        counts[repr(r)] = counts.get(repr(r), 0) + 1
    best = max(counts.values())
    return next(r for r in present if counts[repr(r)] == best)


def ratio(a: float, b: float) -> float:
    """a / b, NaN when either is missing or b is 0."""
    return a / b if isnum(a) and isnum(b) and b else NAN


def fmt(v: Any, digits: int = 1, unit: str = "") -> str:
    """A number with thousands separators, ``n/a`` for missing values."""
    if not isnum(v):
        return "n/a"
    return f"{v:,.{digits}f}{unit}"

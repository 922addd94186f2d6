"""devtools.bench.stats: percentiles, medians over runs, formatting (pure logic)."""
from __future__ import annotations

import math

from devtools.bench.stats import fmt, median_of, pct, ratio

NAN = float("nan")


def test_percentile_is_nearest_rank_so_always_an_observed_value():
    values = list(range(1, 101))  # 1..100
    assert pct(values, 50) == 50
    assert pct(values, 99) == 99
    assert pct(values, 100) == 100
    assert pct([3.0, 1.0, 2.0], 50) == 2.0
    assert pct([5.0], 99) == 5.0
    # p99 of 10 values is the largest: a small sample cannot hide its worst latency
    assert pct(list(range(10)), 99) == 9


def test_percentile_ignores_missing_values_and_is_nan_when_nothing_is_left():
    assert pct([NAN, 2.0, None, 4.0], 100) == 4.0
    assert math.isnan(pct([], 50))
    assert math.isnan(pct([NAN], 50))


def test_median_of_runs_goes_key_by_key_and_skips_unmeasured_runs():
    runs = [
        {"e2e": {"eps": 100.0, "caught_up": True}, "label": "a", "series": [1, 2]},
        {"e2e": {"eps": 300.0, "caught_up": True}, "label": "b", "series": [3]},
        {"e2e": {"eps": NAN, "extra": 7}, "label": "b"},
    ]
    m = median_of(runs)
    assert m["e2e"]["eps"] == 200.0  # NaN left out: median of 100 and 300
    assert m["e2e"]["extra"] == 7  # a key only one run has
    assert m["label"] == "b"  # most common
    assert m["series"] == [1, 2]  # lists are per-run detail: the first run's
    assert m["e2e"]["caught_up"] is True  # booleans are not averaged


def test_median_of_three_numbers_is_the_middle_one_not_the_mean():
    assert median_of([{"x": 1.0}, {"x": 10.0}, {"x": 2.0}])["x"] == 2.0
    assert math.isnan(median_of([{"x": NAN}, {"x": NAN}])["x"])


def test_ratio_and_format_of_missing_values():
    assert ratio(3.0, 4.0) == 0.75
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(NAN, 2.0))
    assert fmt(1234.567, 1) == "1,234.6"
    assert fmt(NAN) == "n/a" and fmt(None) == "n/a"

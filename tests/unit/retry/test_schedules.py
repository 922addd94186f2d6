"""The doubling delays, the events worker's pause and the schedule steps (app.retry.backoff)."""
from __future__ import annotations

import pytest

from app.retry.backoff import doubling, doubling_schedule, jittered, pause_delay, schedule_delay


def test_doubling_doubles_to_its_cap_without_jitter():
    assert [doubling(n, base=5.0, cap=60.0) for n in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert doubling(10_000, base=1.0, cap=600.0) == 600.0, "no overflow for any n"


def test_doubling_schedule_ends_at_the_cap_and_its_last_entry_holds():
    pauses = doubling_schedule(base=5.0, cap=300.0)
    assert pauses == (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)
    for n in range(40):
        assert pauses[min(n, len(pauses) - 1)] == doubling(n, base=5.0, cap=300.0)
    assert doubling_schedule(base=5.0, cap=3.0) == (3.0,)
    assert doubling_schedule(base=0.0, cap=3.0) == (0.0,)
    assert len(doubling_schedule(base=1e-30, cap=float("inf"))) == 63, "bounded by the exponent"


@pytest.mark.parametrize("n", [0, 1, 3, 10, 100, 5000])
def test_pause_delay_doubles_to_its_cap_with_half_jitter(n):
    full = min(30.0, 2.0 ** min(n, 62)) * 0.5
    assert pause_delay(n, cap=30.0, scale=0.5, rng=lambda: 1.0) == full
    assert pause_delay(n, cap=30.0, scale=0.5, rng=lambda: 0.0) == full / 2


def test_schedule_delay_steps_through_the_schedule_then_stops():
    schedule = (10.0, 60.0)
    assert schedule_delay(schedule, 0, 1.0, lambda: 1.0) == 10.0
    assert schedule_delay(schedule, 1, 0.5, lambda: 0.0) == 15.0
    assert schedule_delay(schedule, 2) is None
    assert jittered(8.0, 1.0, lambda: 0.5) == 6.0

"""Backoff with full jitter and Retry-After parsing."""

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from app.retry.backoff import backoff_delay, retry_after_seconds

NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("attempt, ceiling", [(0, 2.0), (1, 4.0), (2, 8.0), (3, 16.0), (4, 30.0), (50, 30.0)])
def test_ceiling_doubles_until_cap(attempt, ceiling):
    assert backoff_delay(attempt, base=2.0, cap=30.0, rng=lambda: 1.0) == ceiling
    assert backoff_delay(attempt, base=2.0, cap=30.0, rng=lambda: 0.5) == ceiling / 2


def test_full_jitter_can_be_zero():
    assert backoff_delay(5, base=1.0, cap=60.0, rng=lambda: 0.0) == 0.0


def test_real_rng_stays_in_range():
    for attempt in range(12):
        delay = backoff_delay(attempt, base=0.5, cap=10.0)
        assert 0.0 <= delay <= min(10.0, 0.5 * 2 ** attempt)


def test_huge_attempt_does_not_overflow():
    assert backoff_delay(10_000, base=1.0, cap=600.0, rng=lambda: 1.0) == 600.0


def test_negative_attempt_is_an_error():
    with pytest.raises(ValueError):
        backoff_delay(-1, base=1.0, cap=10.0)


@pytest.mark.parametrize("value, expected", [("120", 120.0), (" 0 ", 0.0), ("1.5", 1.5)])
def test_delta_seconds(value, expected):
    assert retry_after_seconds(value, now=NOW) == expected


def test_http_date_in_the_future():
    when = datetime(2026, 11, 27, 10, 0, 45, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(when, usegmt=True), now=NOW) == 45.0


def test_http_date_in_the_past_is_zero():
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf", "Wed, 99 Foo 2015"])
def test_unusable_values_are_none(value):
    assert retry_after_seconds(value, now=NOW) is None

"""The circuit's pauses on a real Redis: each failed probe doubles the pause up to its cap, as
app.retry.backoff.doubling computes it (the script only picks the entry)."""
from __future__ import annotations

import uuid

import pytest
import redis

from app.forwarding.circuit import Circuit
from app.retry.backoff import doubling


@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_each_failed_probe_doubles_the_pause_up_to_the_cap(redis_url, scale):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    c = Circuit(r, f"t{uuid.uuid4().hex[:6]}:", "ufse.test", threshold=2, max_pause=60, scale=scale)
    now = 1_000_000.0
    assert c.failure(now) == 0.0
    pauses = []
    for _ in range(8):
        until = c.failure(now)
        pauses.append(until - now)
        now = until
    expected = [doubling(n, base=5.0 * scale, cap=60.0 * scale) for n in range(8)]
    assert pauses == pytest.approx(expected, abs=1e-3)
    assert pauses[-1] == pytest.approx(60.0 * scale), "capped"

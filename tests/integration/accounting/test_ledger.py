"""The loss ledger's writes on a real Redis: every count once, also when a write is retried after a
Redis that was paused (SIGSTOP), not lost, ran the first try after the client gave up on it.

Default settings: the client's 5 s socket timeout (app/storage/redis_clients.py) is what gives up.
"""
from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
import redis

from app.accounting import ledger as ledger_mod
from devtools.servers.redis import start_redis


@pytest.fixture
def paused_redis(tmp_path):
    svc = start_redis(tmp_path / "redis", appendonly=False)
    yield svc
    os.kill(svc.proc.pid, signal.SIGCONT)
    svc.stop()


def test_counts_add_up_and_a_retry_after_a_pause_counts_once(paused_redis):
    url = paused_redis.url.rsplit("/", 1)[0] + "/0"
    prefix = f"lg{uuid.uuid4().hex[:6]}:"
    led = ledger_mod.Ledger(url, prefix)
    now = int(time.time() * 1000)
    led.add("shop", now, {"received": 3, "accepted": 2, "rejected:invalid_event": 1})
    led.add("shop", now, {"received": 1, "accepted": 1})
    assert led.flush() == 1
    assert ledger_mod.read(url, prefix, "shop", now, now) == {"received": 4, "accepted": 3,
                                                                "rejected:invalid_event": 1}

    led.add("shop", now, {"accepted": 10})
    os.kill(paused_redis.proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        assert led.flush() == 0, "the write timed out"
    finally:
        os.kill(paused_redis.proc.pid, signal.SIGCONT)
    print(f"flush gave up after {time.monotonic() - t0:.1f} s; Redis resumed and ran what it had received")
    assert led._pending, "kept for the next flush, with its id"  # noqa: SLF001
    led.add("shop", now, {"accepted": 5})
    time.sleep(0.2)
    assert led.flush() == 2, "the retried write and the new one"
    got = ledger_mod.read(url, prefix, "shop", now, now)
    assert got["accepted"] == 3 + 10 + 5, got
    r = redis.Redis.from_url(url)
    assert r.ttl(next(iter(r.scan_iter(f"{prefix}ledger:*:flush:*")))) > 0, "markers expire"

"""The loss ledger's writes on a real Redis: every count once, also when a write is retried after a
Redis that was paused (SIGSTOP), not lost, ran the first try after the client gave up on it.

Default settings: the client's 5 s socket timeout (app/storage/redis_clients.py) is what gives up.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from app.accounting import ledger as ledger_mod
from devtools.servers.redis import start_redis

ROOT = Path(__file__).resolve().parents[3]


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


CLAIM_THEN_DIE = """
import os, signal, sys
import redis
from app.sessions.store import SessionStore
url, prefix = sys.argv[1], sys.argv[2]
store = SessionStore(redis.Redis.from_url(url, decode_responses=True), prefix=prefix, buckets=4, idle_s=30,
                     max_s=3600, marker_ttl_s=600)
print(len(store.claim_due()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the sweep's pool child killed right after its claims
"""


def test_a_claim_is_counted_with_the_claim_when_the_sweep_dies_right_after(redis_url, tmp_path):
    """The ledger's ``finalized`` is written by the claim script itself: a process killed with -9
    right after claiming (fault case 1 kills the sweep's pool child every 2 s) loses no count. When
    the count was a ledger write after the claims, this lost all three."""
    from app.sessions.store import SessionStore

    prefix = f"lc{uuid.uuid4().hex[:6]}:"
    store = SessionStore(redis.Redis.from_url(redis_url, decode_responses=True), prefix=prefix, buckets=4,
                         idle_s=30, max_s=3600, marker_ttl_s=600)
    now = int(time.time() * 1000)
    for sid in ("a", "b", "c"):
        store.apply_batch("shop", f"batch-{sid}", {sid: (1, now - 60_000, now - 60_000)}, at_ms=now - 60_000)
    store.apply_batch("other", "batch-o", {"o": (1, now - 60_000, now - 60_000)}, at_ms=now - 60_000)
    r = subprocess.run([sys.executable, "-c", CLAIM_THEN_DIE, redis_url, prefix], capture_output=True, text=True,
                       timeout=60, cwd=str(ROOT))
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert r.stdout.strip() == "4", "claimed every due session, then died"
    until = int(time.time() * 1000)
    assert ledger_mod.read_claims(redis_url, prefix, "shop", now - 120_000, until) == 3
    assert ledger_mod.read_claims(redis_url, prefix, "other", now - 120_000, until) == 1
    assert ledger_mod.read_claims(redis_url, prefix, "shop", until + 120_000, until + 180_000) == 0, "by minute"
    assert store.claim_due() == [], "claimed once"
    assert ledger_mod.read_claims(redis_url, prefix, "shop", now - 120_000, until) == 3, "counted once"

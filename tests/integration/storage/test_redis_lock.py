"""RedisLock on the real Redis: one holder at a time, expiry frees a dead holder's lock, and a
holder never frees a lock it no longer owns."""
from __future__ import annotations

import time
import uuid

import pytest
import redis

from app.storage.lock import RedisLock


@pytest.fixture
def r(redis_url):
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def key():
    return f"t{uuid.uuid4().hex[:8]}:claim-lock"


def test_one_holder_at_a_time_and_release_frees_it(r, key):
    first, second = RedisLock(r, key, 30_000), RedisLock(r, key, 30_000)
    assert first.acquire() is True
    assert second.acquire() is False, "held: a second holder waits"
    assert 0 < r.pttl(key) <= 30_000, "the lock expires should its holder die"
    first.release()
    assert r.get(key) is None
    assert second.acquire() is True
    second.release()


def test_a_holder_never_frees_a_newer_holders_lock(r, key):
    slow = RedisLock(r, key, 50)
    assert slow.acquire()
    time.sleep(0.2)  # the slow holder outlived its lock
    newer = RedisLock(r, key, 30_000)
    assert newer.acquire() is True
    slow.release()
    assert r.get(key) == newer.token, "the compare-and-delete left the newer holder's lock alone"
    newer.release()
    assert r.get(key) is None


def test_release_without_holding_is_harmless(r, key):
    r.set(key, "someone-else", px=5000)
    RedisLock(r, key, 5000).release()
    assert r.get(key) == "someone-else"
    r.delete(key)

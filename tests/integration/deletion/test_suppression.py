"""The ingest suppression is cheap: a web process asks Redis at most once a second (one GET of the
version counter) and reads the suppression hash only when the counter moved; expired suppressions
drop nothing; the maintenance job writes PostgreSQL's running suppressions back when Redis lost them.
On a real Redis, its calls counted."""
from __future__ import annotations

import collections
import time
import uuid

import pytest

from app.deletion import suppress
from app.storage import redis_clients, redis_keys


class Counted:
    """A Redis client whose commands are counted by name."""

    def __init__(self, r) -> None:
        self.r = r
        self.calls: collections.Counter = collections.Counter()

    def __getattr__(self, name):
        attr = getattr(self.r, name)
        if not callable(attr):
            return attr

        def call(*a, **kw):
            self.calls[name] += 1
            return attr(*a, **kw)
        return call


@pytest.fixture
def r(redis_url):
    return redis_clients.client(redis_url)


def test_no_suppression_costs_one_get_a_second_and_a_change_one_hgetall(r):
    prefix = f"sup{uuid.uuid4().hex[:6]}:"
    counted = Counted(r)
    sup = suppress.Suppressions(counted, prefix)
    t0 = time.time()
    for i in range(1000):  # a second of requests
        assert sup.of("acme", now=t0 + i / 1001) is None
    assert dict(counted.calls) == {"get": 1}, "one GET in the second, no hash read while nothing is suppressed"

    suppress.add(r, prefix, [("acme", "anonymous_id", "anon-1", t0 + 3600), ("acme", "session_id", "s-9", t0 + 3600),
                             ("other", "anonymous_id", "gone", t0 - 1)])
    assert sup.of("acme", now=t0 + 0.999) is None, "within the second the copy is kept"
    assert sup.of("acme", now=t0 + 1.0) == (frozenset({"anon-1"}), frozenset({"s-9"}))
    assert sup.of("other", now=t0 + 1.0) is None, "an ended suppression drops nothing"
    assert dict(counted.calls) == {"get": 2, "hgetall": 1}
    for i in range(1000):
        sup.of("acme", now=t0 + 1.0 + i / 1001)
    assert sup.of("acme", now=t0 + 2.0) is not None
    assert dict(counted.calls) == {"get": 3, "hgetall": 1}, "the counter did not move: the hash is not read again"

    keep = {"session_id": "s-1", "anonymous_id": "anon-2"}
    assert not suppress.suppressed(sup.of("acme", now=t0 + 2.0), keep)
    assert suppress.suppressed(sup.of("acme", now=t0 + 2.0), {"session_id": "s-1", "anonymous_id": "anon-1"})
    assert suppress.suppressed(sup.of("acme", now=t0 + 2.0), {"session_id": "s-9", "anonymous_id": ""})
    assert 0 < r.ttl(redis_keys.suppressions(prefix)) <= 3600 + 60, "the keys expire with the last suppression"


def test_the_job_writes_back_what_redis_lost_and_prunes_what_ended(r):
    prefix = f"sup{uuid.uuid4().hex[:6]}:"
    now = time.time()
    suppress.add(r, prefix, [("acme", "session_id", "old", now - 5)])
    running = [("acme", "anonymous_id", "anon-1", now + 600)]
    assert suppress.resync(r, prefix, running) == 1
    pruned = set(r.hgetall(redis_keys.suppressions(prefix)))
    assert pruned == {"acme\x1fa\x1fanon-1"}, "ended one pruned, running one back"
    assert suppress.resync(r, prefix, running) == 0, "nothing to write when Redis has it"
    r.delete(redis_keys.suppressions(prefix), redis_keys.suppressions_version(prefix))  # Redis lost both (a flush)
    assert suppress.resync(r, prefix, running) == 1
    sup = suppress.Suppressions(r, prefix)
    assert sup.of("acme") == (frozenset({"anon-1"}), frozenset())

"""The reconciliation pages through every candidate (real Redis, ClickHouse 18.16 and chDB).

At the default page size (app.maintenance.BATCH, 500) and idle timeout: more than a page of
versions the sessions Redis still knows (frozen and parked during a UFSE outage, say) sort before
one it lost. Before the cursor, every run read the same first 500 (all known, all skipped) and
the lost version was never queued.
"""
from __future__ import annotations

import time
import uuid

import redis as redis_lib

from app.maintenance import BATCH
from app.sessions.reconcile import reconcile
from app.sessions.store import SEP, SessionStore
from app.settings import load_settings
from app.storage import redis_keys

S = load_settings()


def test_versions_redis_knows_do_not_hide_the_ones_it_lost(ch, redis_url):
    r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"rc{uuid.uuid4().hex[:6]}:"
    store = SessionStore(r, prefix=prefix, idle_s=S.session_idle_timeout, max_s=S.session_max_duration,
                         marker_ttl_s=S.batch_marker_ttl)
    known = [("p1", f"a-{i:05d}", 1) for i in range(BATCH + 100)]  # sort before the lost one
    lost = ("p1", "z-lost", 1)
    created = int(time.time() * 1000)
    ch.insert("session_batches", ("project", "session_id", "version", "batch_id", "events", "created_ms"),
              [(p, s, v, uuid.uuid4().hex, 3, created) for p, s, v in [*known, lost]])
    for p, s, v in known:  # Redis knows these: frozen and waiting (as during a UFSE outage)
        assert store.recover(p, s, v, 1, at_ms=created)
    at = created + (S.session_idle_timeout + 16) * 1000  # quiet for longer than idle + 15 s

    found = reconcile(store, ch, idle_s=S.session_idle_timeout, limit=BATCH, at_ms=at)
    assert [(c.project, c.session_id, c.version) for c in found] == [lost]
    assert r.get(redis_keys.reconcile_cursor(prefix)) is None, "the run read to the end: next starts at the top"

    # With one page per run, the cursor carries the next run past the known versions.
    r.delete(store._final(*lost))  # Redis loses the lost version again (its snapshot and queue entry)
    r.zrem(store.keys(*lost[:2])["outbox"], SEP.join(map(str, lost)))
    found = []
    for _ in range(3):
        found += reconcile(store, ch, idle_s=S.session_idle_timeout, limit=BATCH, at_ms=at, pages=1)
    assert [(c.project, c.session_id, c.version) for c in found] == [lost]

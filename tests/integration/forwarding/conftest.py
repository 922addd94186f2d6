"""A forwarding world on real servers: Redis (session store, due index, circuit), PostgreSQL (dead
letters), chDB (the events a version owns), a real Celery app publishing to that Redis, and the
UFSE sink (devtools/sink.py) or a closed port as the destination; the app's own ``resources``
bound to them. A test ingests a batch, claims its version and calls the forward task's function."""
from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass

import pytest
import redis as redis_lib

from app import resources
from app.settings import Settings, load_settings

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass
class World:
    settings: Settings
    secret: str
    celery: object
    r: redis_lib.Redis
    ch: object

    def claimed(self, sid: str | None = None, project: str = "p1") -> tuple[str, str, int]:
        """Ingest one batch of 3 events, let the session go idle and claim it now: (project, sid, version)."""
        from app.events.persist import persist_batches
        from app.sessions.counting import count_batches

        sid = sid or f"s-{uuid.uuid4().hex[:8]}"
        now = int(time.time() * 1000)
        received = now - self.settings.session_idle_timeout * 1000 - 10_000
        events = [{"event_id": str(uuid.uuid4()), "type": "click", "ts_ms": received - 1000 + i, "session_id": sid,
                   "url": "https://x.test/", "name": "", "anonymous_id": "", "metadata": json.dumps({"i": i})}
                  for i in range(3)]
        batch = {"batch_id": uuid.uuid4().hex, "project": project, "request_id": "req-1", "received_at": received,
                 "events": events}
        store = resources.session_store()
        persist_batches(self.ch, [batch], dedup_window=self.settings.dedup_window)
        count_batches(store, self.ch, [batch])
        store.note_lag(0)
        [c] = [c for c in store.claim_due(at_ms=now) if c.session_id == sid]
        return c.project, c.session_id, c.version


@pytest.fixture
def world(monkeypatch, redis_url, clean_pg, clickhouse_url, ch):
    """``make(ufse_url, **overrides)`` -> World, every other setting at its default."""
    from celery import Celery
    from kombu import pools

    made = []

    def make(ufse_url: str, **extra: str) -> World:
        s = load_settings(overrides={"REDIS_URL": redis_url, "DATABASE_URL": clean_pg, "CLICKHOUSE_URL": clickhouse_url,
                                     "UFSE_URL": ufse_url, "UFSE_SECRET": SECRET,
                                     "REDIS_KEY_PREFIX": f"fw{uuid.uuid4().hex[:6]}:", **extra})
        resources.reset()
        monkeypatch.setattr(resources, "settings", lambda: s)
        monkeypatch.setattr(resources, "clickhouse", lambda: ch)  # the fixture's migrated backend
        app = Celery("forwarding-test", broker=redis_url)
        made.append(app)
        return World(s, SECRET, app, redis_lib.Redis.from_url(redis_url, decode_responses=True), ch)

    yield make
    for app in made:
        app.close()
    pools.reset()  # kombu's pools are global per URL: leave none behind
    resources.reset()

"""The ages and sizes /metrics samples for the alert rules, on the real Redis and PostgreSQL.

Each gauge is read after ``queues.sample`` as Prometheus would read it; the state behind it is
written by the code that writes it in production (the journal, the session store, the deletion
store), so a change of key layout or scoring breaks these, not only the sampler.
"""
from __future__ import annotations

import time
import uuid

import pytest
import redis as redis_lib
from prometheus_client import REGISTRY

from app import resources
from app.deletion.store import DeletionStore
from app.ingest.journal import journal_for
from app.observability import queues
from app.settings import load_settings
from app.storage import postgres
from tasks.app import celery


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


@pytest.fixture
def settings(redis_url, clean_pg, tmp_path, monkeypatch):
    database_url = clean_pg  # its own rows only: the oldest open deletion is read by id
    empty = tmp_path / "empty.env"
    empty.write_text("")
    s = load_settings({"OBSERVER_ENV_FILE": str(empty), "REDIS_URL": redis_url, "DATABASE_URL": database_url,
                       "REDIS_KEY_PREFIX": f"sm{uuid.uuid4().hex[:8]}:"})
    resources.reset()
    monkeypatch.setattr(resources, "settings", lambda: s)
    yield s
    resources.reset()


def test_oldest_unstored_batch_is_the_journal_entry_accepted_longest_ago(settings):
    journal = journal_for(settings)
    assert journal is not None
    now = int(time.time() * 1000)
    for age_s in (30, 600, 90):  # spread over shards by their batch ids
        journal.write({"batch_id": uuid.uuid4().hex, "received_at": now - age_s * 1000, "events": []})
    queues.sample(settings, celery)
    assert 600 <= _gauge("observer_ingest_oldest_unstored_seconds") < 610
    for shard in range(16):  # every entry stored and counted: the flush settles them
        for batch_id in journal.r.zrange(journal._keys(shard)[0], 0, -1):
            journal.settle(batch_id)
    queues.sample(settings, celery)
    assert _gauge("observer_ingest_oldest_unstored_seconds") == 0


def test_oldest_undelivered_is_measured_from_the_claim_not_from_the_last_re_enqueue(settings):
    store = resources.session_store()
    now = int(time.time() * 1000)
    assert store.recover("p1", "s-old", 1, batches=1, at_ms=now - 3_600_000)
    assert store.recover("p1", "s-new", 1, batches=1, at_ms=now - 5_000)
    queues.sample(settings, celery)
    assert 3600 <= _gauge("observer_forward_oldest_undelivered_seconds") < 3610
    # the sweep re-enqueues the stale entry and re-stamps its outbox score to now: still an hour old
    assert [c.session_id for c in store.stale_outbox(120, at_ms=now)] == ["s-old"]
    queues.sample(settings, celery)
    assert 3600 <= _gauge("observer_forward_oldest_undelivered_seconds") < 3610
    store.complete("p1", "s-old", 1)  # delivered
    queues.sample(settings, celery)
    assert 5 <= _gauge("observer_forward_oldest_undelivered_seconds") < 15
    store.complete("p1", "s-new", 1)
    queues.sample(settings, celery)
    assert _gauge("observer_forward_oldest_undelivered_seconds") == 0


def test_broker_memory_is_the_brokers_info_memory(settings):
    queues.sample(settings, celery)
    r = redis_lib.Redis.from_url(settings.celery_broker_url)
    maxmemory = int(r.config_get("maxmemory")["maxmemory"])
    used = _gauge("observer_broker_memory_used_bytes")
    assert used is not None and 0 < used < 4 * r.info("memory")["used_memory"]
    assert _gauge("observer_broker_memory_max_bytes") == maxmemory


def test_rabbitmq_has_no_journal_and_no_redis_broker_memory(settings, tmp_path):
    amqp = load_settings({"OBSERVER_ENV_FILE": str(tmp_path / "empty.env"), "REDIS_URL": settings.redis_url,
                          "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
                          "DATABASE_URL": settings.database_url, "REDIS_KEY_PREFIX": settings.redis_key_prefix})
    queues.sample(amqp, celery)  # nothing listens on port 1: the queue depths fail, quietly
    assert _gauge("observer_ingest_oldest_unstored_seconds") == 0


def test_deletion_age_and_retention_success_come_from_postgresql(settings):
    deletions = DeletionStore(settings.database_url)
    req = deletions.create("p1", "anonymous_id", f"a-{uuid.uuid4().hex[:6]}", "test", 60)
    month = 30 * 86400  # older than any request another test of this session records
    finished = time.time() - 3 * 86400
    with postgres.cursor(settings.database_url) as cur:
        cur.execute("UPDATE deletion_requests SET created_at = now() - make_interval(secs => %s) WHERE id = %s",
                    (month, req))
        cur.execute("INSERT INTO retention_runs (as_of, started_at, finished_at, ok, partitions, bytes, dead_letters, "
                    "detail) VALUES (current_date, to_timestamp(%s), to_timestamp(%s), true, 0, 0, 0, '{}')",
                    (finished, finished))
    queues.sample(settings, celery)
    assert month <= _gauge("observer_deletion_oldest_open_seconds") < month + 60
    assert _gauge("observer_retention_last_success_timestamp") == pytest.approx(finished, abs=0.01)
    deletions.advance(req, "verified")
    queues.sample(settings, celery)
    assert _gauge("observer_deletion_oldest_open_seconds") < month


def test_a_server_away_leaves_the_scrape_answering(settings, tmp_path):
    down = load_settings({"OBSERVER_ENV_FILE": str(tmp_path / "empty.env"),
                          "REDIS_URL": "redis://127.0.0.1:1/0",
                          "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1",
                          "REDIS_KEY_PREFIX": settings.redis_key_prefix})
    queues.sample(down, celery)  # logs a warning per sample, raises nothing

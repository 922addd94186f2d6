"""Every Redis key, spelled out: data already in Redis and the tooling depend on these exact strings."""
from __future__ import annotations

from app.storage import redis_keys


def test_session_keys_share_the_bucket_tag():
    assert redis_keys.session_bucket("obs:", 3) == "obs:s:{b3}:"
    assert redis_keys.session_live("obs:", 3, "p", "s1") == "obs:s:{b3}:live:p:s1"
    assert redis_keys.session_ver("obs:", 3, "p", "s1") == "obs:s:{b3}:ver:p:s1"
    assert redis_keys.session_final("obs:", 3, "p", "s1", 7) == "obs:s:{b3}:final:p:s1:7"
    assert redis_keys.session_final("obs:", 3, "p", "s1", "7") == "obs:s:{b3}:final:p:s1:7"
    assert redis_keys.session_done("obs:", 3, "p", "s1", 7) == "obs:s:{b3}:done:p:s1:7"
    assert redis_keys.session_applied("obs:", 3, "b-1", "p", "s1") == "obs:s:{b3}:applied:b-1:p:s1"
    assert redis_keys.session_deadline("obs:", 3) == "obs:s:{b3}:deadline"
    assert redis_keys.session_outbox("obs:", 3) == "obs:s:{b3}:outbox"
    assert redis_keys.sessions_lag("obs:") == "obs:sessions:lag"


def test_retry_circuit_sweep_and_heartbeat_keys():
    assert redis_keys.due_index("obs:", "forward") == "obs:due:{forward}:index"
    assert redis_keys.due_item_prefix("obs:", "events") == "obs:due:{events}:item:"
    assert redis_keys.circuit("obs:", "ufse.test:443") == "obs:circuit:{ufse.test:443}"
    assert redis_keys.circuit_probe("obs:", "ufse.test:443") == "obs:circuit:{ufse.test:443}:probe"
    assert redis_keys.sweep_lock("obs:") == "obs:claim-lock"
    assert redis_keys.heartbeat("obs:", "sweep") == "obs:hb:sweep"
    assert redis_keys.heartbeat("obs:", "clickhouse") == "obs:hb:clickhouse"
    assert redis_keys.worker_heartbeats("obs:") == "obs:hb:workers"


def test_ratelimit_and_journal_keys():
    assert redis_keys.ratelimit_prefix("obs:") == "obs:rl"
    assert redis_keys.journal_shard("obs:", 5) == "obs:journal:{j5}:"
    assert redis_keys.journal_index("obs:", 5) == "obs:journal:{j5}:index"
    assert redis_keys.journal_body_prefix("obs:", 5) == "obs:journal:{j5}:b:"

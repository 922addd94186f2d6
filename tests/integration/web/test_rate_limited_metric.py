"""observer_rate_limited_total counts each 429, labelled by the limit that refused it."""
from __future__ import annotations

import time
import uuid

from prometheus_client import REGISTRY

from app.keys.store import KeyStore
from app.web.factory import create_app


def _count(scope: str) -> float:
    return REGISTRY.get_sample_value("observer_rate_limited_total", {"scope": scope}) or 0.0


def _post(client, key, ip):
    event = {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
             "session_id": "sess-1", "url": "https://shop.test/cart"}
    return client.post("/v1/events", json={"events": [event]}, headers={"Authorization": f"Bearer {key}"},
                       environ_base={"REMOTE_ADDR": ip})


def test_each_429_is_counted_by_scope(redis_url, clean_pg, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": clean_pg, "REDIS_KEY_PREFIX": f"rl{uuid.uuid4().hex[:8]}:",
           "RATE_LIMIT_DEFAULT": "1000/second", "RATE_LIMIT_PER_IP": "2/minute", "LOG_LEVEL": "WARNING"}
    store = KeyStore(clean_pg)
    key = store.create("shop")[1]
    limited_key = store.create("shop", rate_limit="1/minute")[1]
    client = create_app(config=env).test_client()
    ip0, key0 = _count("ip"), _count("key")

    assert [_post(client, key, "203.0.113.7").status_code for _ in range(3)] == [202, 202, 429]
    assert (_count("ip"), _count("key")) == (ip0 + 1, key0)

    assert [_post(client, limited_key, "198.51.100.9").status_code for _ in range(2)] == [202, 429]
    assert (_count("ip"), _count("key")) == (ip0 + 1, key0 + 1)
    assert _post(client, key, "192.0.2.1").status_code == 202  # an answer that is not a 429 counts nothing
    assert (_count("ip"), _count("key")) == (ip0 + 1, key0 + 1)

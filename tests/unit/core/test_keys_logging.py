"""Key model + TTL cache (pure), the JSON log formatter, request ids."""
from __future__ import annotations

import json
import logging

from app.keys import model
from app.keys.cache import KeyCache
from app.observability import logging as obs_logging
from app.observability.context import new_request_id, request_id_var, task_id_var, valid_request_id


def test_key_shape_and_digest():
    key = model.generate()
    assert key.startswith("obs_pk_") and model.well_formed(key) and len(key) == 50
    assert not model.well_formed(key + "x") and not model.well_formed("obs_pk_short")
    assert model.same_digest(model.digest(key), model.digest(key))
    assert not model.same_digest(model.digest(key), model.digest(model.generate()))
    assert model.display_prefix(key) == key[:13]


def test_cache_hits_misses_and_expiry():
    now = [0.0]
    calls = []
    info = model.KeyInfo(1, "p")
    good = model.generate()

    def loader(k):
        calls.append(k)
        return info if k == good else None

    cache = KeyCache(loader, ttl=30, clock=lambda: now[0], max_entries=2)
    bad = model.generate()
    assert cache.get(good) is info and cache.get(good) is info
    assert cache.get(bad) is None and cache.get(bad) is None  # misses are cached too
    assert calls == [good, bad]
    assert cache.get("not-a-key") is None and len(calls) == 2  # malformed never hits the store
    now[0] = 31
    cache.get(good)
    assert calls == [good, bad, good]  # a revoked key would be refused within the TTL
    cache.get(model.generate())
    cache.get(model.generate())
    assert len(cache._data) == 2  # bounded


def test_json_formatter_binds_context_and_extras():
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    rec.batch_id = "b1"
    t1 = request_id_var.set("req-12345678")
    t2 = task_id_var.set("task-1")
    try:
        out = json.loads(obs_logging.JsonFormatter().format(rec))
        text = obs_logging.TextFormatter("%(message)s").format(rec)
    finally:
        request_id_var.reset(t1)
        task_id_var.reset(t2)
    assert out["msg"] == "hello you" and out["request_id"] == "req-12345678" and out["task_id"] == "task-1"
    assert out["batch_id"] == "b1" and out["level"] == "info"
    assert "request_id=req-12345678" in text and "batch_id=b1" in text
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec2 = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(obs_logging.JsonFormatter().format(rec2))["exc"]


def test_configure_is_idempotent():
    obs_logging.configure("INFO", "json")
    obs_logging.configure("DEBUG", "text")
    root = logging.getLogger()
    assert sum(1 for h in root.handlers if getattr(h, "_observer", False)) == 1


def test_request_ids():
    assert valid_request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    assert valid_request_id("short") is None and valid_request_id("bad id with spaces") is None
    assert valid_request_id(None) is None and len(new_request_id()) == 32


def test_sentry_is_initialised_only_with_a_dsn(monkeypatch, tmp_path):
    import sentry_sdk

    from app import create_app

    env = tmp_path / "e.env"
    env.write_text("")
    monkeypatch.setenv("OBSERVER_ENV_FILE", str(env))
    create_app()
    assert not sentry_sdk.get_client().is_active()
    create_app({"SENTRY_DSN": "https://public@127.0.0.1:9/1"})  # nothing is sent until an error
    assert sentry_sdk.get_client().is_active()
    sentry_sdk.init(dsn=None)

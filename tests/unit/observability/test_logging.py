"""The JSON log formatter, request and task ids, Sentry only with a DSN."""
from __future__ import annotations

import json
import logging

from app.observability import logging as obs_logging
from app.observability.context import new_request_id, request_id_var, task_id_var, valid_request_id


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

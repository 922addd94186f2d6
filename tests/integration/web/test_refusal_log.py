"""Every refused request (4xx) leaves one log line with its status, code and request id, so "why
was my request refused?" has an answer in the logs (the web's JSON log, as `make run` writes it)."""
from __future__ import annotations

import logging
import uuid

from app.web.factory import create_app


def test_each_4xx_answer_logs_one_line_with_its_code_and_request_id(redis_url, clean_pg, caplog):
    env = {"REDIS_URL": redis_url, "DATABASE_URL": clean_pg, "REDIS_KEY_PREFIX": f"rl{uuid.uuid4().hex[:6]}:"}
    client = create_app(config=env).test_client()
    caplog.set_level(logging.INFO, logger="app.web.errors")
    cases = [({}, b'{"events": []}', 401, "missing_api_key"),
             ({"Authorization": "Bearer obs_pk_" + "x" * 43}, b'{"events": []}', 401, "invalid_api_key"),
             ({"Content-Type": "text/plain"}, b"{}", 400, "invalid_batch")]
    for headers, body, status, code in cases:
        before = len(caplog.records)
        r = client.post("/v1/events", data=body, headers={"Content-Type": "application/json", **headers})
        assert r.status_code == status, r.get_data(as_text=True)
        answered = r.get_json()["error"]
        lines = [rec for rec in caplog.records[before:] if rec.getMessage() == "request refused"]
        assert len(lines) == 1, [rec.getMessage() for rec in caplog.records[before:]]
        assert lines[0].status == status and lines[0].code == answered["code"]
        assert lines[0].request_id == answered["request_id"] == r.headers["X-Request-ID"]
        if code:
            assert answered["code"] == code

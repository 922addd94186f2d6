"""A secret in UFSE_URL (``user:pass@``, a query token) never leaves the URL handed to requests:
not in exception text, log lines, dead letters, Sentry breadcrumbs or Redis key names.

Real deliveries over loopback: to a closed port (requests' ConnectionError quotes the path and
query) and to the UFSE sink answering 503; the circuit and due index on a real Redis, the dead
letter in PostgreSQL, Sentry's real SDK posting to a local receiver.
"""
from __future__ import annotations

import base64
import gzip
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import resources
from app.forwarding import deliver as delivery
from app.forwarding import destinations, parked
from app.forwarding.client import UfseClient
from app.forwarding.url_redaction import origin, redact, redacted_url
from app.observability.logging import JsonFormatter
from devtools import sink as ufse_sink

CHDB_ONLY = pytest.mark.parametrize("clickhouse_url", ["chdb"], indirect=True)  # engine-agnostic decisions
SECRET = "whsec_" + base64.b64encode(b"ufse-url-secrets-test-0123456789").decode()

WORD = "s3cret"


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return port


def _url(port: int) -> str:
    return f"http://user:{WORD}@127.0.0.1:{port}/x?token={WORD}"


@pytest.fixture
def json_log(caplog):
    """Every record of the run, as the JSON line the app's formatter prints (extras included)."""
    caplog.set_level(logging.DEBUG)
    fmt = JsonFormatter()
    return lambda: "\n".join(fmt.format(r) for r in caplog.records)


def _redis_text(r) -> str:
    out = []
    for key in r.scan_iter(match="*", count=1000):
        out.append(key)
        kind = r.type(key)
        if kind == "string":
            out.append(r.get(key) or "")
        elif kind == "hash":
            out.append(json.dumps(r.hgetall(key)))
        elif kind == "zset":
            out.append(json.dumps(r.zrange(key, 0, -1)))
        elif kind == "list":
            out.append(json.dumps(r.lrange(key, 0, -1)))
    return "\n".join(out)


@CHDB_ONLY
def test_a_failing_delivery_shows_no_secret_of_ufse_url(world, json_log):
    w = world(_url(_closed_port()))
    # A retry that fails (parked, circuit counted), then the last step of the schedule failing
    # again: a dead letter carrying the transport error.
    first = w.claimed()
    assert delivery.deliver(w.celery, *first) == "retrying"
    last = w.claimed()
    n = len(w.settings.forward_retry_schedule)
    assert delivery.deliver(w.celery, *last, attempt=n) == "dead_lettered"
    [row] = resources.dead_letters().list()
    stored = resources.dead_letters().get(row["id"])
    assert "ConnectionError" in stored["error"] and "token=***" in stored["error"], stored["error"]
    client = destinations.client_for(destinations.for_project("p1"))
    result = client.deliver(b"{}", msg_id="p:s:1", request_id="r")
    assert result.outcome == "retry" and "/x?token=***" in result.error, result.error
    assert WORD not in result.error, "exception text"
    assert WORD not in repr(client)
    assert WORD not in json.dumps(stored, default=str), "dead letter row"
    logs = json_log()
    assert "forward dead-lettered" in logs and "ufse attempt" in logs
    assert WORD not in logs, [line for line in logs.splitlines() if WORD in line][:3]
    keys = _redis_text(w.r)
    assert "circuit:{127.0.0.1:" in keys, "the circuit is named by the destination's origin"
    assert WORD not in keys, [k for k in keys.splitlines() if WORD in k]


@CHDB_ONLY
def test_an_upgrade_moves_an_open_circuit_off_the_key_that_named_the_credentials(world, json_log):
    """The circuit used to be named by the URL's netloc (user info included). Its state moves to
    the origin's key once per process, so an open circuit holds, and the old key is gone."""
    port = _closed_port()
    w = world(_url(port))
    prefix = w.settings.redis_key_prefix
    legacy = f"{prefix}circuit:{{user:{WORD}@127.0.0.1:{port}}}"
    w.r.hset(legacy, mapping={"failures": "7", "open_until": "4102444800", "opened": "2"})
    w.r.expire(legacy, 3600)
    w.r.set(legacy + ":probe", "1", ex=30)
    parked._adopted.clear()
    c = parked.circuit()
    assert c.open_until() == 4102444800.0, "the outage is not forgotten"
    assert w.r.exists(legacy) == 0 and w.r.exists(legacy + ":probe") == 0
    assert WORD not in _redis_text(w.r)
    assert w.r.ttl(c.key) > 0
    assert "circuit state moved" in json_log() and WORD not in json_log()


class _SentryReceiver(BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        _SentryReceiver.bodies.append(data.decode("utf-8", "replace"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_sentry_breadcrumbs_of_a_ufse_request_carry_no_secret():
    """The stdlib integration records every outgoing request as a breadcrumb, query included."""
    import sentry_sdk

    from app.observability.sentry import safe_options

    server = ThreadingHTTPServer(("127.0.0.1", 0), _SentryReceiver)
    _SentryReceiver.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ufse_sink.Sink(secret=SECRET) as sink:
            sink.set_plan([503])
            port = sink.url.rstrip("/").rsplit(":", 1)[1]
            client = UfseClient(_url(int(port)), SECRET, timeout=5)
            sentry_sdk.init(dsn=f"http://k@127.0.0.1:{server.server_address[1]}/1", **safe_options())
            try:
                result = client.deliver(b"{}", msg_id="p:s:1", request_id="r")
                assert result.outcome == "retry"
                logging.getLogger("app.forwarding").error("ufse failed", extra={"error": result.error})
                sentry_sdk.capture_message("after a UFSE attempt")
                sentry_sdk.flush(5)
            finally:
                client.close()
                sentry_sdk.get_client().close(timeout=2)
                sentry_sdk.get_global_scope().set_client(None)  # back to the inactive client for later tests
            assert sink.received[0]["path"] == f"/x?token={WORD}", "the real URL was used"
    finally:
        server.shutdown()
    sent = "\n".join(_SentryReceiver.bodies)
    assert "breadcrumbs" in sent and "127.0.0.1" in sent, sent[:500]
    assert WORD not in sent, sent[max(0, sent.find(WORD) - 300):sent.find(WORD) + 100]


def test_redaction_keeps_the_destination_and_drops_every_secret_form():
    url = "https://bob:p%40ss%2Fword@ufse.test:8443/hook/v1?token=t0ken-value&mode=x#frag-secret"
    shown = redacted_url(url)
    assert shown == "https://bob:***@ufse.test:8443/hook/v1?token=***&mode=***#***"
    assert origin(url) == "ufse.test:8443"
    for secret in ("p%40ss%2Fword", "p@ss/word", "t0ken-value", "frag-secret"):
        assert secret not in redact(f"failed: {url} then {secret} again", url)
    assert redacted_url("http://127.0.0.1:9/ufse") == "http://127.0.0.1:9/ufse", "nothing to hide"

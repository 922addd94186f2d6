"""UfseClient against the real UFSE sink (devtools/sink.py) over loopback."""

import base64
import json
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import requests

from app.forwarding.client import USER_AGENT, DeliveryResult, UfseClient
from devtools import sink as ufse_sink

ROOT = pathlib.Path(__file__).resolve().parents[3]

SECRET = "whsec_" + base64.b64encode(b"client-test-secret-0123456789abc").decode()
BODY = json.dumps({"session": {"project": "p", "session_id": "s", "version": 1,
                               "counts": {"click": 1}}, "events": [{"type": "click"}]},
                  separators=(",", ":")).encode()


@pytest.fixture
def sink():
    s = ufse_sink.Sink(secret=SECRET).start()
    yield s
    s.stop()


@pytest.fixture
def client(sink):
    c = UfseClient(sink.url + "ufse", SECRET, timeout=2.0)
    yield c
    c.close()


def deliver(client, msg_id="p:s:1"):
    return client.deliver(BODY, msg_id=msg_id, request_id="req-123")


def test_200_is_delivered_with_all_headers_and_a_valid_signature(sink, client):
    result = deliver(client)
    assert isinstance(result, DeliveryResult)
    assert (result.outcome, result.status, result.error, result.retry_after) == ("delivered", 200, None, None)
    assert result.elapsed_s >= 0
    (got,) = sink.received
    assert got["path"] == "/ufse"
    assert got["signature_valid"] is True
    assert got["body"]["session"]["project"] == "p"
    headers = got["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert headers["x-request-id"] == "req-123"
    assert headers["webhook-id"] == "p:s:1"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5


def test_500_is_retry_and_the_body_is_kept_for_logs(sink, client):
    sink.set_plan([500])
    result = deliver(client)
    assert (result.outcome, result.status, result.retry_after) == ("retry", 500, None)
    assert result.error.startswith("HTTP 500") and "planned failure" in result.error
    assert deliver(client).outcome == "delivered"  # the plan is consumed one answer per POST


@pytest.mark.parametrize("status", [408, 502, 503, 504])
def test_transient_statuses_are_retry(sink, client, status):
    sink.set_plan([status])
    assert deliver(client).outcome == "retry"


def test_429_carries_retry_after(sink, client):
    sink.set_plan([{"status": 429, "retry_after": 7}])
    result = deliver(client)
    assert (result.outcome, result.status, result.retry_after) == ("retry", 429, 7.0)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
def test_other_4xx_are_permanent(sink, client, status):
    sink.set_plan([status])
    result = deliver(client)
    assert (result.outcome, result.status) == ("permanent", status)
    assert result.error.startswith(f"HTTP {status}")


def test_redirect_is_not_followed(sink, client):
    sink.set_plan([307])
    assert deliver(client).outcome == "permanent"
    assert len(sink.received) == 1


def test_every_attempt_is_signed_afresh(sink):
    offset = [0.0]  # a retry a minute later, inside the receiver's 5-minute window
    c = UfseClient(sink.url, SECRET, timeout=2.0, clock=lambda: time.time() + offset[0])
    deliver(c)
    offset[0] = 60.0
    deliver(c)
    first, second = sink.received
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert int(second["headers"]["webhook-timestamp"]) - int(first["headers"]["webhook-timestamp"]) >= 59
    assert first["headers"]["webhook-signature"] != second["headers"]["webhook-signature"]
    assert first["signature_valid"] and second["signature_valid"]
    c.close()


def test_wrong_secret_is_flagged_by_the_sink(sink):
    other = "whsec_" + base64.b64encode(b"not-the-sinks-secret").decode()
    c = UfseClient(sink.url, other, timeout=2.0)
    assert deliver(c).outcome == "delivered"  # the sink records, UFSE would refuse
    assert sink.received[0]["signature_valid"] is False
    c.close()


def test_connection_refused_is_retry():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = UfseClient(f"http://127.0.0.1:{port}/", SECRET, timeout=2.0)
    result = deliver(c)
    assert (result.outcome, result.status) == ("retry", None)
    assert "ConnectionError" in result.error
    c.close()


def test_timeout_is_retry(sink):
    sink.set_plan([{"status": 200, "delay": 1.0}])
    c = UfseClient(sink.url, SECRET, timeout=0.2)
    result = deliver(c)
    assert (result.outcome, result.status) == ("retry", None)
    assert "Timeout" in result.error
    c.close()


def test_malformed_url_is_permanent():
    result = deliver(UfseClient("not a url", SECRET, timeout=1.0))
    assert (result.outcome, result.status) == ("permanent", None)


def test_bad_secret_fails_at_construction():
    with pytest.raises(ValueError):
        UfseClient("http://127.0.0.1:1/", "plain-secret", timeout=1.0)


def test_huge_error_body_is_capped():
    class Huge(ufse_sink._Handler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            data = b"x" * 200_000
            self.send_response(500)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ufse_sink._Server(("127.0.0.1", 0), Huge)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        c = UfseClient(f"http://127.0.0.1:{server.server_address[1]}/", SECRET, timeout=2.0)
        result = deliver(c)
        assert result.outcome == "retry"
        assert len(result.error) <= len("HTTP 500: ") + 2048
        c.close()
    finally:
        server.shutdown()
        server.server_close()


def test_connection_is_reused_between_deliveries(sink):
    session = requests.Session()
    c = UfseClient(sink.url, SECRET, timeout=2.0, session=session)
    sink.set_plan([500])
    deliver(c)
    deliver(c)
    # One pooled connection served both POSTs (the error body was drained, not abandoned).
    pool = next(iter(session.get_adapter(sink.url).poolmanager.pools._container.values()))
    assert pool.num_connections == 1
    c.close()


# --- the sink itself: control endpoints, per-id plans, the CLI -------------------------------


def _post(url, doc):
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=5).read()


def test_sink_control_endpoints_and_per_id_plan(sink, client):
    _post(sink.url + "_plan", {"responses": [503], "by_webhook_id": {"p:s:9": [429, 400]}})
    assert deliver(client, "p:s:9").status == 429
    assert deliver(client, "p:s:9").status == 400
    assert deliver(client, "p:s:1").status == 503
    assert deliver(client, "p:s:9").status == 200
    received = json.loads(urllib.request.urlopen(sink.url + "_received", timeout=5).read())
    assert [r["status"] for r in received] == [429, 400, 503, 200]
    _post(sink.url + "_reset", {})
    assert sink.received == []


def test_sink_wait_for(sink, client):
    sink.set_plan([500])
    deliver(client)
    deliver(client)
    got = sink.wait_for(lambda rs: any(r["status"] == 200 for r in rs), timeout=2)
    assert [r["status"] for r in got] == [500, 200]
    with pytest.raises(TimeoutError):
        sink.wait_for(lambda rs: len(rs) > 5, timeout=0.1)


def test_sink_verifies_without_standardwebhooks(monkeypatch):
    # The sink must work from a bare Python; its stdlib check has to agree with the package.
    monkeypatch.setattr(ufse_sink, "standardwebhooks", None)
    s = ufse_sink.Sink(secret=SECRET).start()
    try:
        deliver(UfseClient(s.url, SECRET, timeout=2.0))
        deliver(UfseClient(s.url, "whsec_" + base64.b64encode(b"wrong").decode(), timeout=2.0))
        assert [r["signature_valid"] for r in s.received] == [True, False]
        good = s.received[0]["headers"]
        bad_body = s.check_signature(BODY + b" ", good)
        stale = dict(good, **{"webhook-timestamp": str(int(time.time()) - 600)})
        assert (bad_body, s.check_signature(BODY, stale), s.check_signature(BODY, {})) == (False, False, False)
    finally:
        s.stop()


def test_sink_without_secret_records_signature_as_unknown():
    with ufse_sink.Sink() as s:
        deliver(UfseClient(s.url, SECRET, timeout=2.0))
        assert s.received[0]["signature_valid"] is None


def test_sink_describe_line():
    line = ufse_sink.describe({"headers": {"webhook-id": "p:s:1"}, "status": 200,
                               "signature_valid": None, "body": json.loads(BODY)})
    assert line == 'UFSE <- p/s v1: 1 events, counts={"click":1} webhook-id=p:s:1 status=200 sig=-'


def test_sink_cli_prints_one_line_per_delivery():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.sink", "--port", str(port), "--secret", SECRET, "--fail-plan", "500"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in proc.stdout.readline()
        c = UfseClient(f"http://127.0.0.1:{port}/", SECRET, timeout=2.0)
        assert deliver(c).outcome == "retry"
        assert deliver(c).outcome == "delivered"
        c.close()
        assert proc.stdout.readline().strip().endswith("status=500 sig=ok")
        assert proc.stdout.readline().strip().endswith("status=200 sig=ok")
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0

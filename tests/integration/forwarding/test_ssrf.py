"""The SSRF guard of project destinations, on loopback only: real HTTP receivers (the UFSE sink
and a redirecting server), the real CLI, PostgreSQL, Redis and chDB.

A local resolver stub (``app.forwarding.ssrf.resolve`` replaced) plays DNS: ``public.test`` and
``rebind.test`` resolve to 127.0.0.2, which the one override allows as if it were a public
address (``DESTINATIONS_ALLOWED_NETWORKS=127.0.0.2/32``: this machine has no public address to
test against); 127.0.0.1, every other loopback, private and link-local address stays refused.
"""
from __future__ import annotations

import http.server
import json
import threading

import pytest

from app import resources
from app.forwarding import deliver as delivery
from app.forwarding import destinations, ssrf
from app.web.factory import create_app
from devtools import sink as ufse_sink

CHDB_ONLY = pytest.mark.parametrize("clickhouse_url", ["chdb"], indirect=True)
STANDS_FOR_PUBLIC = "127.0.0.2"
ALLOW = {"DESTINATIONS_ALLOWED_NETWORKS": f"{STANDS_FOR_PUBLIC}/32"}
TOKEN = "tok_Zq81rebind"  # noqa: S105 -- a made-up query secret that must never be shown


@pytest.fixture
def dns(monkeypatch):
    """``dns[name] = address``: the resolver stub; other names resolve as the system does."""
    table: dict[str, str] = {}
    system = ssrf.resolve
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: [table[host]] if host in table else system(host, port))
    return table


@pytest.fixture
def redirecting():
    """A server on 127.0.0.2 answering every request with a redirect to ``target[0]``."""
    target = ["http://127.0.0.1:9/"]

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(307)
            self.send_header("Location", target[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer((STANDS_FOR_PUBLIC, 0), Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], target
    srv.shutdown()
    srv.server_close()


def _cli(w, *args: str):
    app = create_app({"DATABASE_URL": w.settings.database_url, "REDIS_URL": w.settings.redis_url,
                      "CLICKHOUSE_URL": w.settings.clickhouse_url, "UFSE_URL": w.settings.ufse_url,
                      "UFSE_SECRET": w.settings.ufse_secret, "REDIS_KEY_PREFIX": w.settings.redis_key_prefix, **ALLOW})
    result = app.test_cli_runner().invoke(args=["destinations", *args])
    resources.bind(w.settings)
    print(f"$ flask --app app destinations {' '.join(args)}\n{result.output}")
    return result


@CHDB_ONLY
def test_set_refuses_private_loopback_and_redirects_to_them(world, dns, redirecting):
    with ufse_sink.Sink(quiet=True) as loopback_sink:
        w = world(loopback_sink.url + "ufse", **ALLOW)
        port, target = redirecting
        dns["public.test"] = STANDS_FOR_PUBLIC
        target[0] = f"{loopback_sink.url}internal"
        refused = {
            "http://127.0.0.1/hook": "127.0.0.1, a loopback address",
            "http://10.0.0.1/hook": "10.0.0.1, a private address",
            "http://[::1]/hook": "::1, a loopback address",
            "http://169.254.169.254/latest/meta-data": "169.254.169.254, a link-local address",
            "http://localhost/hook": "127.0.0.1, a loopback address",  # a name resolving to loopback
            f"{loopback_sink.url}hook": "127.0.0.1, a loopback address",
            f"http://public.test:{port}/hook": "redirects to 127.0.0.1",
        }
        for url, why in refused.items():
            out = _cli(w, "set", "p1", "--url", url)
            assert out.exit_code == 1 and why in out.output, (url, out.output)
        # A redirect to a public address is refused too: deliveries never follow one.
        target[0] = f"http://public.test:{port}/elsewhere"
        out = _cli(w, "set", "p1", "--url", f"http://public.test:{port}/hook")
        assert out.exit_code == 1 and "never follow redirects" in out.output, out.output
        assert destinations.list_destinations(w.settings.database_url) == []
        assert loopback_sink.snapshot() == [], "nothing reached the loopback receiver"


@CHDB_ONLY
def test_a_name_public_at_set_time_and_private_at_delivery_is_refused_at_delivery(world, dns):
    with ufse_sink.Sink(quiet=True) as loopback_sink:
        w = world(loopback_sink.url + "ufse", **ALLOW)
        port = loopback_sink.url.rsplit(":", 1)[1].strip("/")
        dns["rebind.test"] = STANDS_FOR_PUBLIC
        url = f"http://rebind.test:{port}/hook?token={TOKEN}"
        out = _cli(w, "set", "p1", "--url", url)
        assert out.exit_code == 0, out.output
        assert TOKEN not in out.output and "token=***" in out.output
        dns["rebind.test"] = "127.0.0.1"  # the name's owner re-points it at the workers' loopback
        destinations.reset()
        assert delivery.deliver(w.celery, *w.claimed()) == "dead_lettered"
        assert loopback_sink.snapshot() == [], "refused before connecting"
        [row] = resources.dead_letters().list()
        stored = json.dumps(resources.dead_letters().get(row["id"]), default=str)
        assert "RefusedAddress" in stored and "127.0.0.1, a loopback address" in stored, stored[:500]
        assert TOKEN not in stored, "the destination URL's secret is not in the dead letter"
        assert TOKEN not in _cli(w, "list").output

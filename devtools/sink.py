"""A local HTTP receiver standing in for UFSE: records, verifies and prints each delivery.

In-process (``Sink``), as its own process (``sink_proc``, a supervised Proc), or
``python -m devtools.sink --port 8787 --secret whsec_...`` (docker-compose's ufse-sink). Only the
standard library at import (standardwebhooks when present), so the runtime image can run it.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

try:
    import standardwebhooks
except ImportError:  # the sink must run from a bare Python; a stdlib check stands in
    standardwebhooks = None

MAX_BODY = 16 * 1024 * 1024
SIGNATURE_TOLERANCE_S = 300  # Standard Webhooks' replay window


class _Server(ThreadingHTTPServer):
    """Threaded server that treats a client hanging up as normal, not as a crash."""

    daemon_threads = True
    # Pooled keep-alive clients hold handler threads open; stopping must not wait for them.
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        # A forwarder that timed out closes its socket before our answer; that is expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Sink:
    """An in-process UFSE stand-in: start(), url, set_plan(), received, wait_for(), stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, secret: str | None = None,
                 quiet: bool = True, out=None) -> None:
        self.secret = secret
        self.quiet = quiet
        self.out = out or sys.stdout
        self.received: list[dict] = []
        self._plan: collections.deque = collections.deque()
        self._plan_by_id: dict[str, collections.deque] = {}
        self._cond = threading.Condition()
        self._server = _Server((host, port), _Handler)
        self._server.sink = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the sink; deliveries may POST to any path under it."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> Sink:
        """Serve from a background thread and return self."""
        # A short poll interval keeps stop() fast; tests start and stop many sinks.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="ufse-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_plan(self, responses=(), by_webhook_id: dict | None = None) -> None:
        """Queue answers (a status, or {"status", "retry_after", "delay"}) for the next POSTs."""
        with self._cond:
            self._plan.extend(responses)
            for msg_id, codes in (by_webhook_id or {}).items():
                self._plan_by_id.setdefault(msg_id, collections.deque()).extend(codes)

    def reset(self) -> None:
        """Forget every recorded delivery and every planned answer."""
        with self._cond:
            self.received.clear()
            self._plan.clear()
            self._plan_by_id.clear()

    def wait_for(self, predicate, timeout: float = 10.0) -> list[dict]:
        """Block until predicate(received) is true and return a copy; raise TimeoutError after timeout."""
        with self._cond:
            if self._cond.wait_for(lambda: predicate(list(self.received)), timeout=timeout):
                return list(self.received)
            raise TimeoutError(f"sink: condition not met in {timeout}s; "
                               f"{len(self.received)} deliveries received")

    def snapshot(self) -> list[dict]:
        """Return a copy of the recorded deliveries."""
        with self._cond:
            return list(self.received)

    def next_answer(self, msg_id: str | None) -> dict:
        """Pop the planned answer for this delivery; a per-id plan wins over the FIFO."""
        with self._cond:
            queue = self._plan_by_id.get(msg_id) if msg_id else None
            if queue:
                entry = queue.popleft()
            elif self._plan:
                entry = self._plan.popleft()
            else:
                entry = 200
        return entry if isinstance(entry, dict) else {"status": int(entry)}

    def record(self, delivery: dict) -> None:
        """Store one delivery, wake waiters and print its line."""
        with self._cond:
            self.received.append(delivery)
            self._cond.notify_all()
        if not self.quiet:
            print(describe(delivery), file=self.out, flush=True)

    def check_signature(self, body: bytes, headers: dict) -> bool | None:
        """Verify Standard Webhooks headers; None when the sink has no secret."""
        if not self.secret:
            return None
        if standardwebhooks is not None:
            try:
                standardwebhooks.Webhook(self.secret).verify(body, headers, json_parse=False)
                return True
            except Exception:  # any malformed header is simply a bad signature here
                return False
        return _stdlib_verify(self.secret, body, headers)


class _Handler(BaseHTTPRequestHandler):
    """Routes /_plan, /_received, /_reset to control actions; any other POST is a delivery."""

    protocol_version = "HTTP/1.1"  # keep-alive, so the forwarder's connection pool is exercised
    timeout = 60  # seconds an idle keep-alive connection may hold a thread

    def do_POST(self) -> None:
        sink: Sink = self.server.sink
        body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), MAX_BODY))
        path = self.path.split("?", 1)[0]
        if path == "/_plan":
            plan = _json_or_none(body) or {}
            sink.set_plan(plan.get("responses") or [], plan.get("by_webhook_id"))
            return self._answer(200, {"ok": True})
        if path == "/_reset":
            sink.reset()
            return self._answer(200, {"ok": True})
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = sink.next_answer(headers.get("webhook-id"))
        if answer.get("delay"):
            time.sleep(float(answer["delay"]))  # lets tests provoke client timeouts
        status = int(answer["status"])
        extra = {"Retry-After": str(answer["retry_after"])} if "retry_after" in answer else {}
        sink.record({
            "received_at": time.time(), "path": self.path, "headers": headers,
            "body": _json_or_none(body), "signature_valid": sink.check_signature(body, headers),
            "status": status,
        })
        ok = 200 <= status < 300
        self._answer(status, {"ok": True} if ok else {"ok": False, "error": "planned failure"}, extra)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/_received":
            return self._answer(200, self.server.sink.snapshot())
        self._answer(404, {"ok": False, "error": "not found"})

    def _answer(self, status: int, doc, extra: dict | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:
        pass  # the one line per delivery from Sink.record replaces the access log


def describe(delivery: dict) -> str:
    """Return the one human line printed for a delivery."""
    body = delivery.get("body") if isinstance(delivery.get("body"), dict) else {}
    session = body.get("session") or {}
    counts = json.dumps(session.get("counts", {}), separators=(",", ":"), sort_keys=True)
    sig = {True: "ok", False: "BAD", None: "-"}[delivery.get("signature_valid")]
    return (f"UFSE <- {session.get('project', '?')}/{session.get('session_id', '?')} "
            f"v{session.get('version', '?')}: {len(body.get('events') or [])} events, "
            f"counts={counts} webhook-id={delivery['headers'].get('webhook-id', '-')} "
            f"status={delivery['status']} sig={sig}")


def _json_or_none(body: bytes):
    """Parse a JSON body, or None when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def _stdlib_verify(secret: str, body: bytes, headers: dict) -> bool:
    """Verify a Standard Webhooks signature without the standardwebhooks package."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
        msg_id, ts = headers["webhook-id"], int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > SIGNATURE_TOLERANCE_S:
        return False
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    return any(hmac.compare_digest(expected, s) for s in signatures)


def sink_proc(port: int, secret: str, log_dir: Path, env: dict, *, echo: bool = False, quiet: bool = False):
    """A supervised Proc (not started) running this sink on 127.0.0.1:port, verifying with ``secret``."""
    from devtools import checks
    from devtools.proc import Proc

    argv = [sys.executable, "-m", "devtools.sink", "--port", port, "--secret", secret] + (["--quiet"] if quiet else [])
    return Proc("sink", argv, env=env, cwd=log_dir, log_path=Path(log_dir) / "sink.log",
                ready=checks.http_answers(f"http://127.0.0.1:{port}/_received"), echo=echo,
                url=f"http://127.0.0.1:{port}/ufse", port=port, stop_signals=((15, 10.0),))


def main(argv: list[str] | None = None) -> int:
    """Run the sink until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--secret", help="whsec_... secret; deliveries are verified when set")
    parser.add_argument("--fail-plan", default="", help="statuses to answer first, e.g. 500,500")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per delivery")
    args = parser.parse_args(argv)
    sink = Sink(args.host, args.port, args.secret, quiet=args.quiet)
    sink.set_plan([int(code) for code in args.fail_plan.split(",") if code.strip()])
    stopping = threading.Event()
    # honcho stops children with SIGTERM; end cleanly so the port is freed at once.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    sink.start()
    print(f"UFSE sink listening on {sink.url} (signature check {'on' if args.secret else 'off'})",
          flush=True)
    stopping.wait()
    sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The parts of `make run` that are not processes: the one-stack-per-var lock and leftover sweep,
ports, the dev secret and key, the demo page server, the start-up clock, the banner."""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from devtools import ROOT, console, net
from devtools.leftovers import terminate
from devtools.proc import pid_alive

# Everything of `make run` lives here; DEVSTACK_VAR puts a second, independent stack elsewhere.
VAR = Path(os.environ.get("DEVSTACK_VAR") or ROOT / "var").resolve()
LOG = VAR / "log"
LOCK_FILE = VAR / "devstack.lock"
STATE_FILE = VAR / "devstack.json"
ENV_FILE = VAR / "observer.env"
SECRET_FILE = VAR / "ufse_secret"
KEY_FILE = VAR / "dev_api_key"
KEY_META = VAR / "dev_api_key.json"
FLOWER_AUTH_FILE = VAR / "flower_auth"
ENV_KEYS = ("REDIS_URL", "DATABASE_URL", "CLICKHOUSE_URL", "UFSE_URL", "UFSE_SECRET",
            "SESSION_IDLE_TIMEOUT")


class Shutdown(Exception):
    """Stop the dev stack, with an exit code."""

    def __init__(self, reason: str, code: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def say(msg: str) -> None:
    """A line of devstack itself."""
    console.emit("devstack", msg, "1")


def rel(path: Path) -> str:
    """``path`` as the user typed it from the checkout: relative when inside, else absolute."""
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- one stack per var/ directory

_STARTED = ""  # when this process took the lock

def claim() -> int | None:
    """Take the var/ directory's lock (held by this process until it exits, even by kill -9);
    return its file descriptor, or None when another dev stack holds it."""
    VAR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    global _STARTED
    _STARTED = time.strftime("%Y-%m-%d %H:%M:%S")
    return fd


def refusal() -> str:
    """What a second `make run` on the same var/ prints: the running one's PID and URLs."""
    pid, state = "?", {}
    for _ in range(20):  # the holder writes its PID right after taking the lock
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = str(int(LOCK_FILE.read_text().split()[0]))
            state = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
            break
        time.sleep(0.05)
    if str(state.get("pid")) != pid:
        state = {}
    api = state.get("api") or "(still starting)"
    since = state.get("started_at", "")
    return "\n".join([
        f"make run: Observer is already running from {rel(VAR)}/: devstack pid {pid}, "
        f"API {api}" + (f", demo {state['demo']}" if state.get("demo") else "")
        + (f", up since {since}" if since else "") + ".",
        "Nothing was started or stopped. Use that one, or stop it first (Ctrl-C in its terminal, "
        f"or kill {pid}); a second, separate stack needs its own data: DEVSTACK_VAR=/tmp/observer2 make run",
    ])


def sweep_leftovers(grace: float = 15.0) -> None:
    """Stop what the previous dev stack on this var/ left running (it was SIGKILLed or crashed:
    it held the lock until it died, and its state file is still here). Only the processes it
    recorded, each still the same process (PID and start time), never one found by name."""
    try:
        state = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return
    left = {}
    for p in state.get("procs", []):
        with contextlib.suppress(psutil.Error, KeyError, TypeError):
            if abs(psutil.Process(p["pid"]).create_time() - p["create_time"]) < 0.5 and pid_alive(p["pid"]):
                left[p["pid"]] = int(p["signal"])
                say(f"stopping {p['name']} (pid {p['pid']}) left running by devstack pid {state.get('pid')}")
    terminate(left, grace)
    STATE_FILE.unlink(missing_ok=True)


def record_state(procs, **urls) -> None:
    """Write var/devstack.json: this stack's PID, URLs and processes (what a second `make run`
    names, and what the next one stops if this one dies without cleaning up)."""
    entries = []
    for p in procs:
        with contextlib.suppress(psutil.Error, TypeError):
            entries.append({"name": p.name, "pid": p.pid, "signal": int(p.stop_signals[0][0]),
                            "create_time": psutil.Process(p.pid).create_time()})
    state = {"pid": os.getpid(), "started_at": _STARTED, **urls, "procs": entries}
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    tmp.replace(STATE_FILE)


def started_at() -> tuple[float, str]:
    """When the user's command started (wall clock): `make run`'s make when it started us
    (its venv and SDK steps are part of the wait), else this process."""
    me = psutil.Process()
    with contextlib.suppress(psutil.Error):
        parent = me.parent()
        if parent is not None and parent.name() == "make":
            return parent.create_time(), "make run"
    return me.create_time(), "scripts/devstack"


# ---------------------------------------------------------------- the demo page

class _DemoFiles(SimpleHTTPRequestHandler):
    """Files of var/demo/ (links to the demo page and the bundle it loads); no listings."""

    def list_directory(self, path):
        self.send_error(404)

    def log_message(self, format, *args) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.server.log.write(f"{time.strftime('%H:%M:%S')} demo | {self.address_string()} {format % args}\n")


def serve_demo(port: int, log_path: Path) -> ThreadingHTTPServer:
    """Serve the SDK demo page (at / and /demo/index.html) and sdk/dist/observer.min.js, and
    nothing else of sdk/ (404), on 127.0.0.1:port from a thread of this process."""
    root = VAR / "demo"
    shutil.rmtree(root, ignore_errors=True)
    for url_path, file in (("index.html", "demo/index.html"), ("demo/index.html", "demo/index.html"),
                           ("dist/observer.min.js", "dist/observer.min.js")):
        (root / url_path).parent.mkdir(parents=True, exist_ok=True)
        (root / url_path).symlink_to(ROOT / "sdk" / file)
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(_DemoFiles, directory=str(root)))
    server.daemon_threads = True
    server.log = open(log_path, "a", buffering=1)  # noqa: SIM115 -- closed by stop_demo
    threading.Thread(target=server.serve_forever, args=(0.1,), name="demo", daemon=True).start()
    return server


def stop_demo(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()
    server.log.close()


# ---------------------------------------------------------------- settings

def port_pref(env_name: str, default: int, what: str) -> int:
    """The port from env (fixed: fail if busy) or the default (another one if busy)."""
    raw = os.environ.get(env_name)
    if raw:
        port = int(raw)
        if net.port_in_use(port):
            raise Shutdown(f"{what}: port {port} ({env_name}) is already in use", 1)
        return port
    if net.port_in_use(default):
        port = net.free_port()
        say(f"{what}: port {default} is in use, using {port}")
        return port
    return default


def ufse_secret() -> str:
    """UFSE_SECRET from env, else the one kept in var/ufse_secret (made on first use)."""
    if os.environ.get("UFSE_SECRET"):
        return os.environ["UFSE_SECRET"]
    if SECRET_FILE.exists():
        value = SECRET_FILE.read_text().strip()
        if value.startswith("whsec_"):
            return value
    value = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    SECRET_FILE.write_text(value + "\n")
    SECRET_FILE.chmod(0o600)
    return value


def flower_auth() -> str:
    """Flower's ``user:password``: FLOWER_BASIC_AUTH from env, else the one kept in var/flower_auth
    (made on first use). Flower refuses to start without credentials (flowerconfig.py)."""
    if os.environ.get("FLOWER_BASIC_AUTH"):
        return os.environ["FLOWER_BASIC_AUTH"]
    if FLOWER_AUTH_FILE.exists():
        value = FLOWER_AUTH_FILE.read_text().strip()
        if value.startswith("observer:") and len(value) > len("observer:"):
            return value
    value = "observer:" + secrets.token_urlsafe(18)
    FLOWER_AUTH_FILE.write_text(value + "\n")
    FLOWER_AUTH_FILE.chmod(0o600)
    return value


def write_env_file(env: dict) -> None:
    """The effective settings, for `flask --app app ...` run by hand while the stack runs."""
    lines = ["# written by scripts/devstack (make run) while the stack runs; removed on exit"]
    lines += [f"{k}={env[k]}" for k in ENV_KEYS]
    ENV_FILE.write_text("\n".join(lines) + "\n")
    ENV_FILE.chmod(0o600)


def dev_key(run_keys, origin: str, pg_identity: str, pg_fresh: bool) -> str:
    """The dev API key: reused from var/ when it belongs to this database, else created."""
    meta = {}
    if KEY_META.exists():
        try:
            meta = json.loads(KEY_META.read_text())
        except ValueError:
            meta = {}
    if (KEY_FILE.exists() and not pg_fresh and meta.get("database") == pg_identity
            and meta.get("origin") == origin):
        key = KEY_FILE.read_text().strip()
        if key:
            say(f"dev key reused from {rel(KEY_FILE)}")
            return key
    rc, out = run_keys(["keys", "create", "demo", "--origin", origin])
    lines = [line.strip() for line in out if line.strip()]
    if rc != 0 or not lines:
        for line in out:
            console.emit("keys", line, "90")
        raise Shutdown(f"`flask --app app keys create demo` failed with code {rc}", 1)
    key = lines[-1]
    KEY_FILE.write_text(key + "\n")
    KEY_FILE.chmod(0o600)
    KEY_META.write_text(json.dumps({"database": pg_identity, "origin": origin,
                                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    return key


def banner(env: dict, key: str, origin: str, web_port: int, flower_port: int,
           sink_port, ready: str) -> None:
    """Print where everything is, the OBSERVER_API_KEY line and a curl to paste."""
    sdk_dir = ROOT / "sdk"
    flower_user, _, flower_password = env["FLOWER_BASIC_AUTH"].split(",")[0].partition(":")
    demo_url = f"{origin}/demo/index.html?key={key}&endpoint=http://127.0.0.1:{web_port}"
    demo_note = ("" if (sdk_dir / "dist" / "observer.min.js").exists()
                 else "  (sdk/dist/observer.min.js not built yet: cd sdk && npm run build)")
    curl = (f"curl -sS -X POST http://127.0.0.1:{web_port}/v1/events "
            f"-H \"Authorization: Bearer {key}\" -H 'Content-Type: application/json' "
            "-d '{\"events\":[{\"event_id\":\"'$(cat /proc/sys/kernel/random/uuid)'\","
            "\"type\":\"custom\",\"name\":\"hello\",\"timestamp\":'$(date +%s%3N)',"
            "\"session_id\":\"demo-session-1\",\"url\":\"" + origin + "/\","
            "\"metadata\":{\"plan\":\"pro\"}}]}'")
    lines = [
        "", "=" * 72,
        f" Observer is running: {ready}",
        f"   API      http://127.0.0.1:{web_port}   (/health, POST /v1/events)",
        f"   Operator http://127.0.0.1:{env['OPERATOR_PORT']}   (/ready, /metrics: loopback only)",
        f"   Flower   http://127.0.0.1:{flower_port}   (user {flower_user}, password {flower_password}; "
        f"kept in {rel(FLOWER_AUTH_FILE)})",
        f"   Demo     {demo_url}{demo_note}",
        f"   UFSE     {env['UFSE_URL']}" + ("  (local sink: prints each delivery)" if sink_port else ""),
        f"   Data     {rel(VAR)}/   (settings: {rel(ENV_FILE)})",
        f"   Logs     {rel(LOG)}/   (every process in full; here: warnings, errors, UFSE deliveries)",
        f"   ClickHouse {env['CLICKHOUSE_URL']}",
        f"   Sessions finalize after {env['SESSION_IDLE_TIMEOUT']}s idle",
        "", f"OBSERVER_API_KEY={key}", "",
        " Send an event (paste as is):", f"   {curl}", "",
        " Keys: " + (f"OBSERVER_ENV_FILE={ENV_FILE} " if os.environ.get("DEVSTACK_VAR") else "")
        + ".venv/bin/flask --app app keys list|create NAME|revoke KEY",
        f" Stop: Ctrl-C (or SIGTERM to pid {os.getpid()})",
        "=" * 72, "",
    ]
    with console._lock:
        print("\n".join(lines), flush=True)

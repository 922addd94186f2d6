"""The parts of `make run` that are not processes: ports, the dev secret and key, the banner."""
from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path

from toolkit import console, net

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
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
    lines = ["# written by scripts/devstack.py (make run) while the stack runs; removed on exit"]
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
            say(f"dev key reused from {KEY_FILE.relative_to(ROOT)}")
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
           sink_port, total: float) -> None:
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
        f" Observer is running (start-up {total:.1f}s)",
        f"   API      http://127.0.0.1:{web_port}   (/health, /ready, /metrics, POST /v1/events)",
        f"   Flower   http://127.0.0.1:{flower_port}   (user {flower_user}, password {flower_password}; "
        f"kept in {FLOWER_AUTH_FILE.relative_to(ROOT)})",
        f"   Demo     {demo_url}{demo_note}",
        f"   UFSE     {env['UFSE_URL']}" + ("  (local sink: prints each delivery)" if sink_port else ""),
        f"   Data     {VAR}   (settings: {ENV_FILE.relative_to(ROOT)})",
        f"   ClickHouse {env['CLICKHOUSE_URL']}",
        f"   Sessions finalize after {env['SESSION_IDLE_TIMEOUT']}s idle",
        "", f"OBSERVER_API_KEY={key}", "",
        " Send an event (paste as is):", f"   {curl}", "",
        " Keys: .venv/bin/flask --app app keys list|create NAME|revoke KEY",
        f" Stop: Ctrl-C (or SIGTERM to pid {os.getpid()})",
        "=" * 72, "",
    ]
    with console._lock:
        print("\n".join(lines), flush=True)

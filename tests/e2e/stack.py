"""Start the real processes (gunicorn, Celery workers, beat) for end-to-end tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """gunicorn + workers + beat on the given settings; stop() ends them by PID (warm)."""

    def __init__(self, env: dict[str, str], *, chdb: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="observer-e2e-"))
        self.port = free_port()
        prom = self.dir / "prom"
        prom.mkdir()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PORT": str(self.port), "HOST": "127.0.0.1",
                    "OBSERVER_ENV_FILE": str(self.dir / "empty.env"), "PROMETHEUS_MULTIPROC_DIR": str(prom),
                    "LOG_FORMAT": "json", "WEB_CONCURRENCY": "2", **env}
        (self.dir / "empty.env").write_text("")
        self.chdb = chdb
        self.procs: dict[str, subprocess.Popen] = {}
        self.argv: dict[str, list[str]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.argv[name] = argv
        log = open(self.dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def celery(self, *args: str) -> list[str]:
        return [str(BIN / "celery"), "-A", "tasks", *args]

    def flask(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a ``flask --app app`` command against this stack's settings."""
        return subprocess.run([str(BIN / "flask"), "--app", "app", *args], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, check=check, timeout=60)

    def start(self) -> "Stack":
        self.flask("migrate")
        self._spawn("web", [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "app:create_app()"])
        common = ["worker", "-E", "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
        if self.chdb:
            self._spawn("owner", self.celery(*common, "-P", "threads", "-c", "8", "-Q", "events,sessions,forward",
                                             "-n", f"owner-{self.port}@%h", "--prefetch-multiplier", "100"))
        else:
            self._spawn("events", self.celery(*common, "-Q", "events", "-c", "2", "-n", f"events-{self.port}@%h",
                                              "--prefetch-multiplier", "100"))
            self._spawn("sessions", self.celery(*common, "-Q", "sessions", "-c", "2", "-n", f"sessions-{self.port}@%h"))
            self._spawn("forward", self.celery(*common, "-Q", "forward", "-c", "2", "-n", f"forward-{self.port}@%h"))
        self._spawn("beat", self.celery("beat", "-s", str(self.dir / "beat-schedule"), "--loglevel", "INFO"))
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            self.check_alive()
            try:
                r = requests.get(f"{self.url}/ready", timeout=2)
                last = r.text
                if r.status_code == 200 and r.json()["checks"]["clickhouse"]["ok"]:
                    return
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"stack not ready: {last}\n{self.logs()}")

    def signal(self, name: str, sig: int, wait: float | None = 30) -> int | None:
        """Send ``sig`` to one process group (e.g. SIGKILL a worker mid-batch); wait for it to end."""
        p = self.procs[name]
        os.killpg(p.pid, sig)
        if wait is None:
            return None
        return p.wait(timeout=wait)

    def respawn(self, name: str) -> None:
        """Start a process again with the same command line."""
        self._spawn(name, self.argv[name])

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}\n{self.logs()}")

    def logs(self, tail: int = 40) -> str:
        out = []
        for name in self.procs:
            lines = (self.dir / f"{name}.log").read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {name} ---\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 30
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if os.environ.get("OBSERVER_KEEP_E2E_LOGS") != "1":
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

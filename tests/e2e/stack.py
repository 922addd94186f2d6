"""The real processes (gunicorn, Celery workers, beat) for end-to-end tests, on the process toolkit."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))

from toolkit.net import free_port  # noqa: E402,F401  (re-exported for the tests)
from toolkit.observer import ObserverStack  # noqa: E402


class Stack:
    """gunicorn + workers + beat (toolkit.observer) on the given settings; stop() ends them by PID."""

    def __init__(self, env: dict[str, str], *, chdb: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="observer-e2e-"))
        self.port = free_port()
        prom = self.dir / "prom"
        prom.mkdir()
        (self.dir / "empty.env").write_text("")
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PORT": str(self.port), "HOST": "127.0.0.1",
                    "OBSERVER_ENV_FILE": str(self.dir / "empty.env"), "PROMETHEUS_MULTIPROC_DIR": str(prom),
                    "LOG_FORMAT": "json", "WEB_CONCURRENCY": "2", "FORWARD_CONCURRENCY": "2", **env}
        self.chdb = chdb
        # mingle and gossip only slow a test worker's start; INFO logs are read by the tests
        self.observer = ObserverStack(self.dir, self.env, chdb=chdb, tag=f"-{self.port}", owner_prefetch=100,
                                      worker_args=("--loglevel", "INFO", "--without-mingle", "--without-gossip"))
        self.procs = self.observer.procs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flask(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a ``flask --app app`` command against this stack's settings."""
        return self.observer.flask(*args, check=check, timeout=60)

    def start(self) -> Stack:
        """Migrate, start every process and wait until /ready reports ClickHouse."""
        self.flask("migrate")
        self.observer.start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """/ready answers 200 with ClickHouse ok."""
        self.observer.wait_ready(timeout)

    def signal(self, name: str, sig: int, wait: float | None = 30) -> int | None:
        """Send ``sig`` to one process group (e.g. SIGKILL a worker mid-batch); wait for it to end."""
        p = self.procs[name]
        p.kill_group(sig)
        if wait is None:
            return None
        return p.proc.wait(timeout=wait)

    def respawn(self, name: str) -> None:
        """Start a process again with the same command line (and wait until it is ready)."""
        self.procs[name].restart()

    def check_alive(self) -> None:
        """Raise when a process has exited."""
        self.observer.check_alive()

    def logs(self, tail: int = 40) -> str:
        """The last lines of each process's log."""
        return self.observer.logs(tail)

    def stop(self) -> None:
        """Stop every process warm (then SIGKILL its group) and remove the logs unless kept."""
        self.observer.stop()
        if os.environ.get("OBSERVER_KEEP_E2E_LOGS") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

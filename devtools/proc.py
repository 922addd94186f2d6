"""One supervised child process: start, wait until ready, prefix its log lines, stop by group.

Every process Observer's scripts and tests start (servers, web, workers, beat, Flower, sink)
is a :class:`Proc`. A child runs in its own session (its own process group), gets a
parent-death signal (so even a SIGKILLed parent leaves nothing behind), and has its stdout and
stderr pumped, line by line and prefixed with its name, into a log file and optionally the
console (every line, or those an ``echo`` filter picks, e.g. ``console.important``). Fault
helpers (kill -9, SIGSTOP/SIGCONT, restart, kill of pool children only) act on the PIDs this
object started, never on processes found by name. Process facts (liveness, command line,
children) come from psutil; only the parent-death signal needs prctl. A ``pid_file`` holds
``PID STARTER_PID``: devtools.leftovers stops a server only once its starter is gone.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal as _signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

from devtools import console
from devtools.wait import WaitTimeout, until

RUNNING: set[Proc] = set()
_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _libc = None


def make_child_preexec(death_signal: int = _signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child ``death_signal`` when the forking thread dies.

    Linux delivers the parent-death signal when the *thread* that forked exits, so it is only
    set from the main thread (None otherwise: worker threads of a test may come and go).
    """
    if _libc is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def _preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # parent already gone between fork and prctl
            os.kill(os.getpid(), int(death_signal))

    return _preexec


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def cmdline(pid: int) -> str:
    """The command line of ``pid``, each argument followed by a space ('' when gone)."""
    try:
        return "".join(f"{arg} " for arg in psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def children_of(pid: int) -> list[int]:
    """PIDs of the live direct children of ``pid`` (a Celery pool's processes, for example)."""
    try:
        kids = psutil.Process(pid).children()
    except psutil.Error:
        return []
    return sorted(k.pid for k in kids if pid_alive(k.pid))


class ProcError(RuntimeError):
    """A process exited while starting or did not become ready in time."""


class Proc:
    """A child process started from a fixed argv; can be stopped, signalled and restarted."""

    def __init__(self, name: str, argv: Iterable, *, env: dict | None = None,
                 cwd: Path | None = None, log_path: Path | None = None,
                 ready: Callable[[], bool] | None = None, ready_timeout: float = 60.0,
                 stop_signals=((_signal.SIGTERM, 20.0),), death_signal: int = _signal.SIGTERM,
                 user: str | None = None, echo: bool | Callable[[str], bool] = False, url: str = "",
                 port: int | None = None, dir: Path | None = None,
                 pid_file: Path | None = None, extra: dict | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = env
        self.cwd = Path(cwd or os.getcwd())
        self.log_path = Path(log_path) if log_path else None
        self.ready_check = ready
        self.ready_timeout = ready_timeout
        self.stop_signals = tuple(stop_signals)
        self.death_signal = death_signal
        self.user = user
        self.echo = echo
        self.url = url
        self.port = port
        self.dir = Path(dir) if dir else self.cwd
        self.pid_file = pid_file
        self.extra = dict(extra or {})
        self.proc: subprocess.Popen | None = None
        self.startup_seconds = 0.0
        self.starts = 0
        self._pump: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} {self.url}>"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait: bool = True) -> Proc:
        """Spawn the process (own session, parent-death signal), then wait until ready."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, cwd=str(self.cwd), env=self.env, user=self.user,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=make_child_preexec(self.death_signal))
        self.starts += 1
        if self.pid_file is not None:
            self.pid_file.write_text(f"{self.proc.pid} {os.getpid()}\n")
        RUNNING.add(self)
        self._pump = threading.Thread(target=self._pump_lines, args=(self.proc,), daemon=True,
                                      name=f"log-{self.name}")
        self._pump.start()
        if wait:
            self.wait_ready()
        self.startup_seconds = time.monotonic() - t0
        return self

    def _pump_lines(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "a", buffering=1) if self.log_path else contextlib.nullcontext() as log:
            try:
                for raw in iter(proc.stdout.readline, b""):
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if log is not None:
                        log.write(f"{time.strftime('%H:%M:%S')} {self.name} | {line}\n")
                    if self.echo is True or (callable(self.echo) and self.echo(line)):
                        console.emit(self.name, line)
            except (OSError, ValueError):
                pass
            finally:
                proc.stdout.close()

    def wait_ready(self, timeout: float | None = None) -> float:
        """Poll the readiness check (through the client library) until true; seconds waited."""
        if self.ready_check is None:
            return 0.0
        try:
            return until(self.ready_check, f"{self.name} ready", proc=self, interval=0.05,
                         timeout=self.ready_timeout if timeout is None else timeout)
        except WaitTimeout as exc:
            raise ProcError(f"{exc}\n(log {self.log_path})") from None

    def alive(self) -> bool:
        """True while the leader runs (a SIGSTOPped process counts as alive)."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float | None = None) -> int | None:
        """Stop signals to the leader, each with its grace; then SIGKILL the whole group."""
        if self.proc is None:
            return None
        try:
            if self.alive():
                os.kill(self.proc.pid, _signal.SIGCONT)  # a stopped process cannot exit
            for sig, wait in self.stop_signals:
                if not self.alive():
                    break
                self.signal(sig)
                try:
                    self.proc.wait(grace if grace is not None else wait)
                except subprocess.TimeoutExpired:
                    console.note(f"{self.name} (pid {self.pid}) still running after "
                                 f"{_signal.Signals(sig).name}")
            self.kill_group()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                console.note(f"{self.name} (pid {self.pid}) did not die after SIGKILL")
        finally:
            RUNNING.discard(self)
            self._drop_pid_file()
        if self._pump is not None:
            self._pump.join(2)
        return self.proc.returncode

    def restart(self, wait: bool = True) -> Proc:
        """Start again with the same argv, port and data (stopping first if still running)."""
        if self.alive():
            self.stop()
        else:
            self.kill_group()
            self.proc.wait()
        return self.start(wait=wait)

    def _drop_pid_file(self) -> None:
        if self.pid_file is None:
            return
        try:
            if self.pid_file.read_text().split()[0] == str(self.pid):
                self.pid_file.unlink()
        except (OSError, IndexError):
            pass

    # ------------------------------------------------------------------ faults

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the leader only (by PID)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def kill_group(self, sig: int = _signal.SIGKILL) -> None:
        """Send ``sig`` to the process group this object started (its session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill9(self, group: bool = False) -> int:
        """kill -9 the leader (or its whole group) and reap it; returns its exit status."""
        self.kill_group() if group else self.signal(_signal.SIGKILL)
        return self.proc.wait(30)

    def sigstop(self) -> None:
        """Freeze the leader (SIGSTOP): it holds its sockets but answers nothing."""
        self.signal(_signal.SIGSTOP)

    def sigcont(self) -> None:
        """Resume a SIGSTOPped leader."""
        self.signal(_signal.SIGCONT)

    def children(self) -> list[int]:
        """PIDs of the leader's direct children (a prefork pool)."""
        return children_of(self.proc.pid) if self.alive() else []

    def kill_children(self, sig: int = _signal.SIGKILL) -> list[int]:
        """Signal the pool children only, not the leader; returns the PIDs signalled."""
        hit = []
        for pid in self.children():
            try:
                os.kill(pid, sig)
                hit.append(pid)
            except ProcessLookupError:
                pass
        return hit

    # ------------------------------------------------------------------ logs

    def log_text(self) -> str:
        """The whole prefixed log ('' when there is none)."""
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` log lines."""
        return "\n".join(self.log_text().splitlines()[-n:])

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def terminate(pids: dict[int, int], grace: float = 20.0) -> list[int]:
    """``{pid: signal}``: SIGCONT and the signal to each, one shared ``grace``, then SIGKILL (of its
    whole process group when it leads one: pool children and backends go with it); returns the
    PIDs that were still running when the grace ran out."""
    groups = {}
    for pid, sig in pids.items():
        with contextlib.suppress(ProcessLookupError):
            groups[pid] = os.getpgid(pid) == pid
            os.kill(pid, _signal.SIGCONT)
            os.kill(pid, sig)
    until(lambda: not any(pid_alive(p) for p in groups), "stopped", timeout=grace, interval=0.05, raises=False)
    late = [p for p in groups if pid_alive(p)]
    for pid, leads in groups.items():
        with contextlib.suppress(ProcessLookupError):
            if leads:
                os.killpg(pid, _signal.SIGKILL)
            elif pid_alive(pid):
                os.kill(pid, _signal.SIGKILL)
    until(lambda: not any(pid_alive(p) for p in groups), "killed", timeout=10, interval=0.05, raises=False)
    return late


def stop_all(procs: Iterable[Proc], grace: float | None = None) -> None:
    """Stop several processes at once: each gets its first stop signal, then a shared grace,
    then SIGKILL of its group (so N warm shutdowns take one grace, not N)."""
    live = [p for p in procs if p.proc is not None and p.alive()]
    wait = max((grace if grace is not None else p.stop_signals[0][1]) for p in live) if live else 0
    late = terminate({p.pid: p.stop_signals[0][0] for p in live}, wait)
    for p in live:
        if p.pid in late:
            console.note(f"{p.name} (pid {p.pid}) did not stop within {wait:.0f}s: SIGKILL")
    for p in procs:
        if p.proc is not None:
            p.stop()  # reaps, forgets


@atexit.register
def _stop_all_at_exit() -> None:  # pragma: no cover - safety net
    for p in list(RUNNING):
        with contextlib.suppress(Exception):  # one that will not stop must not keep the rest running
            p.stop(grace=5)

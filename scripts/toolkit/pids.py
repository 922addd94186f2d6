"""PIDs on Linux: parent-death signal for children, liveness, command lines, children from /proc."""
from __future__ import annotations

import ctypes
import os
import signal as _signal
import sys
import threading
from collections.abc import Callable

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
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' when gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc (a Celery pool's processes, for example)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)

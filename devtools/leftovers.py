"""Stop what a previous run left behind, and only that.

A server is found by its pid file (``PID STARTER_PID``, written by Proc; checked by command line
so a reused PID is never hit). It is *left over* when the process that started it is gone: the
leader of its session (Proc starts every child in a session of its own) is no longer a child of
the recorded starter, or, for a pid file without one (RabbitMQ's own), has been re-parented to
init. A server whose starter still runs belongs to a live run: it is not touched, and starting
another one on the same data raises :class:`InUse`, naming both.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from devtools import console
from devtools.proc import cmdline, pid_alive, terminate


class InUse(RuntimeError):
    """The server on this data belongs to a run that is still alive."""


def owner_of(pid: int, starter: int | None = None) -> int | None:
    """PID of the live process that started ``pid``'s session, or None when it is gone."""
    try:
        parent = psutil.Process(os.getsid(pid)).ppid()
    except (OSError, psutil.Error):
        return None
    if parent <= 1 or (starter is not None and parent != starter) or not pid_alive(parent):
        return None
    return parent


def stop_leftover(pid_file: Path, must_contain: str, stop_signal=signal.SIGTERM,
                  grace: float = 20.0) -> None:
    """If ``pid_file`` names a live process whose command line has ``must_contain`` and whose
    starter is gone (or is this process), stop it; if its starter still runs, raise InUse."""
    if not pid_file.exists():
        return
    try:
        fields = pid_file.read_text().split()
        pid, starter = int(fields[0]), (int(fields[1]) if len(fields) > 1 else None)
    except (OSError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return
    if pid != os.getpid() and pid_alive(pid) and must_contain in cmdline(pid):
        owner = owner_of(pid, starter)
        if owner is not None and owner != os.getpid():
            raise InUse(f"{pid_file.parent} is in use: pid {pid} ({cmdline(pid)[:100].strip()}) "
                        f"was started by pid {owner} ({cmdline(owner)[:100].strip()}), which "
                        "still runs; stop that one first")
        console.note(f"stopping leftover server from a previous run: pid {pid} ({cmdline(pid)[:120]})")
        terminate({pid: stop_signal}, grace)
    pid_file.unlink(missing_ok=True)

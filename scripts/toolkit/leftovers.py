"""Stop a server a previous run left behind (found by its pid file, checked by command line)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from toolkit import console
from toolkit.proc import cmdline, pid_alive


def stop_leftover(pid_file: Path, must_contain: str, stop_signal=signal.SIGTERM,
                  grace: float = 20.0) -> None:
    """If ``pid_file`` names a live process whose command line has ``must_contain``, stop it."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return
    if pid != os.getpid() and pid_alive(pid) and must_contain in cmdline(pid):
        console.note(f"stopping leftover server from a previous run: pid {pid} ({cmdline(pid)[:120]})")
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, stop_signal)
            deadline = time.monotonic() + grace
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                while pid_alive(pid):
                    time.sleep(0.05)
        except ProcessLookupError:
            pass
    pid_file.unlink(missing_ok=True)

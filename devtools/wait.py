"""The one wait helper: poll a check until it holds, failing with what was last seen."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class WaitTimeout(AssertionError):
    """A check did not hold in time (an AssertionError, so pytest reports it as a failure)."""


def until(check: Callable[[], Any], what: str, *, timeout: float = 60.0, interval: float = 0.2,
          proc: Any = None, raises: bool = True) -> float | None:
    """Seconds until ``check()`` returned something truthy.

    An exception from ``check`` means "not yet" (a server still starting). When ``proc`` (a
    :class:`devtools.proc.Proc` or a stack with ``check_alive``) has died, fail at once with its
    log. After ``timeout``: raise :class:`WaitTimeout` naming ``what`` and the last error, or
    return None when ``raises`` is false (a measurement that records "never").
    """
    t0 = time.monotonic()
    last = ""
    while True:
        if proc is not None:
            if hasattr(proc, "check_alive"):
                proc.check_alive()
            elif proc.proc is not None and not proc.alive():
                raise WaitTimeout(f"{proc.name} exited with code {proc.proc.returncode} while waiting for {what}:\n"
                                  f"{proc.log_tail(40)}")
        try:
            if check():
                return time.monotonic() - t0
        except Exception as exc:  # not ready yet: any error of the check means "try again"
            last = repr(exc)
        if time.monotonic() - t0 > timeout:
            if not raises:
                return None
            tail = f":\n{proc.log_tail(40)}" if proc is not None and hasattr(proc, "log_tail") else ""
            raise WaitTimeout(f"{what}: not within {timeout:.0f}s" + (f" (last: {last})" if last else "") + tail)
        time.sleep(interval)

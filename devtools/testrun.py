"""``make test``: the static checks and the SDK's tests beside pytest, then each step's time.

Lint (ruff, mypy, the SDK's eslint) and the SDK's typecheck + unit tests run in the background,
their output kept in ``var/test-logs/`` and printed only when they fail; pytest runs in the
foreground, so its progress is what the terminal shows. Every step runs to its end, the run fails
when any step failed, and the last lines say how long each step took.

    python -m devtools.testrun [pytest arguments...]
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from devtools import ROOT

LOGS = ROOT / "var" / "test-logs"
VENV = ROOT / ".venv" / "bin"
BACKGROUND = {
    "lint": [["make", "--no-print-directory", "lint"]],
    "sdk": [["npm", "run", "--silent", "typecheck"], ["npm", "test"]],
}
PYTEST = [str(VENV / "python"), "-m", "pytest", "-m", "not outage", "-n", os.environ.get("PYTEST_WORKERS", "4"),
          "--dist", "loadgroup", "--durations=15",
          "--cov=app", "--cov=tasks", "--cov-report=term", "--cov-fail-under=80"]
# `make coverage`: the processes the tests start are measured too (.coveragerc measures the test
# processes alone: measuring every gunicorn, Celery and CLI process costs about a third more CPU).
if os.environ.get("COVERAGE_SUBPROCESSES") == "1":
    PYTEST.append("--cov-config=tests/coverage-subprocesses.ini")


def _step(name: str, times: dict) -> None:
    """Run a background step's commands one after the other, output to its log; record (rc, s)."""
    t0 = time.monotonic()
    cwd = ROOT / "sdk" if name == "sdk" else ROOT
    with open(LOGS / f"{name}.log", "wb") as log:
        rc = 0
        for argv in BACKGROUND[name]:
            rc = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                check=False).returncode
            if rc:
                break
    times[name] = (rc, time.monotonic() - t0)


def main(pytest_args: list[str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    times: dict[str, tuple[int, float]] = {}
    threads = [threading.Thread(target=_step, args=(name, times)) for name in BACKGROUND]
    for t in threads:
        t.start()
    py = subprocess.run([*PYTEST, *pytest_args], cwd=ROOT, check=False)
    times["pytest"] = (py.returncode, time.monotonic() - t0)
    for t in threads:
        t.join()
    for name in BACKGROUND:
        if times[name][0] != 0:
            rc = times[name][0]
            print(f"\n===== {name} failed (exit {rc}); its output ({LOGS / name}.log):", flush=True)
            sys.stdout.write((LOGS / f"{name}.log").read_text(errors="replace"))
    print("\n===== make test: time of each step (lint and sdk ran beside pytest)")
    for name, (rc, seconds) in times.items():
        print(f"  {name:<8} {seconds:7.1f} s  {'ok' if rc == 0 else f'FAILED (exit {rc})'}")
    print(f"  {'total':<8} {time.monotonic() - t0:7.1f} s", flush=True)
    return next((rc for rc, _ in times.values() if rc != 0), 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

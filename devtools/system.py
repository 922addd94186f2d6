"""Binaries the tests take from Debian: found here, installed by `make system-deps` (as root).

One installer: the Makefile. When a binary is missing this says which package to install, so a
test that needs it fails with that message, never skips.
"""
from __future__ import annotations

import os
import shutil

from devtools.net import Probe

_HINT = "; `make test` installs it when run as root (make system-deps), else: sudo apt-get install -y {}"


def _executable(*candidates: str | None) -> str | None:
    return next((p for p in candidates if p and os.access(p, os.X_OK)), None)


def find_clickhouse_server() -> list[str] | None:
    """The argv prefix that runs a ClickHouse server, or None."""
    server = _executable("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server", shutil.which("clickhouse-server"))
    if server:
        return [server]
    multi = _executable(shutil.which("clickhouse"), "/usr/bin/clickhouse")
    return [multi, "server"] if multi else None


def clickhouse_server_available() -> Probe:
    argv = find_clickhouse_server()
    if argv:
        return Probe(True, f"clickhouse server binary: {' '.join(argv)}")
    return Probe(False, "clickhouse-server is not installed" + _HINT.format("clickhouse-server"))


def chromium_available() -> Probe:
    path = _executable("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
    return Probe(True, path) if path else Probe(False, "chromium is not installed" + _HINT.format("chromium"))


def ensure_chromium() -> str:
    """The chromium path, or an error saying what to install."""
    ok, found = chromium_available()
    if not ok:
        raise RuntimeError(f"the browser tests need {found}")
    return found


def ensure_clickhouse_server() -> list[str]:
    """The server argv prefix, or an error saying what to install."""
    argv = find_clickhouse_server()
    if argv is None:
        raise RuntimeError(clickhouse_server_available().message + " (or point CLICKHOUSE_URL at a running server)")
    return argv


def promtool_available() -> Probe:
    """promtool (Debian's ``prometheus``): checks and unit-tests monitoring/prometheus/."""
    path = _executable("/usr/bin/promtool", shutil.which("promtool"))
    return Probe(True, path) if path else Probe(False, "promtool is not installed" + _HINT.format("prometheus"))


def require_debian_package(present: bool, package: str, what: str) -> None:
    """Fail saying which package to install when ``present`` is false."""
    if not present:
        raise RuntimeError(f"{what} needs {package}, which is not installed" + _HINT.format(package))

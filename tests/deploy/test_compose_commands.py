"""Every docker-compose.yml app service's command, run with its environment, becomes ready.

No Docker engine here: each service's ``command`` runs through the image's entry point
(docker/entrypoint.sh) from this checkout, with the service's ``environment`` as Compose
interpolates it, the server hosts rewritten to servers this test run started (Redis, PostgreSQL,
ClickHouse 18.16) and container paths and ports to private ones. ``migrate`` runs first and must
exit 0 (the others wait on it in compose); then web and each worker must pass their compose
healthcheck commands, beat must tick, the UFSE sink must answer, and Flower must refuse to start
without credentials and start with them.
"""
from __future__ import annotations

import base64
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.deploy.deploykit import APP_SERVICES, ROOT, WORKERS, compose_services, local_argv, until
from toolkit import checks, procfile
from toolkit.net import free_port
from toolkit.proc import Proc, stop_all

SECRET = "whsec_" + base64.b64encode(b"compose-commands-test-secret-32b").decode()
# Compose-level variables: the defaults, except one process per worker (2 shared cores).
INTERPOLATE = {"UFSE_SECRET": SECRET, "EVENTS_CONCURRENCY": "1", "FORWARD_CONCURRENCY": "1", "WEB_CONCURRENCY": "1"}


def _base_env(tmp: Path) -> dict:
    """The machine's environment without the harness's settings, the venv's tools first."""
    from app.settings import SPEC

    env = {k: v for k, v in os.environ.items()
           if k not in SPEC and not k.startswith(("OBSERVER_", "CELERY_", "PROMETHEUS_", "FLOWER_"))}
    env["PATH"] = f"{procfile.venv_bin()}:{env.get('PATH', '/usr/bin:/bin')}"
    (tmp / "empty.env").write_text("")
    env.update(OBSERVER_ENV_FILE=str(tmp / "empty.env"), PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    return env


def _healthcheck(test: list[str], env: dict):
    assert test[0] == "CMD"
    return lambda: subprocess.run(test[1:], cwd=ROOT, env=env, capture_output=True, timeout=30).returncode == 0


def test_each_compose_service_command_starts_and_becomes_ready(tmp_path, redis_url, database_url, clickhouse_server):
    services = compose_services(INTERPOLATE)
    base = _base_env(tmp_path)
    ports = {"web": free_port(), "flower": free_port(), "ufse-sink": free_port()}
    local_urls = {"REDIS_URL": redis_url, "DATABASE_URL": database_url,
                  "CLICKHOUSE_URL": f"{clickhouse_server}/obs_compose_{uuid.uuid4().hex[:8]}",
                  "UFSE_URL": f"http://127.0.0.1:{ports['ufse-sink']}/ufse"}

    def env_of(name: str) -> dict:
        env = {**base, **{k: str(v) for k, v in (services[name].get("environment") or {}).items()}}
        for key, url in local_urls.items():
            if key in env:
                assert urlparse(env[key]).hostname in services, (key, env[key])  # a compose service's host
                env[key] = url
        if "PROMETHEUS_MULTIPROC_DIR" in env:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / f"prom-{name}")
        if "WORKER_METRICS_PORT" in env:
            env["WORKER_METRICS_PORT"] = str(free_port())
        if name == "web":
            env.update(PORT=str(ports["web"]), HOST="127.0.0.1")
        return env

    def proc(name: str, env: dict | None = None) -> Proc:
        argv = [str(ROOT / "docker/entrypoint.sh"), *local_argv(services[name]["command"], tmp_path, name, ports)]
        return Proc(name, argv, env=env or env_of(name), cwd=ROOT, log_path=tmp_path / f"{name}.log",
                    stop_signals=((15, 20.0),))

    t0 = time.monotonic()
    migrate = subprocess.run(proc("migrate").argv, cwd=ROOT, env=env_of("migrate"), capture_output=True,
                             text=True, timeout=180)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]

    no_auth = subprocess.run(proc("flower").argv, cwd=ROOT, env=env_of("flower"), capture_output=True,
                             text=True, timeout=60)
    assert no_auth.returncode != 0 and "refusing to start without credentials" in no_auth.stderr, no_auth.stderr[-2000:]

    names = ["ufse-sink", "web", *WORKERS, "beat", "flower"]
    assert set(names) | {"migrate"} == set(APP_SERVICES) | {"ufse-sink"}
    flower_env = dict(env_of("flower"), FLOWER_BASIC_AUTH="ops:s3cret-pass")
    procs = {n: proc(n, flower_env if n == "flower" else None) for n in names}
    try:
        for p in procs.values():
            p.start(wait=False)
        waited = {}
        for name in ("web", *WORKERS):
            waited[name] = until(_healthcheck(services[name]["healthcheck"]["test"], env_of(name)),
                                  f"{name} healthcheck", procs[name])
        until(checks.http_ok(f"http://127.0.0.1:{ports['web']}/ready"), "web /ready", procs["web"])
        until(checks.log_has(procs["beat"], ") is starting."), "beat", procs["beat"])
        until(checks.http_answers(f"http://127.0.0.1:{ports['ufse-sink']}/_received"), "ufse-sink", procs["ufse-sink"])
        until(checks.http_answers(f"http://127.0.0.1:{ports['flower']}/healthcheck"), "flower", procs["flower"])
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['flower']}/", timeout=5)
        assert refused.value.code == 401
        basic = base64.b64encode(b"ops:s3cret-pass").decode()
        auth = urllib.request.Request(f"http://127.0.0.1:{ports['flower']}/workers",
                                      headers={"Authorization": "Basic " + basic})
        with urllib.request.urlopen(auth, timeout=10) as r:
            assert r.status == 200
        for name in ("web", *WORKERS, "beat", "flower"):  # the entry point made each metrics dir
            assert (tmp_path / f"prom-{name}").is_dir(), name
        print(f"compose services ready in {time.monotonic() - t0:.1f}s: "
              + ", ".join(f"{n} {s:.1f}s" for n, s in waited.items()))
    finally:
        stop_all(list(procs.values()), 20)

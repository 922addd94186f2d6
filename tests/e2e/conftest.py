"""The ``make_stack`` fixture: a real running Observer (gunicorn, workers, beat) plus a UFSE sink.

These are the non-fault end-to-end tests: they shorten SESSION_IDLE_TIMEOUT (3 s),
SESSION_SWEEP_INTERVAL and EVENTS_FLUSH_INTERVAL so a test takes seconds. The fault suite
(tests/faults, scripts/faults) does not use this fixture and runs at the defaults.
"""
from __future__ import annotations

import contextlib
import uuid

import pytest

from devtools.keys import create_key
from devtools.sink import Sink
from devtools.stack import ObserverStack, new_secret

SECRET = new_secret()
_REDIS_DB = {("server", "redis"): 12, ("chdb", "redis"): 13, ("server", "amqp"): 14}


def _amqp_vhost() -> str | None:
    """A RabbitMQ vhost private to this test (None when rabbitmqctl is not usable)."""
    import shutil
    import subprocess

    ctl = shutil.which("rabbitmqctl")
    if not ctl:
        return None
    vhost = f"observer-test-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=30)
        subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True,
                       capture_output=True, timeout=30)
    except (subprocess.SubprocessError, OSError):
        return None
    return vhost


def _drop_vhost(vhost: str) -> None:
    import shutil
    import subprocess

    subprocess.run([shutil.which("rabbitmqctl") or "rabbitmqctl", "delete_vhost", vhost], capture_output=True,
                   timeout=30)


def _purge_amqp(url: str) -> None:
    from kombu import Connection

    with Connection(url) as conn:
        ch = conn.channel()
        for q in ("events", "sessions", "forward"):
            with contextlib.suppress(Exception):  # queue not declared yet: nothing to purge
                ch.queue_purge(q)


@pytest.fixture
def make_stack(request, redis_server, database_url, tmp_path):
    """Factory: make_stack(engine="server"|"chdb", broker="redis"|"amqp", **env) -> started Stack."""
    started: list = []
    vhosts: list[str] = []

    def factory(engine: str = "server", broker: str = "redis", project: str = "shop", **env_overrides):
        import redis as redis_lib

        redis_url = f"{redis_server}/{_REDIS_DB[(engine, broker)]}"
        redis_lib.Redis.from_url(redis_url).flushdb()
        if engine == "server":
            ch_url = f"{request.getfixturevalue('clickhouse_server')}/obs_e2e_{uuid.uuid4().hex[:8]}"
        else:
            ch_url = f"chdb://{tmp_path / 'chdb'}"
        broker_url = redis_url
        if broker == "amqp":
            vhost = _amqp_vhost()
            if vhost:
                vhosts.append(vhost)
                broker_url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
            else:  # shared default vhost: at least start from empty queues
                broker_url = "amqp://guest:guest@127.0.0.1:5672//"
                _purge_amqp(broker_url)
        sink = Sink(secret=SECRET).start()
        env = {
            "REDIS_URL": redis_url, "CELERY_BROKER_URL": broker_url, "DATABASE_URL": database_url,
            "CLICKHOUSE_URL": ch_url, "UFSE_URL": sink.url + "ufse", "UFSE_SECRET": SECRET,
            "SESSION_IDLE_TIMEOUT": "3", "SESSION_SWEEP_INTERVAL": "0.5", "EVENTS_FLUSH_INTERVAL": "0.2",
            "REDIS_KEY_PREFIX": f"e2e{uuid.uuid4().hex[:6]}:",
            "RATE_LIMIT_DEFAULT": "1000/second", "RATE_LIMIT_PER_IP": "1000/second",
            **{k: str(v) for k, v in env_overrides.items()},
        }
        s = ObserverStack.for_tests(env, chdb=engine == "chdb")
        key = create_key(database_url, project)
        s.api_key, s.sink, s.engine, s.ch_url, s.project = key, sink, engine, ch_url, project
        started.append(s)
        try:
            s.start_migrated()
        except Exception:
            sink.stop()
            raise
        return s

    yield factory
    for s in started:
        s.stop()
        s.sink.stop()
    for vhost in vhosts:
        _drop_vhost(vhost)

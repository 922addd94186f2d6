"""What the bench measures: its servers and Observer's processes (or a running stack).

Servers: Redis for the broker and one for session state (AOF ``appendfsync everysec``, as
production runs them; separate so the session figures are not mixed with the broker's backlog),
PostgreSQL (127.0.0.1:5432 in a fresh schema when it answers, else a private server), a private
ClickHouse 18.16 server keeping ``system.part_log`` and ``system.query_log``, and the UFSE sink
in this process. Observer's web, workers and beat come from the Procfile through the toolkit's
``ObserverStack``, at default settings except the overrides each stack prints.
Everything started here is stopped by PID (the toolkit's Proc); the schema and databases are
dropped with the servers.
"""
from __future__ import annotations

import base64
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from toolkit import net, observer  # noqa: E402
from toolkit.clickhouse_config import with_log_tables  # noqa: E402
from toolkit.proc import Proc  # noqa: E402

SHARED_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
# Settings every Observer stack of the bench changes, and why (printed with the results).
OVERRIDES = {
    "RATE_LIMIT_DEFAULT": ("1000000/second", "one load generator sends what thousands of browsers would"),
    "RATE_LIMIT_PER_IP": ("1000000/second", "all load comes from 127.0.0.1"),
    "LOG_LEVEL": ("WARNING", "an INFO line per batch and per task would be measured as the bench's log pipes"),
}
IDLE_OVERRIDE = ("SESSION_IDLE_TIMEOUT", "5", "sessions must go idle and be delivered within the run (default 1800 s)")


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Postgres:
    """The shared PostgreSQL on 5432 in a fresh schema when it answers, else a private server.

    The bench's connections carry an ``application_name`` so the shared server's backends that
    serve them (and only those) can be found for CPU accounting.
    """

    def __init__(self, dir: Path, tag: str) -> None:
        from toolkit.net import postgres_available

        self.proc: Proc | None = None
        self.schema = ""
        self.app_name = f"observer-bench-{tag}"
        if postgres_available(SHARED_PG):
            import psycopg2

            try:
                self.schema = f"obs_bench_{tag}"
                with psycopg2.connect(SHARED_PG, connect_timeout=3) as conn:
                    conn.autocommit = True
                    conn.cursor().execute(f'CREATE SCHEMA "{self.schema}"')
                self.url = f"{SHARED_PG}?application_name={self.app_name}&options=-csearch_path%3D{self.schema}"
                self.where = f"shared 127.0.0.1:5432, schema {self.schema}"
                return
            except psycopg2.Error as exc:
                log(f"PostgreSQL on 5432 answers but cannot be used ({exc}); starting a private one")
                self.schema = ""
        from toolkit.postgres_server import start_postgres

        self.proc = start_postgres(dir / "postgres")
        self.url = self.proc.url
        self.where = f"private server, pid {self.proc.pid}"

    def backends(self) -> list[int]:
        """PIDs of the shared server's backends serving this bench's connections."""
        import psycopg2

        with psycopg2.connect(SHARED_PG, connect_timeout=2) as conn:
            cur = conn.cursor()
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.app_name,))
            return [r[0] for r in cur.fetchall()]

    def cpu_source(self):
        """What the CPU meter reads: the private server's tree, or the shared one's backends."""
        return self.proc.pid if self.proc else self.backends

    def close(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None
        if self.schema:
            import psycopg2

            try:
                with psycopg2.connect(SHARED_PG, connect_timeout=3) as conn:
                    conn.autocommit = True
                    cur = conn.cursor()
                    # our own idle pooled connections would hold locks on the schema's tables
                    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                (self.app_name,))
                    cur.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            except psycopg2.Error as exc:
                log(f"could not drop schema {self.schema}: {exc}")
            self.schema = ""


class Servers:
    """The servers of one bench invocation (started in __init__, stopped by ``stop()``)."""

    def __init__(self, dir: Path, tag: str) -> None:
        from toolkit.clickhouse_server import start_clickhouse_server
        from toolkit.redis_server import start_redis
        from ufse_sink import Sink

        self.dir, self.tag = dir, tag
        self.procs: list[Proc] = []
        self.pg = self.sink = None
        try:
            self.broker = self._keep(start_redis(dir / "broker", appendfsync="everysec", name="broker-redis"))
            self.sessions = self._keep(start_redis(dir / "sessions", appendfsync="everysec", name="sessions-redis"))
            self.baseline_redis = self._keep(start_redis(dir / "baseline", appendfsync="everysec",
                                                         name="baseline-redis"))
            self.pg = Postgres(dir, tag)
            source = with_log_tables(Path("/etc/clickhouse-server"), dir / "clickhouse-config")
            self.ch = self._keep(start_clickhouse_server(dir / "clickhouse", config_source=source))
            self.sink = Sink(secret=None).start()  # signatures are the e2e tests' business, not timed here
        except BaseException:
            self.stop()
            raise

    def _keep(self, p: Proc) -> Proc:
        self.procs.append(p)
        return p

    def clickhouse_url(self, db: str) -> str:
        return self.ch.url.rsplit("/", 1)[0] + f"/{db}"

    def stop(self) -> None:
        if self.sink:
            self.sink.stop()
            self.sink = None
        if self.pg:
            self.pg.close()
        for p in reversed(self.procs):
            p.stop()
        self.procs = []


@dataclass
class Stack:
    """One Observer stack: its settings, processes and the API key the load uses."""

    name: str
    url: str
    port: int
    key: str
    project: str
    clickhouse_url: str
    broker_url: str = ""
    sessions_url: str = ""
    prefix: str = "obs:"
    overrides: dict = field(default_factory=dict)  # name -> (value, why)
    idle_timeout: float = 1800.0
    observer: object | None = None  # toolkit ObserverStack when we started it
    queues: tuple = ()

    def procs(self) -> dict:
        return self.observer.procs if self.observer else {}

    def stop(self) -> None:
        if self.observer:
            self.observer.stop()
            self.observer = None


def create_key(database_url: str, project: str) -> str:
    """A fresh key with a per-key limit high enough for the bench (in-process, like the fault rig)."""
    from app.keys.store import KeyStore
    from app.storage import postgres

    try:
        return KeyStore(database_url).create(project, rate_limit="1000000/second")[1]
    finally:
        close = getattr(postgres, "close_pool", None)
        if close:
            close(database_url)


def start_stack(servers: Servers, name: str, *, db: str, prefix: str, extra: dict | None = None,
                procfile_env: dict | None = None) -> Stack:
    """Migrate, create a key, start web + every Procfile worker + beat, wait until ready."""
    d = servers.dir / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "empty.env").write_text("")
    (d / "prom").mkdir(exist_ok=True)
    port = net.free_port()
    overrides = dict(OVERRIDES, **(extra or {}))
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    ch_url = servers.clickhouse_url(db)
    env = observer.clean_environ(inherit_settings=False)
    env.update({
        "REDIS_URL": servers.broker.url, "SESSIONS_REDIS_URL": servers.sessions.url,
        "DATABASE_URL": servers.pg.url, "CLICKHOUSE_URL": ch_url,
        "UFSE_URL": servers.sink.url + "ufse", "UFSE_SECRET": secret, "REDIS_KEY_PREFIX": prefix,
        "PORT": str(port), "HOST": "127.0.0.1", "OBSERVER_ENV_FILE": str(d / "empty.env"),
        "PROMETHEUS_MULTIPROC_DIR": str(d / "prom"),
    })
    env.update({k: v for k, (v, _why) in overrides.items()})
    env.update(procfile_env or {})
    stack = observer.ObserverStack(d / "logs", env, tag=f"-bench{name}{uuid.uuid4().hex[:4]}",
                                   worker_args=("--without-mingle", "--without-gossip"))
    stack.flask("migrate")
    project = "bench"
    key = create_key(servers.pg.url, project)
    try:
        stack.add_workers()
        stack.add_beat()
        stack.add_web()
        for p in stack.procs.values():  # a loaded machine (or 18.16 merging) answers slowly
            p.ready_timeout = max(p.ready_timeout or 0, 240)
        stack.start()
        stack.wait_ready(240)
    except BaseException:
        stack.stop()
        raise
    queues = []
    for argv in stack.worker_commands().values():
        if "-Q" in argv:
            queues += argv[argv.index("-Q") + 1].split(",")
    idle = float(overrides.get("SESSION_IDLE_TIMEOUT", ("1800", ""))[0])
    return Stack(name=name, url=stack.url, port=port, key=key, project=project, clickhouse_url=ch_url,
                 broker_url=servers.broker.url, sessions_url=servers.sessions.url, prefix=prefix,
                 overrides=overrides, idle_timeout=idle, observer=stack, queues=tuple(dict.fromkeys(queues)))


def start_stack_or_none(servers: Servers, name: str, *, why: str, **kw) -> Stack | None:
    """start_stack, or None (said on stderr) when the stack does not come up."""
    log(why)
    try:
        return start_stack(servers, name, **kw)
    except Exception as exc:
        log(f"stack {name} did not start: {type(exc).__name__}: {str(exc)[:300]}")
        return None

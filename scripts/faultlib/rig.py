"""One case's world: its own broker (a Redis with AOF, or with ``broker="amqp"`` a private
RabbitMQ node beside a Redis for sessions and limits), a database on the shared PostgreSQL and
ClickHouse servers, an in-process UFSE sink, and the Observer processes at their default settings."""
from __future__ import annotations

import base64
import contextlib
import secrets
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from faultlib.brokers import AmqpBroker, RedisBroker  # noqa: E402
from toolkit import net, observer  # noqa: E402
from toolkit.clickhouse_server import start_clickhouse_server  # noqa: E402
from toolkit.postgres_server import create_database, start_postgres  # noqa: E402
from toolkit.rabbitmq_server import start_rabbitmq  # noqa: E402
from toolkit.redis_server import start_redis  # noqa: E402
from ufse_sink import Sink  # noqa: E402

BROKERS = ("redis", "amqp")

# The only settings a case may change; everything else runs at its default.
ALLOWED_OVERRIDES = ("SESSION_IDLE_TIMEOUT", "RETRY_TIME_SCALE")


def _create_key(database_url: str, project: str) -> str:
    """A new API key (in-process: one CLI start less per case; `keys create` runs the same code)."""
    from app.keys.store import KeyStore
    from app.storage import postgres

    try:
        return KeyStore(database_url).create(project)[1]
    finally:
        # The harness must not hold connections across a PostgreSQL stop; only this case's
        # pool: another case may be creating its key in another thread right now.
        postgres.close_pool(database_url)


class Servers:
    """The PostgreSQL and ClickHouse 18.16 servers of one suite run (stoppable, restartable)."""

    def __init__(self, dir: Path | None = None) -> None:
        self.dir = Path(dir or tempfile.mkdtemp(prefix="observer-faults-"))
        self.pg = start_postgres(self.dir / "postgres")
        self.ch = start_clickhouse_server(self.dir / "clickhouse")

    def ensure_up(self) -> None:
        """Restart a server a previous case left stopped."""
        for svc in (self.pg, self.ch):
            if not svc.alive():
                svc.restart()

    def stop(self) -> None:
        """Stop both servers."""
        self.ch.stop()
        self.pg.stop()


class Rig:
    """Everything one case runs on; ``start()`` then ``stop()``."""

    def __init__(self, servers: Servers, case: int, overrides: dict, *, chdb: bool = False,
                 sessions_redis: bool = False, maxmemory: str | None = None, broker: str = "redis") -> None:
        bad = set(overrides) - set(ALLOWED_OVERRIDES)
        if bad:
            raise ValueError(f"case {case}: only {ALLOWED_OVERRIDES} may be overridden, not {sorted(bad)}")
        if broker not in BROKERS:
            raise ValueError(f"broker must be one of {BROKERS}, not {broker!r}")
        self.servers, self.case, self.chdb, self.broker_kind = servers, case, chdb, broker
        self.overrides = {k: str(v) for k, v in overrides.items()}
        self.tag = f"c{case}{'chdb' if chdb else ''}{'mq' if broker == 'amqp' else ''}-{uuid.uuid4().hex[:6]}"
        self.dir = servers.dir / self.tag
        self.dir.mkdir(parents=True)
        self.want_sessions_redis, self.maxmemory = sessions_redis, maxmemory
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.sink_port = net.free_port()
        self.sinks: list[Sink] = []
        self.broker = self.redis = self.sessions_redis = self.stack = None
        self.key = ""
        self.ch_db = f"faults_{self.tag.replace('-', '_')}"

    @property
    def sink(self) -> Sink:
        return self.sinks[-1]

    @property
    def ch_url(self) -> str:
        return f"{self.servers.ch.url.rsplit('/', 1)[0]}/{self.ch_db}"

    def start(self) -> Rig:
        """Start the broker (and Redis), the sink and the stack (migrated, with an API key), all ready."""
        self.servers.ensure_up()
        if self.broker_kind == "amqp":
            # Sessions, limits and locks stay on a Redis; only Celery's messages move.
            self.redis = start_redis(self.dir / "redis", appendfsync="always", name="redis")
            self.broker = AmqpBroker(start_rabbitmq(self.dir / "rabbitmq", name=self.tag.split("-")[0]))
        else:
            self.redis = start_redis(self.dir / "broker", appendfsync="always", maxmemory=self.maxmemory,
                                     name="broker")
            self.broker = RedisBroker(self.redis)
        if self.want_sessions_redis:
            self.sessions_redis = start_redis(self.dir / "sessions-redis", appendfsync="always",
                                              name="sessions-redis")
        create_database(self.servers.pg.extra["admin_url"], self.ch_db)
        self.database_url = self.servers.pg.url.rsplit("/", 1)[0] + f"/{self.ch_db}"
        self.sink_up()
        env = observer.clean_environ(inherit_settings=False)
        (self.dir / "empty.env").write_text("")
        (self.dir / "prom").mkdir()
        port = net.free_port()
        env.update({
            "REDIS_URL": self.redis.url, "DATABASE_URL": self.database_url,
            "CLICKHOUSE_URL": f"chdb://{self.dir / 'chdb'}" if self.chdb else self.ch_url,
            "UFSE_URL": f"http://127.0.0.1:{self.sink_port}/ufse", "UFSE_SECRET": self.secret,
            "PORT": str(port), "HOST": "127.0.0.1", "OBSERVER_ENV_FILE": str(self.dir / "empty.env"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.dir / "prom"), **self.overrides,
        })
        if self.broker_kind == "amqp":
            env["CELERY_BROKER_URL"] = self.broker.url
        if self.sessions_redis:
            env["SESSIONS_REDIS_URL"] = self.sessions_redis.url
        self.stack = observer.ObserverStack(self.dir / "logs", env, chdb=self.chdb, tag=f"-{self.tag}")
        if self.broker_kind == "amqp":
            self._confirming_ping()
        step = {"OBSERVER_SKIP_CLICKHOUSE_MIGRATE": "1"} if self.chdb else None
        self.stack.flask("migrate", env=step)
        self.key = _create_key(self.database_url, f"faults{self.case}")
        self.stack.start()
        self.stack.wait_ready(120)
        return self

    def _confirming_ping(self) -> None:
        """The harness's readiness pings publish with confirms too, so the suite can check that
        every publish the node received came on a confirm-mode channel."""
        from celery import Celery

        app = Celery("faults-ping", broker=self.broker.url)
        app.conf.broker_connection_timeout = 2
        app.conf.broker_transport_options = {"confirm_publish": True}
        self.stack.ping._app = app

    def sink_up(self) -> Sink:
        """(Re)start the sink on the case's fixed port (connection refused while it is down)."""
        self.sinks.append(Sink(port=self.sink_port, secret=self.secret).start())
        return self.sink

    def sink_down(self) -> None:
        """Stop the sink: UFSE refuses connections."""
        self.sink.stop()

    def deliveries(self) -> list[dict]:
        """Every delivery every sink instance of this case recorded."""
        return [d for s in self.sinks for d in s.snapshot()]

    def workers(self) -> list:
        """The Celery worker Procs (not web, beat, Flower)."""
        return [p for n, p in self.stack.procs.items() if n not in ("web", "flower") and "beat" not in n]

    def redis_client(self):
        """A client of the case's Redis (sessions and limits; with the Redis broker also the broker)."""
        import redis

        return redis.Redis.from_url(self.redis.url, socket_timeout=2)

    def override_text(self) -> str:
        """``NAME=value, ...`` or ``none``."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "none"

    def stop(self) -> None:
        """Stop the stack, sinks, the case's broker and Redis servers (shared servers stay up)."""
        if self.stack:
            self.stack.stop()
        for s in self.sinks:
            with contextlib.suppress(OSError):
                s.stop()
        for r in (self.sessions_redis, self.broker, None if self.broker_kind == "redis" else self.redis):
            if r is not None:
                r.stop()

"""What the bench measures: its servers and Observer's stacks, or a running stack (``--target``).

Servers from ``devtools.servers`` (Redis for the broker, for session state and for the baseline,
AOF everysec; PostgreSQL; ClickHouse keeping ``system.part_log``), the UFSE sink in this process,
and web + every Procfile worker + beat from ``devtools.stack.ObserverStack`` with ``OVERRIDES``.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from devtools.keys import create_key
from devtools.servers import start_clickhouse_server, start_postgres, start_redis
from devtools.servers.clickhouse_config import with_log_tables
from devtools.sink import Sink
from devtools.stack import ObserverStack, new_secret, stack_env

QUEUES = ("events", "sessions", "forward", "maintenance")  # the broker lists a quiet wait looks at
# Settings every Observer stack of the bench changes, and why (printed with the results).
OVERRIDES = {
    "RATE_LIMIT_DEFAULT": ("1000000/second", "one load generator sends what thousands of browsers would"),
    "RATE_LIMIT_PER_IP": ("1000000/second", "all load comes from 127.0.0.1"),
    "EVENT_RATE_LIMIT": ("100000000/second", "one load generator sends what thousands of browsers would"),
    "EVENT_RATE_LIMIT_PER_IP": ("100000000/second", "all load comes from 127.0.0.1"),
    "SESSION_RATE_LIMIT": ("1000000/second", "one load generator starts the sessions of thousands of browsers"),
    "SESSION_RATE_LIMIT_PER_IP": ("1000000/second", "all load comes from 127.0.0.1"),
    "LOG_LEVEL": ("WARNING", "an INFO line per batch and per task would be measured as the bench's log pipes"),
}
IDLE_WHY = "sessions must go idle and be delivered within the run (default 1800 s)"


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Servers:
    """The servers of one bench invocation (started in __init__, stopped by ``stop()``)."""

    def __init__(self, dir: Path) -> None:
        self.dir, self.procs, self.sink = dir, [], None
        try:
            self.broker, self.sessions, self.baseline_redis = (
                self._keep(start_redis(dir / n, appendfsync="everysec", name=f"{n}-redis"))
                for n in ("broker", "sessions", "baseline"))
            self.pg = self._keep(start_postgres(dir / "postgres"))
            config = with_log_tables(Path("/etc/clickhouse-server"), dir / "clickhouse-config")
            self.ch = self._keep(start_clickhouse_server(dir / "clickhouse", config_source=config))
            self.sink = Sink().start()  # unsigned: signatures are the e2e tests' business, not timed here
        except BaseException:
            self.stop()
            raise

    def _keep(self, p):
        self.procs.append(p)
        return p

    def stop(self) -> None:
        if self.sink:
            self.sink.stop()
            self.sink = None
        for p in reversed(self.procs):
            p.stop()
        self.procs = []


@dataclass
class Stack:
    """One Observer stack as the phases see it: URLs, the key the load uses, its settings."""

    url: str
    key: str
    clickhouse_url: str
    broker_url: str = ""
    sessions_url: str = ""
    prefix: str = "obs:"
    idle_timeout: float = 1800.0
    overrides: dict = field(default_factory=dict)  # name -> (value, why)
    observer: ObserverStack | None = None  # when the bench started it
    project: str = "bench"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    def procs(self) -> dict:
        return self.observer.procs if self.observer else {}

    def stop(self) -> None:
        if self.observer:
            self.observer.stop()
            self.observer = None


def start_stack(servers: Servers, name: str, db: str, prefix: str, extra: dict | None = None) -> Stack:
    """Migrate, create a key, start web + every Procfile worker + beat and wait until ready."""
    overrides = dict(OVERRIDES, **(extra or {}))
    ch_url = servers.ch.url.rsplit("/", 1)[0] + f"/{db}"
    env = stack_env(servers.dir / name, REDIS_URL=servers.broker.url, SESSIONS_REDIS_URL=servers.sessions.url,
                    DATABASE_URL=servers.pg.url, CLICKHOUSE_URL=ch_url, UFSE_URL=servers.sink.url + "ufse",
                    REDIS_KEY_PREFIX=prefix, UFSE_SECRET=new_secret(), **{k: v for k, (v, _why) in overrides.items()})
    obs = ObserverStack(servers.dir / name / "logs", env, tag=f"-bench{name}{uuid.uuid4().hex[:4]}",
                        worker_args=("--without-mingle", "--without-gossip"))
    try:
        obs.flask("migrate")
        key = create_key(servers.pg.url, "bench", rate_limit="1000000/second")
        obs.add_workers()
        obs.add_beat()
        obs.add_web()
        for p in obs.procs.values():  # a loaded machine (or 18.16 merging) answers slowly
            p.ready_timeout = 240
        obs.start()
        obs.wait_ready(240)
    except BaseException:
        obs.stop()
        raise
    return Stack(url=obs.url, key=key, clickhouse_url=ch_url, broker_url=servers.broker.url,
                 sessions_url=servers.sessions.url, prefix=prefix, overrides=overrides, observer=obs,
                 idle_timeout=float(env.get("SESSION_IDLE_TIMEOUT", 1800)))


def target_stack(url: str, clickhouse_url: str, database_url: str, **kw) -> Stack:
    """A running Observer (``--target``): a fresh key through its PostgreSQL."""
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("--target: the bench drives load on loopback only (127.0.0.1)")
    key = create_key(database_url, "bench", rate_limit="1000000/second")
    return Stack(url=url.rstrip("/"), key=key, clickhouse_url=clickhouse_url, **kw)


class RemoteSink:
    """A sink process's deliveries (``GET /_received``), in place of the in-process Sink."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/_received"

    def snapshot(self) -> list[dict]:
        with urllib.request.urlopen(self.url, timeout=10) as r:  # noqa: S310 -- the sink's http URL, given by the operator
            return json.loads(r.read())

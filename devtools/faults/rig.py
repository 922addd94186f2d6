"""One case's world: its own broker (a Redis with AOF, or with ``broker="amqp"`` a private
RabbitMQ node beside a Redis for sessions and limits), a database on the suite's PostgreSQL and
ClickHouse servers, an in-process UFSE sink, and the Observer processes at their default
settings; then what reconciliation reads back (stored ids, deliveries, dead letters, restores)."""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import redis

from app.names import Queue
from devtools import net
from devtools.keys import create_key
from devtools.servers.clickhouse import start_clickhouse_server
from devtools.servers.postgres import create_database, start_postgres
from devtools.servers.rabbitmq import amqp_connection, start_rabbitmq
from devtools.servers.redis import start_redis
from devtools.sink import Sink
from devtools.stack import ObserverStack, new_secret, stack_env

QUEUES = tuple(q.value for q in Queue)
# The only settings a case may change, and why; everything else runs at its default.
WHY = {"SESSION_IDLE_TIMEOUT": "sessions finalize within the run instead of after 30 min",
       "RETRY_TIME_SCALE": "compresses 'an hour' of outage and the retry schedule by this factor"}
RESTORE_MSG = "broker restored unacked messages"


class Servers:
    """The PostgreSQL and ClickHouse 18.16 servers of one suite run (cases stop and restart them)."""

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        self.pg = start_postgres(self.dir / "postgres")
        self.ch = start_clickhouse_server(self.dir / "clickhouse")

    def ensure_up(self) -> None:
        """Restart a server a previous case left stopped."""
        for svc in (self.pg, self.ch):
            if not svc.alive():
                svc.restart()

    def stop(self) -> None:
        self.ch.stop()
        self.pg.stop()


class RedisBroker:
    """The case's Redis as Celery's broker (kombu's Redis transport)."""

    kind, what = "redis", "broker Redis"

    def __init__(self, proc) -> None:
        self.proc, self.url = proc, proc.url

    def _r(self):
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def held(self) -> int:
        """Messages delivered to workers and not acked yet (kombu's ``unacked`` hash)."""
        return int(self._r().hlen("unacked"))

    def depths(self) -> dict:
        r = self._r()
        return {**{q: int(r.llen(q)) for q in QUEUES}, "unacked": int(r.hlen("unacked"))}

    def drained(self) -> bool:
        d = self.depths()
        return not (d["events"] or d["unacked"])

    def limit_memory(self, headroom: int) -> str:
        r = self._r()
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", str(used + headroom))
        return f"broker maxmemory set to {(used + headroom) // 1024} KiB ({used // 1024} KiB used), noeviction"

    def limit_checks(self, res) -> None:
        evicted = int(self._r().info("stats")["evicted_keys"])
        res.check("nothing evicted", evicted == 0, f"evicted_keys={evicted}")

    def below_limit(self) -> bool:
        """used_memory under the API's BROKER_MEMORY_LIMIT (0.9) of maxmemory."""
        info = self._r().info("memory")
        return int(info["used_memory"]) < 0.9 * int(info.get("maxmemory") or 1 << 62)

    def live_restores(self, rig) -> int:
        """Messages kombu gave back after the visibility timeout (sum of the workers' log lines)."""
        total = 0
        for p in rig.stack.procs.values():
            for line in p.log_text().splitlines():
                if RESTORE_MSG in line:
                    try:
                        total += int(json.loads(line.split(" | ", 1)[1]).get("count", 0))
                    except (ValueError, IndexError):
                        total += 1
        return total


class AmqpBroker:
    """The case's private RabbitMQ node as Celery's broker (py-amqp, quorum queues)."""

    kind, what = "amqp", "RabbitMQ"

    def __init__(self, proc) -> None:
        self.proc, self.url = proc, proc.url

    def _ready(self) -> dict:
        return amqp_ready(self.proc.port)

    def held(self) -> int:
        """Messages delivered and not acked (rabbitmqctl; quorum queue stats lag up to 5 s)."""
        return sum(int(q.get("messages_unacknowledged") or 0) for q in self.proc.queues().values())

    def depths(self) -> dict:
        return {**self._ready(), "unacked": self.held()}

    def drained(self) -> bool:
        return not self._ready()["events"] and not self.held()

    def limit_memory(self, headroom: int) -> str:
        used = self.proc.memory()
        self.proc.set_memory_limit(used + headroom)
        return (f"RabbitMQ vm_memory_high_watermark set to {(used + headroom) // 1024} KiB absolute "
                f"({used // 1024} KiB used)")

    def limit_checks(self, res) -> None:
        """The alarm was raised (publishers blocked); RabbitMQ never evicts (reconciliation shows it)."""
        raised = "memory resource limit alarm set" in self.proc.log_text()
        res.check("RabbitMQ raised its memory alarm (publishers blocked)", raised,
                  "alarm in the node's log" if raised else "no alarm logged")

    def below_limit(self) -> bool:
        return self.proc.alarms() == "[]"

    def live_restores(self, rig) -> int:
        """Channels closed by ``consumer_timeout`` (default 30 min) taking a live consumer's messages."""
        return len(re.findall(r"has timed out waiting for delivery acknowledgement", self.proc.log_text()))

    def checks(self, rig, res) -> None:
        """No consumer_timeout take-back; durable quorum queues; every publish in confirm mode; no
        ingest journal (RabbitMQ acks for real)."""
        res.check("no message a live worker held was taken back (consumer_timeout)", res.restores == 0,
                  f"{res.restores} consumer ack timeouts in the node's log")
        facts = {n: (q["type"], q["durable"]) for n, q in self.proc.queues().items()}
        ours = {q: facts.get(q) for q in QUEUES}
        res.check("durable quorum queues", all(f and f[0] == "quorum" and f[1] for f in ours.values()),
                  ", ".join(f"{q}: {f[0]}, durable={f[1]}" if f else f"{q}: missing" for q, f in ours.items()))
        delayed = [q for q, f in facts.items() if q.startswith("celery_delayed_") and f[0] == "quorum"]
        res.notes.append(f"Celery's native delayed delivery (countdowns): {len(delayed)} celery_delayed_* queues")
        c = self.proc.counters()
        res.check("every publish on a channel in confirm mode (publisher confirms)",
                  c["published"] > 0 and c["published_in_confirm_mode"] == c["published"],
                  f"{c['published_in_confirm_mode']} of {c['published']} publishes since the node's last start; "
                  f"{c['confirmed']} confirmed")
        res.notes.append(f"RabbitMQ redelivered {c['redelivered']} messages since its last start (a closed "
                         "connection's unacked messages, requeues by the events worker's outage verdicts)")
        journal = list(rig.redis_client().scan_iter(match="*journal*", count=1000))
        res.check("no ingest journal (RabbitMQ acks for real)", not journal, f"{len(journal)} journal keys in Redis")


def amqp_ready(port: int, vhost: str = "/") -> dict:
    """Exact counts of messages ready per queue (a passive queue.declare; 0 for a missing queue)."""
    import amqp

    with amqp_connection(port, vhost) as conn:
        ch, out = conn.channel(), {}
        for q in QUEUES:
            try:
                out[q] = int(ch.queue_declare(q, passive=True).message_count)
            except amqp.exceptions.NotFound:
                out[q], ch = 0, conn.channel()
        return out


def forwarded_ids(deliveries: list[dict]) -> set:
    """Event ids inside every delivery UFSE answered 200."""
    return {e["event_id"] for d in deliveries if d["status"] == 200 and isinstance(d.get("body"), dict)
            for e in d["body"].get("events") or []}


def repeats(deliveries: list[dict]) -> tuple[int, int]:
    """(extra 200 deliveries of an already delivered webhook-id, ids delivered with differing content)."""
    seen: dict[str, list] = defaultdict(list)
    for d in deliveries:
        if d["status"] == 200 and isinstance(d.get("body"), dict):
            seen[d["headers"].get("webhook-id")].append(tuple(sorted(e["event_id"] for e in d["body"]["events"])))
    return sum(len(v) - 1 for v in seen.values()), sum(1 for v in seen.values() if len(set(v)) > 1)


class Rig:
    """Everything one case runs on; ``start()`` then ``stop()``."""

    def __init__(self, servers: Servers, case: int, overrides: dict, dir: Path, *, chdb: bool = False,
                 sessions_redis: bool = False, maxmemory: str | None = None, broker: str = "redis") -> None:
        if set(overrides) - set(WHY) or broker not in ("redis", "amqp"):
            raise ValueError(f"case {case}: only {sorted(WHY)} may be overridden; broker redis or amqp")
        self.servers, self.case, self.chdb, self.broker_kind = servers, case, chdb, broker
        self.overrides = {k: str(v) for k, v in overrides.items()}
        self.tag = f"c{case}{'chdb' if chdb else ''}{'mq' if broker == 'amqp' else ''}-{uuid.uuid4().hex[:6]}"
        self.dir = Path(dir)
        self.want_sessions_redis, self.maxmemory = sessions_redis, maxmemory
        self.secret = new_secret()
        self.sink_port = net.free_port()
        self.sinks: list[Sink] = []
        self.broker = self.redis = self.sessions_redis = self.stack = None
        self.key = ""
        self.db = f"faults_{self.tag.replace('-', '_')}"
        self.ch_url = f"{servers.ch.url.rsplit('/', 1)[0]}/{self.db}"
        self.database_url = servers.pg.url.rsplit("/", 1)[0] + f"/{self.db}"

    @property
    def sink(self) -> Sink:
        return self.sinks[-1]

    def start(self) -> Rig:
        """Start the broker (and Redis), the sink and the stack (migrated, with an API key), all ready."""
        self.servers.ensure_up()
        if self.broker_kind == "amqp":  # sessions, limits and locks stay on a Redis; only Celery's messages move
            self.redis = start_redis(self.dir / "redis", appendfsync="always", name="redis")
            self.broker = AmqpBroker(start_rabbitmq(self.dir / "rabbitmq", name=self.tag.split("-")[0]))
        else:
            self.redis = start_redis(self.dir / "broker", appendfsync="always", maxmemory=self.maxmemory,
                                     name="broker")
            self.broker = RedisBroker(self.redis)
        if self.want_sessions_redis:
            self.sessions_redis = start_redis(self.dir / "sessions-redis", appendfsync="always", name="sessions-redis")
        create_database(self.servers.pg.extra["admin_url"], self.db)
        self.sink_up()
        amqp = self.broker_kind == "amqp"
        env = stack_env(self.dir, REDIS_URL=self.redis.url, DATABASE_URL=self.database_url,
                        CLICKHOUSE_URL=f"chdb://{self.dir / 'chdb'}" if self.chdb else self.ch_url,
                        UFSE_URL=f"http://127.0.0.1:{self.sink_port}/ufse", UFSE_SECRET=self.secret,
                        CELERY_BROKER_URL=self.broker.url if amqp else None,
                        SESSIONS_REDIS_URL=self.sessions_redis and self.sessions_redis.url, **self.overrides)
        self.stack = ObserverStack(self.dir / "logs", env, chdb=self.chdb, tag=f"-{self.tag}")
        if amqp:
            # The harness's readiness pings publish with confirms too, so the suite can check
            # that every publish the node received came on a confirm-mode channel.
            from celery import Celery

            app = Celery("faults-ping", broker=self.broker.url)
            app.conf.broker_connection_timeout = 2
            app.conf.broker_transport_options = {"confirm_publish": True}
            self.stack.ping._app = app
        self.stack.flask("migrate", env={"OBSERVER_SKIP_CLICKHOUSE_MIGRATE": "1"} if self.chdb else None)
        self.key = create_key(self.database_url, f"faults{self.case}")
        self.stack.start()
        self.stack.wait_ready(120)
        return self

    def sink_up(self) -> Sink:
        """(Re)start the sink on the case's fixed port (connection refused while it is down)."""
        self.sinks.append(Sink(port=self.sink_port, secret=self.secret).start())
        return self.sink

    def deliveries(self) -> list[dict]:
        """Every delivery every sink instance of this case recorded."""
        return [d for s in self.sinks for d in s.snapshot()]

    def forwarded(self) -> set:
        return forwarded_ids(self.deliveries())

    def workers(self) -> list:
        """The Celery worker Procs (not web, beat, Flower)."""
        return [p for n, p in self.stack.procs.items() if n not in ("web", "flower") and "beat" not in n]

    def redis_client(self):
        """A client of the case's Redis (sessions and limits; with the Redis broker also the broker)."""
        return redis.Redis.from_url(self.redis.url, socket_timeout=2)

    def stored_ids(self) -> set:
        """Distinct event ids in ClickHouse; raises while it does not answer. With chDB (only the
        owner worker may open it) read in a child process once the stack has stopped."""
        if self.chdb:
            code = ("import json,sys; from chdb import session; s = session.Session(sys.argv[1]); "
                    "r = s.query('SELECT DISTINCT event_id FROM observer.events', 'JSONCompact'); "
                    "print(json.dumps([row[0] for row in json.loads(r.bytes() or b'{\"data\":[]}')['data']]))")
            return set(json.loads(subprocess.run([sys.executable, "-c", code, str(self.dir / "chdb")], text=True,
                                                 capture_output=True, timeout=120, check=True).stdout))
        from clickhouse_driver import Client

        client = Client.from_url(self.ch_url + "?connect_timeout=2&send_receive_timeout=10")
        try:  # the database name is the rig's own (faults_<tag>), never input
            return {r[0] for r in client.execute(f"SELECT DISTINCT event_id FROM {self.db}.events")}  # noqa: S608
        finally:
            client.disconnect()

    def dead_letters(self) -> Counter:
        """Pending dead letters by kind."""
        import psycopg2

        conn = psycopg2.connect(self.database_url, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT kind, count(*) FROM dead_letters WHERE replayed_at IS NULL GROUP BY kind")
                return Counter(dict(cur.fetchall()))
        finally:
            conn.close()

    def diagnose(self) -> str:
        """Where missing events may sit: broker queue lengths and the last worker errors."""
        try:
            queues = self.broker.depths()
        except Exception as exc:
            queues = {"error": str(exc)}
        errors = [f"{p.name}: {line.split(' | ', 1)[-1][:240]}" for p in self.workers()
                  for line in p.log_text().splitlines() if '"level": "error"' in line or "Traceback" in line]
        return f"broker at the end: {queues}; last worker errors: {errors[-4:] or 'none'}"

    def stop(self) -> None:
        """Stop the stack, sinks, the case's broker and Redis servers (the suite's servers stay up)."""
        if self.stack:
            self.stack.stop()
        for s in self.sinks:
            with contextlib.suppress(OSError):
                s.stop()
        amqp = self.broker.proc if self.broker is not None and self.broker_kind == "amqp" else None
        for r in (self.sessions_redis, amqp, self.redis):
            if r is not None:
                r.stop()

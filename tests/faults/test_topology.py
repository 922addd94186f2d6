"""Fault cases on the scale-out topology: the engines that scale, each losing a part under load.

The topology (what tests/e2e/test_topology.py runs, here with every Procfile worker at its
default settings): ZooKeeper + a ClickHouse cluster of two shards (CLICKHOUSE_CLUSTER), a Redis
Cluster of 3 masters + 3 replicas for session state and rate limits (Redis' default 15 s
cluster-node-timeout), a private RabbitMQ node as the broker, PostgreSQL, the UFSE sink, and two
"hosts", each a web, every worker and a beat on its own ClickHouse node. SDK-like clients post
through both webs. Only SESSION_IDLE_TIMEOUT is changed (5 s, so sessions finalize within the run).

  ch      one ClickHouse server (shard 2) stopped for 60 s, then started
  redis   the Redis Cluster master serving a bucket killed (-9); its replica is promoted
  rabbit  RabbitMQ restarted (graceful stop, start) under load
  zk      ZooKeeper stopped for 30 s (replicated tables read-only), then started

One topology for the module, a case after the other, each with fresh sessions; each passes with
0 acknowledged events missing from ClickHouse (distinct ids through the Distributed table) and
from UFSE. Marked ``outage`` and ``topology`` (``make test`` leaves them out; about 8 min):
``pytest tests/faults -m topology`` or ``scripts/faults --topology``.
"""
import time
import uuid
from collections import Counter

import pytest

from devtools.faults.report import Result, table
from devtools.faults.rig import WHY, forwarded_ids, repeats
from devtools.keys import create_key
from devtools.load import Load, Scale
from devtools.servers.clickhouse_cluster import start_clickhouse_cluster
from devtools.servers.postgres import create_database, start_postgres
from devtools.servers.rabbitmq import start_rabbitmq
from devtools.servers.redis_cluster import failover_seconds, start_redis_cluster
from devtools.sink import Sink
from devtools.stack import ObserverStack, new_secret, stack_env
from devtools.wait import until

pytestmark = [pytest.mark.e2e, pytest.mark.outage, pytest.mark.topology, pytest.mark.xdist_group("topology")]
IDLE_TIMEOUT = 5
SCALE = Scale(clients=3, batch=20, batches_per_session=4, interval=0.1, warmup=5.0, tail=5.0, give_up=120.0)


class Topology:
    """The engines, two hosts of Observer, the sink; ``stop()`` ends everything started, by PID."""

    def __init__(self, dir) -> None:
        self.dir, self.hosts, self.db = dir, [], "topo"

    def start(self) -> "Topology":
        self.pg = start_postgres(self.dir / "postgres")
        self.ch = start_clickhouse_cluster(self.dir / "ch", shards=2, replicas=1)
        self.rc = start_redis_cluster(self.dir / "rc", masters=3, replicas=1)
        self.mq = start_rabbitmq(self.dir / "mq")
        create_database(self.pg.extra["admin_url"], self.db)
        database_url = self.pg.url.rsplit("/", 1)[0] + f"/{self.db}"
        self.sink = Sink(secret=new_secret()).start()
        for h in (1, 2):
            env = stack_env(self.dir / f"host{h}", REDIS_URL=self.rc.url, CELERY_BROKER_URL=self.mq.url,
                            DATABASE_URL=database_url, CLICKHOUSE_URL=self.ch.url(self.db, shard=h),
                            CLICKHOUSE_CLUSTER=self.ch.name, UFSE_URL=self.sink.url + "ufse",
                            UFSE_SECRET=self.sink.secret, SESSION_IDLE_TIMEOUT=IDLE_TIMEOUT)
            stack = ObserverStack(self.dir / f"host{h}", env, tag=f"-host{h}")
            stack.flask("migrate")  # ON CLUSTER; the second host's run finds nothing to do
            self.hosts.append(stack)
        self.key = create_key(database_url, "topo")
        for stack in self.hosts:
            stack.start()
        for stack in self.hosts:
            stack.wait_ready(180)
        return self

    def stored_ids(self, prefix: str) -> set:
        """Distinct ids of this case's sessions through the Distributed table (raises while a shard
        or ZooKeeper is down)."""
        from clickhouse_driver import Client

        client = Client("127.0.0.1", port=int(self.ch.node(1).port), database=self.db,
                        connect_timeout=2, send_receive_timeout=20)
        try:
            return {r[0] for r in client.execute("SELECT DISTINCT event_id FROM events WHERE project = 'topo' "
                                                 "AND session_id LIKE %(p)s", {"p": f"{prefix}-%"})}
        finally:
            client.disconnect()

    def check_alive(self) -> None:
        for stack in self.hosts:
            stack.check_alive()

    def stop(self) -> None:
        for svc in [*self.hosts, *(getattr(self, n, None) for n in ("sink", "mq", "rc", "ch", "pg"))]:
            try:
                if svc is not None:
                    svc.stop()
            except Exception as exc:  # keep stopping the rest
                print(f"stopping {svc}: {exc}")


@pytest.fixture(scope="module")
def topology(suite_dirs):
    top = Topology(suite_dirs("observer-topology-"))
    try:
        yield top.start()
    finally:
        top.stop()


def fault(top: Topology, case: str) -> str:
    """Inject the case's fault (returns when it ended); a note of what happened."""
    if case == "ch":
        node = top.ch.node(2)
        node.stop()
        time.sleep(60)
        node.restart()
        return "shard 2 down 60 s"
    if case == "redis":
        from app.sessions.store import SessionStore
        from app.storage import redis_clients

        rc = redis_clients.client(top.rc.url)
        store = SessionStore(rc, prefix="obs:", buckets=64, idle_s=1800, max_s=14400, marker_ttl_s=900)
        slot = rc.keyslot(store.keys("topo", "x")["live"])
        victim = top.rc.master_of_slot(slot)
        victim.kill9()
        took = failover_seconds(top.rc, slot, int(victim.port), timeout=90)
        victim.restart()  # it comes back as a replica of the promoted node
        redis_clients.reset_clients()
        return f"master {victim.name} killed; replica promoted after {took:.1f} s" if took else "no failover in 90 s"
    if case == "rabbit":
        t = time.monotonic()
        top.mq.restart()
        return f"graceful stop + start took {time.monotonic() - t:.1f} s"
    top.ch.zookeeper.stop()
    time.sleep(30)
    top.ch.zookeeper.restart()
    return "ZooKeeper down 30 s"


def last_deliveries(deliveries: list[dict], prefix: str, since: float, n: int = 5) -> str:
    """The ``n`` webhook-ids of this case delivered last: where a slow recovery's time went."""
    first: dict[str, float] = {}
    done: dict[str, float] = {}
    for d in deliveries:
        wid = d["headers"].get("webhook-id", "")
        if f":{prefix}-" not in wid:
            continue
        first.setdefault(wid, d["received_at"])
        if d["status"] == 200:
            done.setdefault(wid, d["received_at"])
    slow = sorted(done, key=done.__getitem__)[-n:]
    return ", ".join(f"{w} {first[w] - since:.1f} -> {done[w] - since:.1f}" for w in slow)


@pytest.mark.parametrize("case", ["ch", "redis", "rabbit", "zk"])
def test_topology_case(topology, case, record_property):
    top, prefix, t0 = topology, f"{case}{uuid.uuid4().hex[:4]}", time.monotonic()
    repeats_before = repeats(top.sink.snapshot())[0]  # one sink for every case: count this case's
    loads = [Load(h.url, top.key, SCALE, f"{prefix}-h{i}").start() for i, h in enumerate(top.hosts)]
    time.sleep(SCALE.warmup)
    note = fault(top, case)
    fault_ended, fault_ended_wall = time.monotonic(), time.time()
    time.sleep(SCALE.tail)
    for load in loads:
        load.stop()
    for load in loads:
        load.join()
    acked = set().union(*(ld.stats.acked for ld in loads))
    seen: dict = {"stored": set()}

    def progress() -> bool:
        if acked <= forwarded_ids(top.sink.snapshot()):
            seen.setdefault("delivered", time.monotonic() - fault_ended)
        seen["stored"] = top.stored_ids(prefix)
        if acked <= seen["stored"]:
            seen.setdefault("stored again", time.monotonic() - fault_ended)
        return "delivered" in seen and "stored again" in seen

    until(progress, "stored and delivered", timeout=180, interval=0.5, proc=top, raises=False)
    forwarded, stored = forwarded_ids(top.sink.snapshot()), seen["stored"]
    extra, differing = repeats(top.sink.snapshot())
    sent = set().union(*(ld.stats.sent for ld in loads))
    res = Result(case=f"topo-{case}", title=note, engine="cluster", broker="amqp",
                 overrides=f"SESSION_IDLE_TIMEOUT={IDLE_TIMEOUT}", sent=len(sent), acked=len(acked),
                 stored=len(acked & stored), forwarded=len(acked & forwarded),
                 missing_ch=len(acked - stored), missing_ufse=len(acked - forwarded), repeated=extra - repeats_before,
                 recovery_s=seen.get("stored again"), delivered_s=seen.get("delivered"), bound=None,
                 seconds=time.monotonic() - t0)
    res.check("events acknowledged", acked, f"{len(acked)}")
    res.check("no webhook-id delivered twice with different content", differing == 0, f"{differing}")
    answers = sum((Counter(ld.stats.statuses) for ld in loads), Counter())
    res.notes += [f"override SESSION_IDLE_TIMEOUT: {WHY['SESSION_IDLE_TIMEOUT']}",
                  f"client answers: {dict(answers)}; {SCALE.clients} clients per web x 2 webs",
                  "last deliveries (s after the fault's end: first attempt -> 200): "
                  + last_deliveries(top.sink.snapshot(), prefix, fault_ended_wall)]
    record_property("fault_result", res.asdict())
    assert res.ok, table([res])

"""A ClickHouse cluster on 127.0.0.1: one ZooKeeper and N Debian clickhouse-server (18.16) instances.

Layouts: ``shards=2, replicas=1`` (two shards) and ``shards=1, replicas=2`` (two replicas of one
shard), or any product. Every server has its own directory, ports (native, HTTP, interserver),
``<zookeeper>``, ``<remote_servers>`` (one cluster, ``observer`` by default, with
``internal_replication``) and ``<macros>`` (``shard``, ``replica``). ZooKeeper starts first and
stops last: without it replicated tables are read-only, and servers that start without it keep
retrying. Each process is a :class:`Proc`, stopped by its own PID.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from devtools.net import LOCALHOST, free_port
from devtools.proc import Proc, ProcError, stop_all
from devtools.servers.clickhouse import clickhouse_proc
from devtools.servers.clickhouse_config import ClusterNode
from devtools.servers.zookeeper import start_zookeeper
from devtools.system import ensure_clickhouse_server


def _write_profile(node_dir: Path) -> None:
    # The servers keep pooled connections to each other, and an idle connection notices a
    # shutdown only every poll_interval (10 s): stopped together, each would wait that long.
    (node_dir / "users.d").mkdir(exist_ok=True)
    (node_dir / "users.d" / "observer-cluster.xml").write_text(
        "<yandex><profiles><default><poll_interval>1</poll_interval></default></profiles></yandex>\n")


@dataclass
class ClickHouseCluster:
    """The running topology: ``zookeeper`` and ``nodes`` (shard-major: shard 1's replicas first)."""

    name: str
    shards: int
    replicas: int
    zookeeper: Proc
    nodes: list[Proc] = field(default_factory=list)

    def node(self, shard: int = 1, replica: int = 1) -> Proc:
        """The server of ``shard`` and ``replica`` (both counted from 1)."""
        return self.nodes[(shard - 1) * self.replicas + (replica - 1)]

    def url(self, database: str = "default", shard: int = 1, replica: int = 1) -> str:
        """clickhouse:// URL of one server, with ``database``."""
        return f"{self.node(shard, replica).url.rsplit('/', 1)[0]}/{database}"

    def stop(self, grace: float | None = None) -> None:
        """Stop every server at once (by PID), then ZooKeeper."""
        try:
            stop_all(self.nodes, grace)
        finally:
            self.zookeeper.stop()

    def __enter__(self) -> ClickHouseCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_clickhouse_cluster(dir: Path, *, shards: int = 2, replicas: int = 1, name: str = "observer",
                             config_source: Path = Path("/etc/clickhouse-server"),
                             timeout: float = 90.0, echo: bool = False) -> ClickHouseCluster:
    """Start ZooKeeper, then ``shards x replicas`` servers together; ready once each server's
    ZooKeeper session is up. On failure everything started is stopped again."""
    ensure_clickhouse_server()
    dir = Path(dir).resolve()
    zk = start_zookeeper(dir / "zookeeper", echo=echo)
    cluster = ClickHouseCluster(name, shards, replicas, zk)
    try:
        for attempt in (1, 2):
            # The servers' ports are picked free before they bind them, and the layout names them all:
            # a port another process took meanwhile fails one server (exit 70, "Address already in
            # use"). A second start picks new ports.
            try:
                return _start_nodes(cluster, dir, Path(config_source), timeout, echo)
            except ProcError:
                stop_all(cluster.nodes, grace=5)
                cluster.nodes = []
                if attempt == 2:
                    raise
    except (ProcError, OSError, RuntimeError):
        cluster.stop(grace=5)
        raise
    raise AssertionError("unreachable")


def _start_nodes(cluster: ClickHouseCluster, dir: Path, config_source: Path, timeout: float,
                 echo: bool) -> ClickHouseCluster:
    """Every server of the layout on new free ports, started together; ready once each server's
    ZooKeeper session is up."""
    shards, replicas = cluster.shards, cluster.replicas
    ports: list[list[int]] = []
    taken: set[int] = set()
    for _ in range(shards * replicas):
        trio: list[int] = []
        while len(trio) < 3:
            p = free_port()
            if p not in taken:
                taken.add(p)
                trio.append(p)
        ports.append(trio)
    layout = tuple(tuple((LOCALHOST, ports[s * replicas + r][0]) for r in range(replicas)) for s in range(shards))
    for i, (tcp, http, interserver) in enumerate(ports):
        shard, replica = i // replicas + 1, i % replicas + 1
        spec = ClusterNode(cluster=cluster.name, shards=layout, zookeeper=((LOCALHOST, cluster.zookeeper.port),),
                           macros=(("shard", f"{shard:02d}"), ("replica", f"r{replica}")),
                           interserver_port=interserver)
        # answers only once the server's ZooKeeper session is up (replicated DDL works then)
        proc = clickhouse_proc(dir / f"ch-s{shard}r{replica}", f"ch-s{shard}r{replica}", tcp, http, config_source,
                               timeout=timeout, echo=echo, cluster=spec,
                               ready_sql="SELECT count() > 0 FROM system.zookeeper WHERE path = '/'",
                               extra={"shard": shard, "replica": replica, "interserver_port": interserver})
        _write_profile(proc.dir)
        cluster.nodes.append(proc)
    for proc in cluster.nodes:
        proc.start(wait=False)
    for proc in cluster.nodes:
        proc.wait_ready()
    return cluster

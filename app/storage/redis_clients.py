"""Redis connections per role: one pooled client per URL per process.

The roles (broker, sessions, ratelimit) and every key on them: app/storage/redis_keys.py.
"""
from __future__ import annotations

import re
import threading
from typing import TypeAlias

import redis
from redis.cluster import RedisCluster

# One Redis or a Redis Cluster: the sessions and rate-limit roles take either.
RedisClient: TypeAlias = "redis.Redis | RedisCluster"

_clients: dict[str, RedisClient] = {}
_lock = threading.Lock()


def is_cluster(url: str) -> bool:
    """True for a Redis Cluster URL (``redis+cluster://host:port,host:port``)."""
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


def _cluster(url: str) -> RedisCluster:
    """A RedisCluster from ``redis+cluster://[user:password@]host:port[,host:port...][/]``: the
    nodes are only where discovery starts; the client follows the cluster's own slot map."""
    from urllib.parse import unquote

    from redis.cluster import ClusterNode

    scheme, _, rest = url.partition("://")
    auth, _, hosts = rest.rpartition("@")
    user, _, password = auth.partition(":")
    nodes = []
    for part in hosts.split("/", 1)[0].split(","):
        host, _, port = part.strip().rpartition(":")
        nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
    return RedisCluster(
        startup_nodes=nodes, username=unquote(user) or None, password=unquote(password) or None,
        ssl=scheme.startswith("rediss"), decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
        health_check_interval=30, max_connections=64,
        # A failover takes the cluster-node-timeout: let the caller's retry policy (requeue,
        # pause) wait it out instead of blocking a worker inside redis-py.
        cluster_error_retry_attempts=3,
    )


def client(url: str) -> RedisClient:
    """A pooled client for ``url``, one pool per URL per process (a RedisCluster for a cluster URL)."""
    with _lock:
        found = _clients.get(url)
        if found is None:
            if is_cluster(url):
                found = _clients[url] = _cluster(url)
                return found
            pool = redis.ConnectionPool.from_url(
                url, max_connections=64, socket_timeout=5, socket_connect_timeout=2,
                health_check_interval=30, decode_responses=True,
            )
            found = _clients[url] = redis.Redis(connection_pool=pool)
        return found


def reset_clients() -> None:
    """Drop pools (after fork, or between tests)."""
    with _lock:
        for c in _clients.values():
            if isinstance(c, redis.Redis):
                c.connection_pool.disconnect()
            else:  # a RedisCluster: one pool per node
                c.close()
        _clients.clear()


# Reply codes of a Redis that cannot serve a write for now, each passing with time: out of memory
# at maxmemory with noeviction, loading its dataset, a read-only replica (a failover under way),
# a failed background save (MISCONF, writes refused until one succeeds), too few replicas for
# min-replicas-to-write, a script or module busy past its threshold, a cluster failing over.
TRANSIENT_CODES = frozenset({"OOM", "LOADING", "READONLY", "MISCONF", "NOREPLICAS", "BUSY", "MASTERDOWN",
                             "TRYAGAIN", "CLUSTERDOWN"})
# A Lua script's failing call comes back wrapped, its code after the dash:
# "Error running script (call to f_...): @user_script:1: @user_script: 1: -OOM command not allowed ..."
_SCRIPT_CODE = re.compile(r"^Error running script .*?: -([A-Z]+) ")


def reply_code(exc: redis.ResponseError) -> str | None:
    """The error code of a Redis reply: the one redis-py parsed off (its ``status_code``), the
    first word of a reply redis-py has no class for (MISCONF, NOREPLICAS, BUSY), or the code of
    the call that failed inside a Lua script."""
    code = getattr(exc, "status_code", None)
    if code and code != "ERR":
        return str(code)
    text = str(exc)
    wrapped = _SCRIPT_CODE.match(text)
    if wrapped:
        return wrapped.group(1)
    first = text.split(" ", 1)[0]
    return first if first.isupper() and first.isalpha() else None


def is_transient(exc: BaseException) -> bool:
    """True when waiting fixes a Redis failure (no connection, a failover, memory, loading, a
    refused write), by exception type and reply code, never by the wording of a message."""
    from redis import exceptions as e

    if isinstance(exc, e.ClusterCrossSlotError):
        return False  # keys of one call in two slots: a bug, no wait fixes it
    if isinstance(exc, (e.ConnectionError, e.TimeoutError, e.BusyLoadingError, e.ReadOnlyError, e.ClusterError,
                        e.TryAgainError, e.AskError, e.MovedError, e.MasterDownError, e.ClusterDownError)):
        return True
    if isinstance(exc, e.ResponseError):
        return reply_code(exc) in TRANSIENT_CODES
    # redis-py's cluster client raises these outside RedisError (no node reachable for a slot).
    return isinstance(exc, e.RedisClusterException)

"""Redis connections per role, and the one written-down key layout.

Roles (each its own URL, defaulting to REDIS_URL):
  broker      CELERY_BROKER_URL    Celery's queues; Celery owns those keys (no prefix, no expiry)
  sessions    SESSIONS_REDIS_URL   live session state (below)
  ratelimit   RATELIMIT_REDIS_URL  flask-limiter counters ("{prefix}rl:..."), worker heartbeats

Keys on the sessions Redis, all under REDIS_KEY_PREFIX (``obs:``), every one with a TTL.
``{bN}`` is a Redis Cluster hash tag: all keys of one session and the index of its bucket
share a slot, so each Lua script touches one slot only.
  {p}s:{bN}:live:<project>:<sid>        hash, live state of the current version
  {p}s:{bN}:ver:<project>:<sid>         string, last claimed version (written by the claim, TTL idle + 6 h;
                                        a live session keeps its version in its hash)
  {p}s:{bN}:final:<project>:<sid>:<v>   hash, frozen snapshot awaiting forward
  {p}s:{bN}:applied:<batch>:<project>:<sid>  string, "<v>" once counted, "<v>:w" once written
  {p}s:{bN}:done:<project>:<sid>:<v>    string, tombstone of a completed version (TTL idle + 6 h):
                                        keeps the reconcile sweep off a just-delivered version
  {p}s:{bN}:deadline                    zset, member "<project>\\x1f<sid>", score = finalize-at ms
  {p}s:{bN}:outbox                      zset, member "<project>\\x1f<sid>\\x1f<v>", score = claimed-at ms
  (live and final hashes carry ``pending``: batches counted but not yet written)
  {p}due:{events}:index / :item:<id>    zset + strings, refused batches waiting for a retry
  {p}due:{forward}:index / :item:<m>    zset + strings, deliveries waiting for a retry or the circuit
  {p}circuit:{<host>}[:probe]           hash + string, the UFSE destination's circuit
  {p}sessions:lag                       hash, per process "host:pid" -> "<lag ms>:<reported at ms>":
                                        the claim's watermark waits for the slowest fresh one
  {p}claim-lock                         string, beat sweep lock
  {p}hb:sweep                           string, epoch seconds of the last finished sweep
  {p}hb:worker:<node>                   string, a worker's held/progress heartbeat (JSON)
  {p}hb:clickhouse                      string, ClickHouse owner heartbeat (JSON)
  {p}rl:...                             flask-limiter (on the ratelimit Redis)
On the broker's Redis (Redis broker only):
  {p}journal:{jN}:index / :b:<batch_id> zset + strings, accepted batches not yet counted
                                        (app/pipeline/journal.py), TTL DEDUP_WINDOW
"""
from __future__ import annotations

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

"""Heartbeats on the sessions Redis: one writer (``write``), one reader (``read``).

- ``worker``: every worker's main process writes how many messages it holds and when it last
  made progress, every few seconds (``Heartbeat``), as one field of a single hash (with the
  field's own expiry inside it): ``/ready`` and ``/metrics`` read them with one HGETALL, whatever
  else the sessions Redis holds (no keyspace scan). A worker holding messages with no progress
  for ``stall_after`` seconds is reported stalled.
- ``clickhouse``: with chDB the owner worker reports whether its ClickHouse answers
  (``start_clickhouse_owner_heartbeat``): the web process never opens chDB.
- ``sweep``: the epoch seconds at which the maintenance sweep last finished (``mark_sweep``).
Keys: app/storage/redis_keys.py.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.observability import metrics
from app.storage import redis_keys
from app.storage.redis_clients import RedisClient

if TYPE_CHECKING:
    from app.storage.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)


def write(redis: RedisClient, prefix: str, kind: redis_keys.HeartbeatKind, state: dict | str, ttl: int) -> None:
    """Write a heartbeat that expires after ``ttl`` seconds: a dict as JSON, a str as it is."""
    value = json.dumps(state) if isinstance(state, dict) else state
    redis.set(redis_keys.heartbeat(prefix, kind), value, ex=int(ttl))


def read(redis: RedisClient, prefix: str, kind: redis_keys.HeartbeatKind) -> Any:
    """A heartbeat as written (parsed JSON, else the raw string); None when absent or expired."""
    raw = redis.get(redis_keys.heartbeat(prefix, kind))
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def write_worker(redis: RedisClient, prefix: str, state: dict, ttl: int) -> None:
    """One worker's heartbeat: a field of the workers' hash, expiring ``ttl`` seconds from now
    (the reader drops it then); the hash itself expires when no worker writes for ``ttl``."""
    key = redis_keys.worker_heartbeats(prefix)
    pipe = redis.pipeline(transaction=False)
    pipe.hset(key, state["worker"], json.dumps({**state, "expires": time.time() + ttl}))
    pipe.expire(key, int(ttl))
    pipe.execute()


def read_heartbeats(redis: RedisClient, prefix: str, stall_after: float, now: float | None = None) -> list[dict]:
    """Every live worker heartbeat, each with ``stalled`` set; updates observer_worker_stalled.
    One HGETALL (and one HDEL of expired fields, when there are some)."""
    now = time.time() if now is None else now
    key = redis_keys.worker_heartbeats(prefix)
    out, expired = [], []
    for field, raw in sorted(redis.hgetall(key).items()):
        try:
            hb = json.loads(raw)
        except ValueError:
            hb = None
        if not isinstance(hb, dict) or float(hb.get("expires") or 0) < now:
            expired.append(field)
            continue
        hb["stalled"] = bool(hb.get("held")) and now - float(hb.get("last_progress") or 0) > stall_after
        metrics.STALLED.labels(hb["worker"]).set(1 if hb["stalled"] else 0)
        out.append(hb)
    if expired:  # workers gone (a container's new hostname each restart): keep the hash small
        redis.hdel(key, *expired)
    return out


class Heartbeat:
    """Writes this worker's holding/progress state to Redis every ``interval`` seconds."""

    def __init__(self, redis_factory: Callable[[], RedisClient], prefix: str, name: str,
                 probe: Callable[[], tuple[int, float]], interval: float = 5.0) -> None:
        self.redis_factory = redis_factory
        self.prefix = prefix
        self.name = name
        self.probe = probe  # () -> (held, last_progress_epoch)
        self.interval = interval

    def start(self) -> None:
        """Run in a daemon thread of the worker's main process."""
        threading.Thread(target=self._loop, name="observer-heartbeat", daemon=True).start()

    def beat(self) -> dict:
        """Write one heartbeat; returns it."""
        held, last = self.probe()
        state = {"worker": self.name, "host": socket.gethostname(), "held": held, "last_progress": last,
                 "at": time.time()}
        write_worker(self.redis_factory(), self.prefix, state, int(max(30, self.interval * 6)))
        return state

    def _loop(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:  # Redis away: the heartbeat's absence is the signal
                log.warning("worker heartbeat failed", extra={"error": str(exc)[:200]})
            time.sleep(self.interval)


def start_clickhouse_owner_heartbeat(redis_factory: Callable[[], RedisClient],
                                     clickhouse_factory: Callable[[], ClickHouse], prefix: str,
                                     interval: float = 5.0, *,
                                     stop: threading.Event | None = None) -> threading.Thread:
    """With chDB, the owner worker reports every ``interval`` seconds whether its ClickHouse
    answers, for /ready: a daemon thread, returned started, that runs until ``stop`` is set."""
    stop = stop or threading.Event()

    def loop() -> None:
        r = redis_factory()
        while not stop.is_set():
            try:
                version = clickhouse_factory().execute("SELECT version()")[0][0]
                state = {"ok": True, "version": version, "at": time.time()}
            except Exception as exc:  # reported through /ready, not fatal here
                state = {"ok": False, "error": str(exc)[:200], "at": time.time()}
            try:
                write(r, prefix, "clickhouse", state, 20)
            except Exception:
                log.warning("heartbeat write failed", exc_info=True)
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="clickhouse-heartbeat", daemon=True)
    thread.start()
    return thread


def mark_sweep(redis: RedisClient, prefix: str, now: float) -> None:
    """Record that a maintenance sweep finished at ``now`` (epoch seconds; kept a day)."""
    write(redis, prefix, "sweep", f"{now:.3f}", 86400)

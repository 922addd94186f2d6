"""Per-process resources of a worker, created on first use and dropped after a fork."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from app.settings import Settings, load_settings
from app.storage import redis_clients

if TYPE_CHECKING:
    from app.accounting.ledger import Ledger
    from app.forwarding.deadletters import DeadLetters
    from app.sessions.store import SessionStore
    from app.storage.clickhouse.client import ChdbBackend, ServerBackend

T = TypeVar("T")


_bound: list[Settings] = []


@functools.lru_cache(maxsize=1)
def _loaded() -> Settings:
    return load_settings()


def settings() -> Settings:
    """Validated settings (read once per process), or the ones ``bind`` gave."""
    return _bound[0] if _bound else _loaded()


def bind(s: Settings) -> None:
    """Use ``s`` from now on: a CLI command works with its app's settings."""
    _bound[:] = [s]
    reset()


_cache: dict[str, object] = {}


def _get(name: str, factory: Callable[[], T]) -> T:
    key = f"{name}:{os.getpid()}"
    if key not in _cache:
        _cache[key] = factory()
    return cast(T, _cache[key])  # what this name's factory made


def clickhouse() -> ServerBackend | ChdbBackend:
    """The ClickHouse backend (chDB is opened here, lazily, after any fork)."""
    from app.storage.clickhouse.client import get_clickhouse

    s = settings()
    return _get("ch", lambda: get_clickhouse(s.clickhouse_url, s.clickhouse_pool_size, s.clickhouse_timeout))


def sessions_redis() -> redis_clients.RedisClient:
    """Redis holding session state and batch markers."""
    return redis_clients.client(settings().sessions_redis_url)


def session_store() -> SessionStore:
    """The SessionStore bound to the current settings."""
    from app.sessions.store import SessionStore

    s = settings()
    return _get("store", lambda: SessionStore(
        sessions_redis(), prefix=s.redis_key_prefix, idle_s=s.session_idle_timeout, max_s=s.session_max_duration,
        marker_ttl_s=s.batch_marker_ttl))


def dead_letters() -> DeadLetters:
    """The dead-letter store."""
    from app.forwarding.deadletters import DeadLetters

    return _get("dlq", lambda: DeadLetters(settings().database_url))


def ledger() -> Ledger:
    """This process's loss ledger (app/accounting/ledger.py)."""
    from app.accounting.ledger import ledger as of

    s = settings()
    return of(s.sessions_redis_url, s.redis_key_prefix)


def insert_settings() -> dict | None:
    """INSERT settings for this ClickHouse, probed once per process."""
    return _get("insert_settings", _probe_insert_settings)


def _probe_insert_settings() -> dict | None:
    from app.storage.clickhouse import cluster, migrations

    ch, s = clickhouse(), settings()
    if s.clickhouse_cluster:  # acknowledged once durable on every shard (app/storage/clickhouse/cluster.py)
        return cluster.insert_settings(ch, s.clickhouse_cluster)
    # async_insert lets a server merge small INSERTs from many workers; wait_for_async_insert
    # keeps "the INSERT returned" meaning "the rows are written", which our ack relies on.
    if ch.kind == "server" and migrations.detect(ch).async_insert:
        return {"async_insert": 1, "wait_for_async_insert": 1}
    return None


def reset() -> None:
    """Forget every resource (after fork)."""
    _cache.clear()
    redis_clients.reset_clients()
    from app.forwarding import destinations

    destinations.reset()

"""Real servers for development and tests, each a :class:`devtools.proc.Proc` with a data dir.

``start_redis``, ``start_postgres``, ``start_clickhouse_server`` (Debian's 18.16) here; the
topology pieces in their modules (``redis_cluster``, ``clickhouse_cluster``, ``zookeeper``,
``rabbitmq``). ``python -m devtools.servers redis|postgres|clickhouse --dir DIR`` runs one in the
foreground.
"""
from __future__ import annotations

from devtools.net import postgres_available, rabbitmq_available, redis_available
from devtools.servers.clickhouse import start_clickhouse_server
from devtools.servers.postgres import start_postgres
from devtools.servers.redis import start_redis
from devtools.system import chromium_available, clickhouse_server_available, ensure_chromium, ensure_clickhouse_server

__all__ = [
    "start_redis", "start_postgres", "start_clickhouse_server", "clickhouse_server_available",
    "ensure_clickhouse_server", "chromium_available", "ensure_chromium", "redis_available", "postgres_available",
    "rabbitmq_available",
]

"""PostgreSQL: a thread-safe connection pool per process and the schema (migration 1 of
app/storage/schema.py, which applies it)."""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import psycopg2
import psycopg2.extras
import psycopg2.pool

# PostgreSQL migration 1 (app/storage/schema.py): released, never edited; later changes are new migrations.
SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS api_keys (
    id          bigserial PRIMARY KEY,
    project     text NOT NULL REFERENCES projects(name),
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    origins     text[] NOT NULL DEFAULT '{}',
    rate_limit  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('undeliverable_forward', 'poison_batch')),
    ref         text NOT NULL,
    payload     jsonb NOT NULL,
    error       text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX IF NOT EXISTS dead_letters_pending ON dead_letters (created_at) WHERE replayed_at IS NULL;
"""

_pools: dict[tuple[str, int], psycopg2.pool.ThreadedConnectionPool] = {}
_lock = threading.Lock()


def _pool(url: str, maxconn: int) -> psycopg2.pool.ThreadedConnectionPool:
    key = (url, os.getpid())  # a pool must never cross a fork
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = psycopg2.pool.ThreadedConnectionPool(1, maxconn, url, connect_timeout=3)
        return pool


@contextlib.contextmanager
def connection(url: str, maxconn: int = 10) -> Iterator[psycopg2.extensions.connection]:
    """Borrow a pooled connection; commit on success, roll back on error."""
    pool = _pool(url, maxconn)
    conn = pool.getconn()
    broken = False
    try:
        yield conn
        conn.commit()
    except BaseException:
        try:
            conn.rollback()
        except psycopg2.Error:
            broken = True
        raise
    finally:
        pool.putconn(conn, close=broken or conn.closed != 0)


@contextlib.contextmanager
def cursor(url: str, maxconn: int = 10) -> Iterator[psycopg2.extras.RealDictCursor]:
    """A dict cursor inside one transaction."""
    with connection(url, maxconn) as conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        yield cur


def returned(cur: psycopg2.extras.RealDictCursor) -> psycopg2.extras.RealDictRow:
    """The row an ``INSERT ... RETURNING`` gave back (it always gives one)."""
    row = cur.fetchone()
    if row is None:
        raise psycopg2.ProgrammingError("the statement returned no row")
    return row


def migrate(url: str) -> None:
    """Apply PostgreSQL's pending versioned migrations under the release lock (app/storage/schema.py)."""
    from app.storage import schema

    schema.migrate_postgres(url)


def ping(url: str) -> None:
    """Raise unless PostgreSQL answers."""
    with cursor(url) as cur:
        cur.execute("SELECT 1")


def close_pool(url: str) -> None:
    """Close this process's pool for ``url`` only (other threads' pools stay open)."""
    with _lock:
        pool = _pools.pop((url, os.getpid()), None)
    if pool is not None:
        pool.closeall()


def close_pools() -> None:
    """Close every pool (tests, shutdown)."""
    with _lock:
        for pool in _pools.values():
            pool.closeall()
        _pools.clear()

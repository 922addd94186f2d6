"""Versioned migrations: PostgreSQL's ordered list, the release lock, and running both stores.

``flask --app app migrate`` (the release step run before ``honcho start`` or by a platform, docker-compose's ``migrate``
service) takes a PostgreSQL advisory lock (session level, key ``LOCK_KEY``: the key the
unversioned migrator took per transaction, so an older release step waits too), then applies
PostgreSQL's pending migrations, recorded in ``schema_migrations``, then ClickHouse's
(app/storage/clickhouse/migrations.py, recorded in ClickHouse itself), and releases the lock.
A second release step started meanwhile waits for the lock, then finds nothing pending.

New migrations are appended to ``POSTGRES`` (or ClickHouse's ``MIGRATIONS``) with the next
number; a released migration is never edited or renumbered. Each PostgreSQL migration runs in
one transaction with its record, so it is applied whole or not at all.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg2
from psycopg2 import errors as pg_errors

from app.storage.postgres import SCHEMA

if TYPE_CHECKING:
    from app.settings import Settings
    from app.storage.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)
LOCK_KEY = 7150001  # pg_advisory_lock(bigint); the pre-versioning migrator's pg_advisory_xact_lock key
LOCK_WAIT_S = 1800  # a release step waits this long for another one before giving up


@dataclass(frozen=True)
class PgMigration:
    """One step of the PostgreSQL schema: SQL run in the migration's transaction."""

    version: int
    name: str
    sql: str


# Migration 1 is the schema as it stood when versioning began (CREATE ... IF NOT EXISTS: a no-op on
# an install made before, which has no version table).
# Migration 3: deletion requests (app/deletion/): one row per request with its stages, counts and
# verification, and the audit trail of who asked for what and when.
_DELETIONS = """
CREATE TABLE IF NOT EXISTS deletion_requests (
    id              bigserial PRIMARY KEY,
    project         text NOT NULL,
    subject_kind    text NOT NULL CHECK (subject_kind IN ('anonymous_id', 'session_id')),
    subject         text NOT NULL,
    requested_by    text NOT NULL,
    state           text NOT NULL DEFAULT 'suppressing',
    stages          jsonb NOT NULL DEFAULT '{}',
    sessions        jsonb NOT NULL DEFAULT '{}',
    counts          jsonb NOT NULL DEFAULT '{}',
    verification    jsonb,
    error           text,
    suppress_until  timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS deletion_requests_open ON deletion_requests (id) WHERE state <> 'verified';
CREATE TABLE IF NOT EXISTS deletion_audit (
    id          bigserial PRIMARY KEY,
    request     bigint NOT NULL REFERENCES deletion_requests(id),
    action      text NOT NULL,
    actor       text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS deletion_audit_request ON deletion_audit (request);
"""

POSTGRES: tuple[PgMigration, ...] = (
    PgMigration(1, "current schema", SCHEMA),
    # Retention (app/retention.py): a project's override (NULL: RETENTION_DAYS) and each run's record.
    PgMigration(2, "retention: projects.retention_days, retention_runs", """
ALTER TABLE projects ADD COLUMN IF NOT EXISTS retention_days integer CHECK (retention_days >= 1);
CREATE TABLE IF NOT EXISTS retention_runs (
    id           bigserial PRIMARY KEY,
    as_of        date NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    ok           boolean NOT NULL,
    partitions   integer NOT NULL,
    bytes        bigint NOT NULL,
    dead_letters integer NOT NULL,
    detail       jsonb NOT NULL,
    error        text
);
CREATE INDEX IF NOT EXISTS dead_letters_created ON dead_letters (created_at);
"""),
    PgMigration(3, "deletion requests and their audit", _DELETIONS),
    # A project's own delivery destination (app/forwarding/destinations.py): its URL, its secrets
    # (each {"secret", "created_at", "expires_at"}; newest first) and whether it is enabled.
    PgMigration(4, "destinations per project", """
CREATE TABLE IF NOT EXISTS destinations (
    project          text PRIMARY KEY,
    url              text NOT NULL,
    secrets          jsonb NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_at      timestamptz,
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
"""),
)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


@contextlib.contextmanager
def release_lock(url: str, wait_s: float = LOCK_WAIT_S,
                 on_wait: Callable[[str], None] | None = None) -> Iterator[Any]:
    """Hold the release lock for the block; yields the connection that holds it (autocommit off).

    Tries first; when another migrator holds it, says so through ``on_wait`` and waits up to
    ``wait_s`` (PostgreSQL's ``lock_timeout``), then raises with a message naming the holder."""
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
            row = cur.fetchone()
            if not (row and row[0]):
                holder = _holder(cur)
                if on_wait:
                    on_wait(f"another migrate holds the release lock ({holder}); waiting up to {int(wait_s)} s")
                cur.execute("SET lock_timeout = %s", (f"{int(wait_s * 1000)}ms",))
                try:
                    cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
                except pg_errors.LockNotAvailable:
                    raise RuntimeError(f"the release lock (advisory lock {LOCK_KEY}) is still held after "
                                       f"{int(wait_s)} s by {holder}") from None
                cur.execute("SET lock_timeout = 0")
        conn.autocommit = False
        try:
            yield conn
        finally:
            conn.rollback()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.close()


def _holder(cur: Any) -> str:
    cur.execute("SELECT l.pid, a.application_name, a.client_addr FROM pg_locks l "
                "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.granted AND l.objid = %s AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())", (LOCK_KEY,))
    row = cur.fetchone()
    return f"backend pid {row[0]} {row[1] or ''} {row[2] or ''}".strip() if row else "a session that just left"


def postgres_applied(conn: Any) -> dict[int, tuple[str, Any]]:
    """``{version: (name, applied_at)}`` recorded in ``schema_migrations`` (empty before versioning)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = cur.fetchone()
        if not (row and row[0]):
            return {}
        cur.execute("SELECT version, name, applied_at AT TIME ZONE 'UTC' FROM schema_migrations")
        return {int(v): (str(n), at) for v, n, at in cur.fetchall()}


def apply_postgres(conn: Any) -> list[PgMigration]:
    """Apply PostgreSQL's pending migrations on ``conn`` (which holds the release lock); each in
    its own transaction with its record. Returns those applied now."""
    with conn.cursor() as cur:
        cur.execute(_VERSION_TABLE)
    conn.commit()
    done = postgres_applied(conn)
    applied = []
    for migration in POSTGRES:
        if migration.version in done:
            continue
        log.info("applying postgres migration %d (%s)", migration.version, migration.name)
        with conn.cursor() as cur:
            cur.execute(migration.sql)
            cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name))
        conn.commit()
        applied.append(migration)
    return applied


def migrate_postgres(url: str) -> list[PgMigration]:
    """PostgreSQL's pending migrations under the release lock."""
    with release_lock(url) as conn:
        return apply_postgres(conn)


@dataclass
class Report:
    """What one ``migrate`` did, per component: ``(version, name)`` applied now, or why skipped."""

    postgres: list[tuple[int, str]]
    clickhouse: list[tuple[int, str]] | None  # None: not migrated by this process (skipped says why)
    skipped: str = ""
    clickhouse_version: str = ""
    seconds: float = 0.0


def clickhouse_skipped(settings: Settings, skip: bool) -> str:
    """Why this process does not migrate ClickHouse ('' when it does)."""
    if settings.chdb_path:
        return "chDB is migrated by its owning worker at start (one process may open it)"
    if skip:
        return "OBSERVER_SKIP_CLICKHOUSE_MIGRATE=1"
    return ""


def migrate_all(settings: Settings, *, skip_clickhouse: bool = False, ch: ClickHouse | None = None,
                on_wait: Callable[[str], None] | None = None) -> Report:
    """The release step: both stores' pending migrations under one hold of the release lock."""
    t0 = time.monotonic()
    skipped = clickhouse_skipped(settings, skip_clickhouse)
    with release_lock(settings.database_url, on_wait=on_wait) as conn:
        pg = [(m.version, m.name) for m in apply_postgres(conn)]
        if skipped:
            return Report(pg, None, skipped, seconds=time.monotonic() - t0)
        from app.storage.clickhouse import migrations
        from app.storage.clickhouse.client import get_clickhouse

        backend = ch if ch is not None else get_clickhouse(settings.clickhouse_url)
        features, done = migrations.apply(backend, settings.retention_days, settings.clickhouse_cluster,
                                          settings.dedup_window)
        return Report(pg, [(m.version, m.name) for m in done], clickhouse_version=features.version,
                      seconds=time.monotonic() - t0)


def status(settings: Settings, *, skip_clickhouse: bool = False,
           ch: ClickHouse | None = None) -> dict[str, list[tuple[int, str, str]]]:
    """``{component: [(version, name, 'applied <when>' | 'pending')]}``; a component this process
    cannot read is listed with the reason as its only entry (version 0)."""
    conn = psycopg2.connect(settings.database_url, connect_timeout=5)
    try:
        done = postgres_applied(conn)
    finally:
        conn.close()
    out: dict[str, list[tuple[int, str, str]]] = {
        "postgres": [(m.version, m.name, f"applied {done[m.version][1]:%Y-%m-%dT%H:%M:%SZ}"
                      if m.version in done else "pending") for m in POSTGRES]}
    skipped = clickhouse_skipped(settings, skip_clickhouse)
    if skipped:
        out["clickhouse"] = [(0, f"not read here: {skipped}", "")]
        return out
    from app.storage.clickhouse import migrations
    from app.storage.clickhouse.client import get_clickhouse

    backend = ch if ch is not None else get_clickhouse(settings.clickhouse_url)
    ch_done = migrations.applied_versions(backend)
    out["clickhouse"] = [
        (m.version, m.name, time.strftime("applied %Y-%m-%dT%H:%M:%SZ", time.gmtime(ch_done[m.version][1] / 1000))
         if m.version in ch_done else "pending") for m in migrations.MIGRATIONS]
    return out

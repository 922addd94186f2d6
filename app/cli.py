"""``flask --app app migrate | keys ... | dlq ...``."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.forwarding.deadletters import KINDS, DeadLetters, dumps
from app.storage import postgres

if TYPE_CHECKING:
    from app.factory import Runtime

keys = AppGroup("keys", help="Create, list, revoke and rotate ingest keys.")
dlq = AppGroup("dlq", help="Inspect, replay and purge dead letters.")


def _rt() -> Runtime:
    rt: Runtime = current_app.extensions["observer"]
    return rt


@click.command("migrate")
def migrate() -> None:
    """Create the PostgreSQL and ClickHouse schemas (idempotent)."""
    s = _rt().settings
    postgres.migrate(s.database_url)
    click.echo("postgres: schema ready")
    if s.chdb_path or os.environ.get("OBSERVER_SKIP_CLICKHOUSE_MIGRATE") == "1":
        click.echo("clickhouse: skipped (chDB is migrated by its owning worker)")
        return
    from app.storage import clickhouse_migrations
    from app.storage.clickhouse import get_clickhouse

    f = clickhouse_migrations.migrate(get_clickhouse(s.clickhouse_url), s.clickhouse_ttl_days, s.clickhouse_cluster,
                                      dedup_window=s.dedup_window)
    click.echo(f"clickhouse: schema ready on {f.version} (DateTime64={f.datetime64}, TTL={f.ttl}, "
               f"LowCardinality={f.low_cardinality})")


@keys.command("create")
@click.argument("project")
@click.option("--origin", "origins", multiple=True, help="Allowed browser origin (repeatable); none = any.")
@click.option("--rate-limit", default=None, help="Per-key limit such as 100/second.")
def keys_create(project: str, origins: tuple[str, ...], rate_limit: str | None) -> None:
    """Create a key; the key alone is printed on the last line."""
    from app.settings import env_rate

    postgres.migrate(_rt().settings.database_url)
    if rate_limit:
        env_rate("--rate-limit", rate_limit)
    key_id, key = _rt().key_store.create(project, list(origins), rate_limit)
    click.echo(f"created key {key_id} for project {project}; store it now, it is not shown again:")
    click.echo(key)


@keys.command("list")
def keys_list() -> None:
    """List keys (prefixes only)."""
    for row in _rt().key_store.list():
        state = "active" if row["revoked_at"] is None else f"revoked {row['revoked_at']:%Y-%m-%dT%H:%M:%SZ}"
        click.echo(f"{row['id']}\t{row['project']}\t{row['prefix']}…\t{','.join(row['origins']) or '*'}\t"
                   f"{row['rate_limit'] or 'default'}\t{state}")


@keys.command("revoke")
@click.argument("key_or_id")
def keys_revoke(key_or_id: str) -> None:
    """Revoke a key now (web processes stop accepting it within KEY_CACHE_TTL)."""
    try:
        key_id = _rt().key_store.revoke(key_or_id)
    except LookupError:
        raise click.ClickException("no such key") from None
    click.echo(f"revoked key {key_id}")


@keys.command("rotate")
@click.argument("key_or_id")
@click.option("--grace", type=int, default=None, help="Seconds the old key stays valid (KEY_ROTATE_GRACE).")
def keys_rotate(key_or_id: str, grace: int | None) -> None:
    """Issue a replacement key; the old one expires after the grace period."""
    s = _rt().settings
    try:
        key_id, key = _rt().key_store.rotate(key_or_id, s.key_rotate_grace if grace is None else grace)
    except LookupError:
        raise click.ClickException("no such key") from None
    click.echo(f"created key {key_id}; the old key stays valid for {s.key_rotate_grace if grace is None else grace}s:")
    click.echo(key)


def _dlq() -> DeadLetters:
    return DeadLetters(_rt().settings.database_url)


@dlq.command("list")
@click.option("--kind", type=click.Choice(KINDS), default=None)
@click.option("--all", "include_replayed", is_flag=True, help="Include replayed dead letters.")
@click.option("--limit", type=int, default=100)
def dlq_list(kind: str | None, include_replayed: bool, limit: int) -> None:
    """List dead letters."""
    rows = _dlq().list(kind, include_replayed, limit)
    for r in rows:
        click.echo(dumps({k: r[k] for k in ("id", "kind", "ref", "attempts", "error", "created_at", "replayed_at")}))
    click.echo(f"{len(rows)} dead letter(s)")


@dlq.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "replay_all", is_flag=True, help="Replay every pending dead letter.")
def dlq_replay(ids: tuple[int, ...], replay_all: bool) -> None:
    """Re-enqueue dead letters (forwards get the same webhook-id, freshly signed)."""
    store = _dlq()
    if not ids and not replay_all:
        raise click.UsageError("give dead-letter ids or --all")
    rows = store.list(limit=100000) if replay_all else [r for r in (store.get(i) for i in ids) if r]
    celery = _rt().publisher.celery
    for r in rows:
        task = "forward.replay" if r["kind"] == "undeliverable_forward" else "events.replay_batch"
        queue = "forward" if r["kind"] == "undeliverable_forward" else "events"
        celery.send_task(task, args=[r["id"]], queue=queue)
        click.echo(f"enqueued {task} for dead letter {r['id']} ({r['ref']})")
    click.echo(f"{len(rows)} replay(s) enqueued")


@dlq.command("purge")
@click.argument("ids", nargs=-1, type=int)
@click.option("--replayed", is_flag=True, help="Only dead letters already replayed.")
@click.option("--yes", is_flag=True, help="Needed to purge everything.")
def dlq_purge(ids: tuple[int, ...], replayed: bool, yes: bool) -> None:
    """Delete dead letters."""
    if not ids and not replayed and not yes:
        raise click.UsageError("give ids, --replayed, or --yes to delete every dead letter")
    n = _dlq().purge(list(ids) or None, replayed_only=replayed)
    click.echo(f"purged {n} dead letter(s)")


def register(app: Flask) -> None:
    """Attach the commands."""
    app.cli.add_command(migrate)
    app.cli.add_command(keys)
    app.cli.add_command(dlq)

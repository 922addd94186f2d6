"""``flask --app app migrate | keys ... | dlq ...``."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.forwarding.deadletters import KINDS, DeadLetters, dumps
from app.names import ROUTES, TaskName
from app.storage import postgres

if TYPE_CHECKING:
    from app.web.factory import Runtime

keys = AppGroup("keys", help="Create, list, revoke and rotate ingest keys.")
dlq = AppGroup("dlq", help="Inspect, replay and purge dead letters.")


def _rt() -> Runtime:
    rt: Runtime = current_app.extensions["observer"]
    return rt


@click.command("migrate")
@click.option("--status", "show_status", is_flag=True, help="List applied and pending migrations; change nothing.")
def migrate(show_status: bool) -> None:
    """Apply the pending PostgreSQL and ClickHouse migrations (each once, under the release lock)."""
    from app.storage import schema

    s = _rt().settings
    skip = os.environ.get("OBSERVER_SKIP_CLICKHOUSE_MIGRATE") == "1"
    if show_status:
        for component, rows in schema.status(s, skip_clickhouse=skip).items():
            for version, name, state in rows:
                click.echo(f"{component}\t{version}\t{name}\t{state}" if version else f"{component}\t{name}")
        return
    report = schema.migrate_all(s, skip_clickhouse=skip, on_wait=lambda m: click.echo(f"migrate: {m}", err=True))
    parts = [("postgres", report.postgres), ("clickhouse", report.clickhouse)]
    for component, applied in parts:
        if applied is None:
            click.echo(f"{component}: skipped ({report.skipped})")
        elif not applied:
            click.echo(f"{component}: up to date")
        for version, name in applied or ():
            click.echo(f"{component}: applied {version} {name}")
    click.echo(f"migrate: done in {report.seconds:.1f} s")


@keys.command("create")
@click.argument("project")
@click.option("--origin", "origins", multiple=True,
              help="Allowed browser origin, scheme://host[:port] (repeatable); none = any.")
@click.option("--rate-limit", default=None, help="Per-key limit such as 100/second.")
def keys_create(project: str, origins: tuple[str, ...], rate_limit: str | None) -> None:
    """Create a key; the key alone is printed on the last line."""
    from app.settings import env_rate

    postgres.migrate(_rt().settings.database_url)
    if rate_limit:
        env_rate("--rate-limit", rate_limit)
    try:
        key_id, key = _rt().key_store.create(project, list(origins), rate_limit)
    except ValueError as exc:  # a project name or an --origin that is not an origin, named in the message
        raise click.BadParameter(str(exc), param_hint="--origin" if "origin" in str(exc) else "PROJECT") from None
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
        task = TaskName.FORWARD_REPLAY if r["kind"] == "undeliverable_forward" else TaskName.EVENTS_REPLAY_BATCH
        celery.send_task(task, args=[r["id"]], queue=ROUTES[task].value)
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


data = AppGroup("data", help="Delete a person's data, with a receipt (docs/OPERATIONS.md).")


@data.command("delete")
@click.option("--project", required=True)
@click.option("--anonymous-id", default=None, help="The SDK's anonymous_id of the person.")
@click.option("--session-id", default=None, help="One session of the person.")
@click.option("--requested-by", default=None, help="Who asks (recorded in the audit); default: the OS user.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line instead of the sentences (the id still last).")
def data_delete(project: str, anonymous_id: str | None, session_id: str | None, requested_by: str | None,
                as_json: bool) -> None:
    """Record a deletion request, suppress the person at ingest and enqueue the deletion; the
    request id is printed alone on the last line."""
    import getpass
    import time

    from app.deletion import job, suppress
    from app.deletion.store import DeletionStore
    from app.ingest.validators import ID_PATTERN
    from app.storage import redis_clients

    if (anonymous_id is None) == (session_id is None):
        raise click.UsageError("give exactly one of --anonymous-id and --session-id")
    kind, subject = ("anonymous_id", anonymous_id) if anonymous_id is not None else ("session_id", session_id)
    if not subject or not ID_PATTERN.match(subject):
        raise click.BadParameter("1-128 of [A-Za-z0-9._:-]", param_hint=f"--{kind.replace('_', '-')}")
    s = _rt().settings
    seconds = suppress.suppress_seconds(s.dedup_window, s.timestamp_max_past)
    who = requested_by or getpass.getuser()
    req = DeletionStore(s.database_url).create(project, kind, subject, who, seconds)
    suppress.add(redis_clients.client(s.sessions_redis_url), s.redis_key_prefix,
                 [(project, kind, subject, time.time() + seconds)])
    try:
        job.enqueue(_rt().publisher.celery)
        enqueued = True
    except Exception as exc:  # noqa: BLE001 -- the request is recorded; beat's next run picks it up
        enqueued = False
        click.echo(f"could not enqueue the job now ({type(exc).__name__}); beat's next run picks it up", err=True)
    if as_json:
        import json

        click.echo(json.dumps({"id": req, "project": project, "subject": {kind: subject}, "requested_by": who,
                               "suppressed_for_s": seconds, "enqueued": enqueued}))
    else:
        click.echo(f"deletion {req} recorded for {kind} {subject} in project {project} (requested by {who}); "
                   f"ingest drops their events for {seconds} s")
        if enqueued:
            click.echo("deletion job enqueued (beat runs it every minute too); follow it with: data status ID")
    click.echo(req)


@data.command("status")
@click.argument("request_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Compact JSON on one line.")
def data_status(request_id: int, as_json: bool) -> None:
    """Print a deletion request's receipt as JSON: state, stages, counts per store, verification."""
    import json

    from app.deletion.store import DeletionStore, dumps, status

    store = DeletionStore(_rt().settings.database_url)
    row = store.get(request_id)
    if row is None:
        raise click.ClickException(f"no deletion request {request_id}")
    doc = status(row, store.audit(request_id))
    click.echo(json.dumps(doc, separators=(",", ":"), default=str) if as_json else dumps(doc))


def register(app: Flask) -> None:
    """Attach the commands."""
    app.cli.add_command(migrate)
    app.cli.add_command(keys)
    app.cli.add_command(dlq)
    app.cli.add_command(data)
    from app.web import retention_cli

    app.cli.add_command(retention_cli.projects)
    app.cli.add_command(retention_cli.retention_group)
    from app.web import destinations_cli

    app.cli.add_command(destinations_cli.group)
    from app.web import accounting_cli

    for command in accounting_cli.COMMANDS:
        app.cli.add_command(command)

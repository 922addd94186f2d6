"""``flask --app app projects set|list`` and ``flask --app app retention run|status`` (app/retention.py)."""
from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup

from app import retention
from app.names import ROUTES, TaskName

if TYPE_CHECKING:
    from app.web.factory import Runtime

projects = AppGroup("projects", help="Per-project settings (retention).")
retention_group = AppGroup("retention", help="Expire stored data: whole partitions, dead letters.")


def _rt() -> Runtime:
    rt: Runtime = current_app.extensions["observer"]
    return rt


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str, sort_keys=True))


@projects.command("set")
@click.argument("project")
@click.option("--retention-days", "days", type=int, default=None, required=True,
              help="Days this project's events are kept; 0 = back to RETENTION_DAYS.")
@click.option("--json", "as_json", is_flag=True)
def projects_set(project: str, days: int, as_json: bool) -> None:
    """Set a project's retention override (applies to events inserted from now on, within a minute)."""
    s = _rt().settings
    if days < 0:
        raise click.BadParameter("must be >= 0", param_hint="--retention-days")
    retention.set_project(s.database_url, project, days or None)
    effective = days or s.retention_days
    if as_json:
        _echo_json({"project": project, "retention_days": days or None, "effective_days": effective})
    else:
        click.echo(f"project {project}: retention {effective} days"
                   + ("" if days else " (RETENTION_DAYS, no override)"))


@projects.command("list")
@click.option("--json", "as_json", is_flag=True)
def projects_list(as_json: bool) -> None:
    """Every project and the retention its events get."""
    s = _rt().settings
    rows = retention.list_projects(s.database_url)
    for r in rows:
        r["effective_days"] = r["retention_days"] or s.retention_days
        if as_json:
            _echo_json(r)
        else:
            source = "override" if r["retention_days"] else "RETENTION_DAYS"
            click.echo(f"{r['name']}\tretention {r['effective_days']} days ({source})")


@retention_group.command("run")
@click.option("--as-of", "as_of", default=None, help="Run as if today were DATE (YYYY-MM-DD, UTC).")
@click.option("--json", "as_json", is_flag=True)
def retention_run(as_of: str | None, as_json: bool) -> None:
    """Drop the expired partitions and dead letters once; prints, per table and class, what went."""
    s = _rt().settings
    try:
        day = dt.date.fromisoformat(as_of) if as_of else None
    except ValueError:
        raise click.BadParameter("expected YYYY-MM-DD", param_hint="--as-of") from None
    if s.chdb_path:  # one process may open chDB: its owning worker runs the job
        task = TaskName.MAINTENANCE_RETENTION
        _rt().publisher.celery.send_task(task, kwargs={"as_of": as_of}, queue=ROUTES[task].value)
        click.echo("retention: enqueued on the worker that owns chDB; `flask --app app retention status` "
                   "shows its result")
        return
    from app.storage.clickhouse.client import get_clickhouse

    result = retention.run(s, get_clickhouse(s.clickhouse_url), day)
    if as_json:
        _echo_json(result.as_json())
        return
    for line in retention.lines(result):
        click.echo(line)


@retention_group.command("status")
@click.option("--limit", type=int, default=5)
@click.option("--json", "as_json", is_flag=True)
def retention_status(limit: int, as_json: bool) -> None:
    """The last retention runs, newest first."""
    for r in retention.runs(_rt().settings.database_url, limit):
        if as_json:
            _echo_json(r)
        else:
            error = f"\t{r['error']}" if r["error"] else ""
            click.echo(f"run {r['id']}\tas of {r['as_of']}\t{'ok' if r['ok'] else 'FAILED'}\t"
                       f"finished {r['finished_at']:%Y-%m-%dT%H:%M:%SZ}\t{r['partitions']} partitions\t"
                       f"{r['bytes']} bytes\t{r['dead_letters']} dead letters{error}")

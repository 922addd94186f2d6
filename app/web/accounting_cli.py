"""``flask --app app report``, ``events`` and ``tail``: what arrived, what became of it, live.

Each works on a ClickHouse server and on the embedded default while the stack runs (reads go
through the worker that owns chDB: app/accounting/owner.py).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import click
from flask import current_app

from app import resources
from app.accounting import ledger as ledger_mod
from app.accounting import owner, rejected
from app.accounting import report as report_mod
from app.accounting import tail as tail_mod
from app.settings import Settings
from app.storage import redis_clients, redis_keys

_SINCE = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _rt() -> Any:
    rt = current_app.extensions["observer"]
    resources.bind(rt.settings)
    return rt


def since_seconds(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``7d`` -> seconds (at most a week: the ledger's reach)."""
    m = _SINCE.match(text.strip())
    if not m:
        raise click.BadParameter("expected a number and s, m, h or d (e.g. 1h)", param_hint="--since")
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    if not 0 < seconds <= ledger_mod.MAX_SINCE_S:
        raise click.BadParameter("from 1 s to 7 d", param_hint="--since")
    return seconds


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@click.command("report")
@click.option("--project", required=True)
@click.option("--since", "since", default="1h", show_default=True, help="The window: 90s, 15m, 1h, 7d.")
@click.option("--json", "as_json", is_flag=True)
def report(project: str, since: str, as_json: bool) -> None:
    """The loss ledger of PROJECT's events received in the window, and whether every stage adds up.
    Exits 1 when an identity does not hold."""
    rt = _rt()
    s: Settings = rt.settings
    until_ms = int(time.time() * 1000)
    since_ms = until_ms - since_seconds(since) * 1000
    figures = owner.read(s, rt.publisher.celery, "report_figures", project=project, since_ms=since_ms,
                         until_ms=until_ms)
    rep = report_mod.build(s, rt.publisher.celery, project, since_ms, until_ms, figures)
    if as_json:
        out = rep.as_dict()
        out["recent_rejections"] = rejected.recent(rt.sessions_redis, s.redis_key_prefix, project, 5)
        click.echo(json.dumps(out, default=str, sort_keys=True))
    else:
        click.echo(report_mod.render(rep))
        recent = rejected.recent(rt.sessions_redis, s.redis_key_prefix, project, 5)
        if recent:
            click.echo("latest rejected events (kept 7 days):")
            for r in recent:
                click.echo(f"  {_iso(int(r['at_ms']))} {r['code']} event {r.get('event_id', '?')} "
                           f"request {r['request_id']}: {r['errors']}")
    if not rep.ok:
        raise SystemExit(1)


@click.command("events")
@click.option("--project", required=True)
@click.option("--session", "session_id", default=None)
@click.option("--last", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def events(project: str, session_id: str | None, last: int, as_json: bool) -> None:
    """The newest stored events of PROJECT (or of one session), newest first."""
    rt = _rt()
    rows = owner.read(rt.settings, rt.publisher.celery, "events", project=project, session_id=session_id, last=last)
    for r in rows:
        if as_json:
            click.echo(json.dumps(r, sort_keys=True))
        else:
            click.echo(f"{_iso(int(r['received_at_ms']))}  {r['session_id']}  {r['type']:<10} "
                       f"{(r['name'] or r['url'])[:60]:<60}  {r['event_id']}  request {r['request_id']}")
    if not rows and not as_json:
        click.echo(f"no stored events for project {project}" + (f", session {session_id}" if session_id else ""))


@click.command("tail")
@click.option("--project", required=True)
@click.option("--seconds", default=0.0, help="Stop after this long (0: until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True)
def tail(project: str, seconds: float, as_json: bool) -> None:
    """Stream PROJECT's ingest verdicts as the API answers: accepted events and rejected ones with
    their code (at most 20 events a request and 50 requests a second per web process)."""
    rt = _rt()
    s: Settings = rt.settings
    r = redis_clients.client(s.sessions_redis_url)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(redis_keys.tail_channel(s.redis_key_prefix, project))
    tail_mod.register(r, s.redis_key_prefix, project)
    renewed = started = time.monotonic()
    if not as_json:
        click.echo(f"tailing project {project} (web processes pick this up within a second)", err=True)
    try:
        while not seconds or time.monotonic() - started < seconds:
            if time.monotonic() - renewed > tail_mod.REGISTRATION_S / 3:
                tail_mod.register(r, s.redis_key_prefix, project)
                renewed = time.monotonic()
            msg = sub.get_message(timeout=0.5)
            if not msg:
                continue
            doc = json.loads(msg["data"])
            if as_json:
                click.echo(json.dumps(doc, sort_keys=True))
                continue
            head = (f"{dt.datetime.fromtimestamp(doc['at'], dt.UTC):%H:%M:%S.%f}"[:-3]
                    + f" {doc['status']} request {doc['request_id']}: {doc['accepted']} accepted, "
                      f"{doc['rejected']} rejected")
            extra = [f"{doc['not_listed']} not listed"] if doc["not_listed"] else []
            extra += [f"{doc['skipped_requests']} requests skipped (rate cap)"] if doc["skipped_requests"] else []
            click.echo(head + (f" ({', '.join(extra)})" if extra else ""))
            for e in doc["events"]:
                if e["verdict"] == "accepted":
                    click.echo(f"    + {e['type']:<10} {e.get('name') or ''} {e['event_id']} session {e['session_id']}")
                else:
                    kind = e.get("type") or "?"
                    click.echo(f"    - {kind:<10} {e['code']} {e.get('event_id') or ''} {e.get('errors')}")
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()


COMMANDS = (report, events, tail)

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
from app.storage import postgres, redis_clients, redis_keys

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


def _projects(database_url: str) -> list[str]:
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT DISTINCT project FROM api_keys ORDER BY project")
        return [r["project"] for r in cur.fetchall()]


def _dead_letters(database_url: str, refs: list[str]) -> list[dict[str, Any]]:
    if not refs:
        return []
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT id, kind, ref, error, attempts, created_at, replayed_at FROM dead_letters "
                    "WHERE ref = ANY(%s) ORDER BY id", (refs,))
        return [dict(r) for r in cur.fetchall()]


def _waiting(s: Settings, project: str, session_id: str, versions: set[int], done: set[int]) -> list[str]:
    """What Redis says of versions ClickHouse has no sessions row for yet."""
    from app.forwarding import backlog, parked

    store, out = resources.session_store(), []
    for v in sorted(versions - done):
        snap = store.snapshot(project, session_id, v)
        if snap is None:
            live = store.live(project, session_id)
            out.append(f"version {v}: live, not finalized yet ({live.get('events', '?')} events so far; it "
                       f"finalizes after SESSION_IDLE_TIMEOUT {s.session_idle_timeout} s of quiet)" if live else
                       f"version {v}: neither live nor claimed in Redis, and no sessions row")
            continue
        due = parked.due_index().due_at(parked.member(project, session_id, v))
        held = backlog.holds(project, session_id, v)
        tries = [e for k, e in snap.items() if str(k).startswith("a:")]
        out.append(f"version {v}: claimed at {_iso(int(snap.get('finalized_ms') or 0))}, not delivered yet"
                   + (f"; {len(tries)} attempt(s) so far" if tries else "")
                   + (f"; next attempt due {_iso(int(due * 1000))}" if due else "")
                   + ("; parked: its destination is disabled" if held else ""))
    return out


@click.command("trace")
@click.argument("event_id", required=False)
@click.option("--project", default=None, help="The event's project (faster; else every project is searched).")
@click.option("--session", "session", default=None, metavar="PROJECT:SESSION", help="Trace a whole session.")
@click.option("--json", "as_json", is_flag=True)
def trace(event_id: str | None, project: str | None, session: str | None, as_json: bool) -> None:
    """An event's timeline (or a session's): received, request, batch, stored or rejected (and why),
    the version that counted it, its claim, every delivery attempt, the webhook-id, a dead letter
    and its replay."""
    rt = _rt()
    s: Settings = rt.settings
    if bool(event_id) == bool(session):
        raise click.UsageError("give an EVENT_ID or --session PROJECT:SESSION")
    session_id = None
    if session:
        project, _, session_id = session.partition(":")
        if not project or not session_id:
            raise click.BadParameter("expected PROJECT:SESSION", param_hint="--session")
    found = owner.read(s, rt.publisher.celery, "trace", project=project, event_id=event_id, session_id=session_id)
    refused = rejected.find(rt.sessions_redis, s.redis_key_prefix, project, event_id, _projects(s.database_url)) \
        if event_id else []
    refs = [x["webhook_id"] for x in found["sessions"]]
    dead = _dead_letters(s.database_url, refs)
    pairs = {(e["project"], e["session_id"]) for e in found["events"]}
    if not pairs and project and session_id:
        pairs = {(project, session_id)}
    waiting = []
    for p, sid in sorted(pairs):
        versions = set(found["versions"].values())
        done = {x["version"] for x in found["sessions"] if x["session_id"] == sid}
        waiting += _waiting(s, p, sid, versions, done)
    if as_json:
        click.echo(json.dumps({**found, "rejected": refused, "dead_letters": dead, "waiting": waiting},
                              default=str, sort_keys=True))
        return
    if not found["events"] and not refused:
        click.echo(f"no trace of {event_id or session}: not stored, not among the rejected events kept 7 days")
        raise SystemExit(1)
    for r in refused:
        click.echo(f"{_iso(int(r['at_ms']))}  REJECTED ({r['code']}) in project {r['project']}, request "
                   f"{r['request_id']}: {r['errors']}")
    for e in found["events"][:50 if session else 5]:
        click.echo(f"{_iso(int(e['received_at_ms']))}  received {e['type']} {e['name'] or ''} {e['event_id']} "
                   f"(project {e['project']}, session {e['session_id']}), request {e['request_id']}, "
                   f"batch {e['batch_id']}: stored; counted in version {found['versions'].get(e['batch_id'], '?')}")
    for x in found["sessions"]:
        click.echo(f"{_iso(x['finalized_at_ms'])}  version {x['version']} claimed ({x['finalized_reason']}), "
                   f"webhook-id {x['webhook_id']}")
        for a in x["attempts"]:
            what = f"HTTP {a['status']}" if a.get("status") else (a.get("error") or a.get("outcome"))
            click.echo(f"{_iso(int(a['at_ms']))}    attempt {a.get('attempt', 0)}"
                       + (f" (replay of dead letter {a['replay_of']})" if a.get("replay_of") else "")
                       + f" to {a.get('destination', 'default')}: {a['outcome']}, {what}, {a['latency_ms']} ms, "
                         f"request {a['request_id']}")
        click.echo(f"{_iso(x['forwarded_at_ms'])}  version {x['version']}: {x['status']}")
    for d in dead:
        click.echo(f"{d['created_at']:%Y-%m-%dT%H:%M:%S}Z  dead letter {d['id']} ({d['ref']}, {d['attempts']} "
                   f"attempts): {d['error'][:200]}"
                   + (f"; replayed at {d['replayed_at']:%Y-%m-%dT%H:%M:%S}Z" if d["replayed_at"] else "; not replayed"))
    for w in waiting:
        click.echo(f"now  {w}")


COMMANDS = (report, events, tail, trace)

"""Reading ClickHouse from a command line on every setup, the embedded default included.

A ClickHouse server is read directly. chDB admits one process per data directory and the owning
worker holds it while the stack runs, so a command asks that worker instead: it publishes a
``maintenance.read`` task naming a read below and a reply key, the owner runs the read and pushes
the JSON answer to the key (kept a minute), and the command waits for it (``BLPOP``) up to
``TIMEOUT_S``. Only the reads listed in ``READS`` can be asked for: a task message names a
function, never a query.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.names import ROUTES, TaskName
from app.storage import redis_clients, redis_keys

if TYPE_CHECKING:
    from celery import Celery

    from app.settings import Settings
    from app.storage.clickhouse.client import ClickHouse

TIMEOUT_S = 30
REPLY_TTL_S = 60


def _events(ch: ClickHouse, project: str, session_id: str | None = None, last: int = 20) -> list[dict[str, Any]]:
    where = "project = %(p)s" + (" AND session_id = %(s)s" if session_id else "")
    rows = ch.execute(
        f"SELECT received_at_ms, ts_ms, session_id, event_id, type, name, url, request_id, batch_id "  # noqa: S608
        f"FROM {ch.database}.events WHERE {where} ORDER BY received_at_ms DESC, ts_ms DESC LIMIT %(n)s",
        {"p": project, "s": session_id or "", "n": int(last)})
    cols = ("received_at_ms", "ts_ms", "session_id", "event_id", "type", "name", "url", "request_id", "batch_id")
    return [dict(zip(cols, (v if isinstance(v, int | str) else str(v) for v in row), strict=True)) for row in rows]


def _report_figures(ch: ClickHouse, project: str, since_ms: int, until_ms: int) -> dict[str, Any]:
    from app.accounting.report import clickhouse_figures

    return clickhouse_figures(ch, project, since_ms, until_ms)


def _trace(ch: ClickHouse, project: str | None = None, event_id: str | None = None,
           session_id: str | None = None) -> dict[str, Any]:
    """What ClickHouse holds of one event (or one session): its rows, the versions that counted
    its batches, and those versions' ``sessions`` rows with their delivery logs."""
    db = ch.database
    cols = ("project", "session_id", "event_id", "type", "name", "ts_ms", "received_at_ms", "request_id", "batch_id")
    if event_id:
        where, args = "event_id = %(e)s" + (" AND project = %(p)s" if project else ""), {"e": event_id, "p": project}
    else:
        where, args = "project = %(p)s AND session_id = %(s)s", {"p": project, "s": session_id}
    rows = [dict(zip(cols, (v if isinstance(v, int | str) else str(v) for v in r), strict=True)) for r in ch.execute(
        f"SELECT {', '.join(cols)} FROM {db}.events WHERE {where} ORDER BY received_at_ms, ts_ms LIMIT 500", args)]  # noqa: S608
    out: dict[str, Any] = {"events": rows, "versions": {}, "sessions": []}
    found = {(r["project"], r["session_id"]) for r in rows}
    if not found and session_id and project:
        found = {(project, session_id)}
    for p, sid in sorted(found):
        batches = sorted({r["batch_id"] for r in rows if r["session_id"] == sid})
        for batch_id, version in ch.execute(
                f"SELECT batch_id, version FROM {db}.session_batches WHERE project = %(p)s AND session_id = %(s)s",  # noqa: S608
                {"p": p, "s": sid}):
            if not event_id or str(batch_id) in batches:
                out["versions"][str(batch_id)] = int(version)
        for r in ch.execute(
                f"SELECT version, argMax(status, forwarded_at_ms), any(finalized_reason), any(finalized_at_ms), "  # noqa: S608
                f"max(forwarded_at_ms), any(webhook_id), argMax(attempts, forwarded_at_ms) FROM {db}.sessions "
                "WHERE project = %(p)s AND session_id = %(s)s GROUP BY version ORDER BY version", {"p": p, "s": sid}):
            out["sessions"].append({"project": p, "session_id": sid, "version": int(r[0]), "status": str(r[1]),
                                    "finalized_reason": str(r[2]), "finalized_at_ms": int(r[3]),
                                    "forwarded_at_ms": int(r[4]), "webhook_id": str(r[5]), "attempts": _log(r[6])})
    return out


def _log(text: Any) -> list[dict[str, Any]]:
    try:
        return list(json.loads(str(text) or "[]"))
    except ValueError:
        return []


READS: dict[str, Callable[..., Any]] = {"events": _events, "report_figures": _report_figures, "trace": _trace}


def read(settings: Settings, celery: Celery, what: str, **kwargs: Any) -> Any:
    """Run the read ``what`` where ClickHouse is: here on a server, in the owner on chDB."""
    if what not in READS:
        raise ValueError(f"unknown read {what!r}")
    if not settings.chdb_path:
        from app.storage.clickhouse.client import get_clickhouse

        return READS[what](get_clickhouse(settings.clickhouse_url), **kwargs)
    reply = redis_keys.owner_reply(settings.redis_key_prefix, uuid.uuid4().hex)
    task = TaskName.MAINTENANCE_READ
    celery.send_task(task.value, kwargs={"what": what, "kwargs": kwargs, "reply": reply}, queue=ROUTES[task].value)
    got = redis_clients.client(settings.sessions_redis_url).blpop([reply], timeout=TIMEOUT_S)
    if got is None:
        raise TimeoutError(f"the worker that owns chDB did not answer within {TIMEOUT_S} s (is the stack running?)")
    answer = json.loads(got[1])
    if "error" in answer:
        raise RuntimeError(f"the owner could not read: {answer['error']}")
    return answer["result"]


def answer(ch: ClickHouse, r: Any, what: str, kwargs: dict[str, Any], reply: str) -> None:
    """(The owning worker) run one read and push its answer to ``reply``."""
    try:
        body = {"result": READS[what](ch, **kwargs)}
    except Exception as exc:  # the asker prints it; the worker carries on
        body = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    pipe = r.pipeline(transaction=False)
    pipe.rpush(reply, json.dumps(body, default=str))
    pipe.expire(reply, REPLY_TTL_S)
    pipe.execute()

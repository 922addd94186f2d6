"""``flask --app app report``: one project's events through every stage in a window, and the
identities that must hold between the stages.

  browser   dropped by reason (client reports)
  ingest    received = accepted + rejected (by code) + rate_limited + suppressed
  storage   accepted = stored + duplicates + dead-lettered (poison batches) + in flight
  sessions  finalized = delivered + empty + dead-lettered + waiting (outbox: parked, backlog, due)

Counts the stages write (the ledger, app/accounting/ledger.py) are checked against what the stores
hold: ``stored`` is the distinct events ClickHouse's ``events`` holds for the window (by
``received_at_ms``), delivered/empty/dead-lettered the ``sessions`` rows' last status (by
``finalized_at_ms``), waiting the Redis outbox. ``in flight`` is only believed while the pipeline
still holds work (the events queue, messages workers hold unacked on the Redis broker, the ingest
journal, the events retry index); with all three
empty, a positive remainder is a loss in the events stage and the report names it.

ClickHouse is read where it is: directly from a server, through the owning worker on chDB
(app/accounting/owner.py).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from app.accounting import ledger as ledger_mod
from app.names import Queue
from app.storage import redis_clients, redis_keys

if TYPE_CHECKING:
    from celery import Celery

    from app.settings import Settings
    from app.storage.clickhouse.client import ClickHouse

SEP = "\x1f"


def clickhouse_figures(ch: ClickHouse, project: str, since_ms: int, until_ms: int) -> dict[str, Any]:
    """What ClickHouse holds of the window: distinct events stored, sessions by last status."""
    db = ch.database
    args = {"p": project, "s": int(since_ms), "u": int(until_ms)}
    stored = ch.execute(f"SELECT uniqExact(event_id) FROM {db}.events WHERE project = %(p)s "  # noqa: S608
                        "AND received_at_ms >= %(s)s AND received_at_ms < %(u)s", args)
    rows = ch.execute(
        f"SELECT st, count() FROM (SELECT session_id, version, argMax(status, forwarded_at_ms) AS st "  # noqa: S608
        f"FROM {db}.sessions WHERE project = %(p)s AND finalized_at_ms >= %(s)s AND finalized_at_ms < %(u)s "
        "GROUP BY session_id, version) GROUP BY st", args)
    return {"stored": int(stored[0][0]), "sessions": {str(st): int(n) for st, n in rows}}


@dataclass
class Check:
    stage: str
    holds: bool
    left: str
    right: str
    problem: str = ""


@dataclass
class Report:
    project: str
    since: str
    until: str
    browser: dict[str, int]
    ingest: dict[str, Any]
    storage: dict[str, Any]
    sessions: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.holds for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pending_work(settings: Settings, celery: Celery) -> dict[str, int]:
    """What the events stage still holds: messages queued, batches journaled, batches parked."""
    from app.broker import queue_depth
    from app.ingest.journal import journal_for

    out = {"events_queue": queue_depth(celery, settings, Queue.EVENTS)}
    if settings.celery_broker_url.startswith(("redis", "rediss", "unix")):
        # Delivered to a worker and not acked yet (buffered for a flush): kombu's ``unacked`` hash.
        out["held_by_workers"] = int(redis_clients.client(settings.celery_broker_url).hlen("unacked"))
    journal = journal_for(settings)
    out["journal"] = journal.size() if journal is not None else 0
    r = redis_clients.client(settings.sessions_redis_url)
    out["events_retry"] = int(r.zcard(redis_keys.due_index(settings.redis_key_prefix, Queue.EVENTS.value)))
    return out


def waiting_sessions(settings: Settings, project: str, since_ms: int, until_ms: int) -> dict[str, int]:
    """Claimed versions of ``project`` (claimed in the window) not finished yet, and how many of the
    project's deliveries wait for a retry or in a disabled destination's backlog."""
    from app.sessions.store import BUCKETS

    r = redis_clients.client(settings.sessions_redis_url)
    p = settings.redis_key_prefix
    pipe = r.pipeline(transaction=False)
    for b in range(BUCKETS):
        pipe.zrangebyscore(redis_keys.session_outbox(p, b), int(since_ms), f"({int(until_ms)}")
    mine = f"{project}{SEP}"
    outbox = sum(1 for members in pipe.execute() for m in members if str(m).startswith(mine))
    parked = sum(1 for m in r.zrange(redis_keys.due_index(p, Queue.FORWARD.value), 0, -1) if str(m).startswith(mine))
    backlog = int(r.zcard(redis_keys.due_index(p, f"backlog:{project}")))
    return {"outbox": outbox, "parked": parked, "backlog": backlog}


def build(settings: Settings, celery: Celery, project: str, since_ms: int, until_ms: int,
          ch_figures: dict[str, Any]) -> Report:
    """Every figure of the window and the identities between them."""
    ledger_mod.wait_flushed()
    led = ledger_mod.read(settings.sessions_redis_url, settings.redis_key_prefix, project, since_ms, until_ms)
    browser = {k.split(":", 1)[1]: v for k, v in sorted(led.items()) if k.startswith("client:")}
    rejected = {k.split(":", 1)[1]: v for k, v in sorted(led.items()) if k.startswith("rejected:")}
    ingest: dict[str, Any] = {"received": led.get("received", 0), "accepted": led.get("accepted", 0),
              "rejected": sum(rejected.values()), "rejected_by_code": rejected,
              "rate_limited": led.get("rate_limited", 0), "suppressed": led.get("suppressed", 0)}
    work = pending_work(settings, celery)
    busy = any(work.values())
    stored, duplicates, poison = ch_figures["stored"], led.get("duplicates", 0), led.get("poison", 0)
    remainder = ingest["accepted"] - stored - duplicates - poison
    storage: dict[str, Any] = {"accepted": ingest["accepted"], "stored": stored, "duplicates": duplicates,
                               "dead_lettered": poison, "in_flight": remainder if busy and remainder > 0 else 0,
                               "pending_work": work}
    statuses = ch_figures["sessions"]
    waiting = waiting_sessions(settings, project, since_ms, until_ms)
    claimed = ledger_mod.read_claims(settings.sessions_redis_url, settings.redis_key_prefix, project,
                                     since_ms, until_ms)
    sessions: dict[str, Any] = {"finalized": claimed, "delivered": statuses.get("delivered", 0),
                "empty": statuses.get("empty", 0), "dead_lettered": statuses.get("dead_lettered", 0),
                "waiting": waiting["outbox"], "parked": waiting["parked"], "backlog": waiting["backlog"],
                "other_status": {k: v for k, v in statuses.items() if k not in ("delivered", "empty", "dead_lettered")}}
    rep = Report(project, _iso(since_ms), _iso(until_ms), browser, ingest, storage, sessions)

    i = ingest
    parts = i["accepted"] + i["rejected"] + i["rate_limited"] + i["suppressed"]
    rep.checks.append(Check("ingest", i["received"] == parts, f"received {i['received']}",
                            f"accepted {i['accepted']} + rejected {i['rejected']} + rate_limited "
                            f"{i['rate_limited']} + suppressed {i['suppressed']} = {parts}",
                            "" if i["received"] == parts else
                            f"ingest: {i['received'] - parts:+d} events counted as received and in no outcome "
                            "(a web process stopped before its last ledger flush?)"))
    held = stored + duplicates + poison + storage["in_flight"]
    holds = held == i["accepted"]
    problem = ""
    if remainder > 0 and not busy:
        problem = (f"storage: {remainder} accepted events are neither stored in ClickHouse `events`, dropped as "
                   "duplicates nor dead-lettered, and nothing is queued, journaled or parked: the events stage lost "
                   "them")
    elif remainder < 0:
        problem = (f"storage: ClickHouse holds {-remainder} more events than ingest accepted in the window "
                   "(a ledger flush lost, or rows written twice)")
    rep.checks.append(Check("storage", holds, f"accepted {i['accepted']}",
                            f"stored {stored} + duplicates {duplicates} + dead-lettered {poison} + in flight "
                            f"{storage['in_flight']} = {held}", problem))
    sv = sessions
    other: dict[str, int] = sv["other_status"]
    done = sv["delivered"] + sv["empty"] + sv["dead_lettered"] + sum(other.values())
    total = done + sv["waiting"]
    rep.checks.append(Check(
        "sessions", total == sv["finalized"], f"finalized {sv['finalized']}",
        f"delivered {sv['delivered']} + empty {sv['empty']} + dead-lettered {sv['dead_lettered']} + waiting "
        f"{sv['waiting']} (parked {sv['parked']}, backlog {sv['backlog']}) = {total}",
        "" if total == sv["finalized"] else
        ("forwarding: " + (f"{sv['finalized'] - total} finalized versions are neither delivered, dead-lettered nor "
                           "waiting in the outbox: ClickHouse `sessions` is missing their rows"
                           if total < sv["finalized"] else
                           f"{total - sv['finalized']} more versions finished than were claimed in the window "
                           "(claimed before it, or a ledger flush lost)"))))
    return rep


def render(rep: Report) -> str:
    """The human report."""
    lines = [f"report of project {rep.project}, {rep.since} .. {rep.until} (by received time)"]
    b = rep.browser
    lines.append(f"  browser   dropped by the SDKs {sum(b.values())}"
                 + (": " + ", ".join(f"{k} {v}" for k, v in b.items()) if b else ""))
    i = rep.ingest
    codes = ", ".join(f"{k} {v}" for k, v in i["rejected_by_code"].items())
    lines.append(f"  ingest    received {i['received']}, accepted {i['accepted']}, rejected {i['rejected']}"
                 + (f" ({codes})" if codes else "")
                 + f", rate-limited {i['rate_limited']}, suppressed {i['suppressed']}")
    st = rep.storage
    lines.append(f"  storage   stored {st['stored']}, duplicates {st['duplicates']}, dead-lettered "
                 f"{st['dead_lettered']}, in flight {st['in_flight']}")
    sv = rep.sessions
    lines.append(f"  sessions  finalized {sv['finalized']}, delivered {sv['delivered']}, empty {sv['empty']}, "
                 f"dead-lettered {sv['dead_lettered']}, waiting {sv['waiting']} (parked {sv['parked']}, "
                 f"backlog {sv['backlog']})")
    lines.append("checks:")
    for c in rep.checks:
        mark = "ok  " if c.holds else "FAIL"
        lines.append(f"  {mark} {c.stage:9s} {c.left} = {c.right}")
        if c.problem:
            lines.append(f"       {c.problem}")
    return "\n".join(lines)

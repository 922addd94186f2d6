"""Delivering one claimed session version to UFSE: the decision the ``forward.deliver`` task runs.

From the frozen snapshot: wait (a short countdown) until ClickHouse shows every batch the version
counted, build the payload from the events it owns, then send it through the destination's
circuit. A 2xx finishes the version; a retryable answer parks it for the next step of
FORWARD_RETRY_SCHEDULE (or behind the open circuit); a refusal, an exhausted schedule, a
version past the whole retry horizon, or a later attempt that could only happen after its frozen
snapshot expires (``fits``: checked on every path that schedules one) goes to the dead letters.
Every path ends in ``finish``, which forgets the snapshot and any parked retry and records the version in ``sessions``.

Idempotent on the snapshot: a redelivered message for a finished version finds none ("gone").
"""
from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg2
import redis

from app import resources
from app.broker import send_sessions_row
from app.forwarding import backlog, destinations, parked
from app.forwarding import prepare as step
from app.names import TaskName
from app.observability import metrics
from app.retry.backoff import doubling, schedule_delay
from app.retry.countdown import Countdown
from app.storage.clickhouse import queries
from app.storage.clickhouse.client import ClickHouseError

if TYPE_CHECKING:
    from celery import Celery

    from app.forwarding.circuit import Circuit
    from app.forwarding.destinations import Destination

log = logging.getLogger(__name__)

# Our own storage being down is worth waiting out: a few short countdowns (held by the worker,
# each well under the visibility timeout), then the delivery is parked for a minute.
INFRA_ERRORS = (ClickHouseError, redis.RedisError, redis.exceptions.RedisClusterException, psycopg2.OperationalError,
                psycopg2.InterfaceError)
INFRA_COUNTDOWNS = 4
# Countdowns while a counted batch is not visible in ClickHouse yet (about 7 minutes in all),
# then the version is dead-lettered; and the longest of them.
VISIBILITY_WAITS = 30
VISIBILITY_WAIT_MAX = 30.0
# A later attempt must be due this long before the version's snapshot expires (SessionStore's
# final_ttl, 14 days after the claim): once due it may still wait for visibility (~7 min of
# countdowns), storage countdowns and the drain rate behind the circuit. A delivery that cannot
# be due by then is dead-lettered with that reason; an expired snapshot would end it as "gone".
SNAPSHOT_MARGIN_S = 3600.0


def deliver(celery: Celery, project: str, session_id: str, version: int, *, attempt: int = 0, waits: int = 0,
            due: bool = False) -> str | Countdown:
    """Deliver one claimed version (``due``: re-published by the sweep); returns what happened."""
    store, index = resources.session_store(), parked.due_index()
    m = parked.member(project, session_id, version)
    if not due:
        parked_at = index.due_at(m)
        if parked_at is not None and parked_at > time.time():
            return "scheduled"  # a stale-outbox re-enqueue of a parked retry: the sweep sends it when due
    snap = store.snapshot(project, session_id, version)
    if snap is None:
        index.done([m])
        log.info("forward: nothing to do (already delivered or dead-lettered)",
                 extra={"webhook_id": f"{project}:{session_id}:{version}"})
        return "gone"
    dest = destinations.for_project(project)
    if dest is not None and not dest.enabled:
        backlog.park(project, session_id, version, attempt)
        return "backlogged"
    if dest is not None and dest.guarded and backlog.holds(project, session_id, version):
        return "backlogged"  # a stale-outbox re-enqueue while the backlog replays: it is released from there
    try:
        prepared = step.prepare(resources.clickhouse(), snap, project=project, session_id=session_id,
                                version=version, settings=resources.settings())
    except step.NotVisibleYet as exc:
        return _not_visible(project, session_id, version, snap, attempt, waits, exc)
    if prepared.empty:
        # Every event it counted belongs to an earlier version (a resend after that version
        # was finalized): there is nothing new to tell UFSE, and no empty session is sent.
        log.info("forward: version owns no events; not delivered", extra={"webhook_id": prepared.webhook_id})
        finish(celery, prepared, "empty", attempts_of(snap))
        return "empty"
    if dest is None:
        return give_up(celery, prepared, "UFSE_URL is not configured", attempt, attempts_of(snap))
    return _attempt(celery, dest, prepared, snap, attempt)


def _not_visible(project: str, session_id: str, version: int, snap: dict, attempt: int, waits: int,
                 exc: Exception) -> str | Countdown:
    wait = doubling(waits, base=1.0, cap=VISIBILITY_WAIT_MAX)
    if waits < VISIBILITY_WAITS and fits(snap, time.time() + wait):
        return Countdown(wait, {"attempt": attempt, "waits": waits + 1, "due": True, "infra": 0})
    why = "events never became visible" if waits >= VISIBILITY_WAITS else \
        f"events not visible yet and {too_late(snap, time.time() + wait)}"
    dead_letter(None, f"{project}:{session_id}:{version}", f"{why}: {exc}", attempt,
                {"project": project, "session_id": session_id, "version": version, "snapshot": snap})
    resources.session_store().complete(project, session_id, version)
    parked.due_index().done([parked.member(project, session_id, version)])
    return "dead_lettered"


def _attempt(celery: Celery, dest: Destination, prepared: step.Prepared, snap: dict, attempt: int) -> str:
    """Send through the destination's circuit and act on the answer."""
    p = prepared
    breaker = parked.circuit_for(dest)
    allowed, until, probe = breaker.allow()
    if not allowed:
        if dest.guarded and _disable_if_failing(dest, breaker):
            backlog.park(p.project, p.session_id, p.version, attempt)
            return "backlogged"
        # A project destination that fails is waited for until it is disabled (then parked, never
        # dropped); UFSE_URL's deliveries end in the dead letters after the retry horizon.
        if not dest.guarded and past_horizon(snap):
            return give_up(celery, p, "UFSE unavailable for the whole retry horizon", attempt, attempts_of(snap))
        if not fits(snap, until):
            return give_up(celery, p, f"circuit open: {too_late(snap, until)}", attempt, attempts_of(snap))
        parked.park(p.project, p.session_id, p.version, attempt, until, "circuit")
        return "held"
    result, entry = step.send(destinations.client_for(dest), p, dest.name, attempt)
    log_so_far = attempts_of(snap)
    if result.outcome == "delivered":
        finish(celery, p, "delivered", [*log_so_far, entry])
        if breaker.success():
            released = parked.due_index().release_all()
            log.warning("destination answers again; releasing parked deliveries",
                        extra={"destination": dest.name, "released": released})
        return "delivered"
    if result.outcome == "retry":
        until = breaker.failure()
        if dest.guarded and _disable_if_failing(dest, breaker):
            _note(p, entry)
            backlog.park(p.project, p.session_id, p.version, attempt)
            return "backlogged"
        if probe and not past_horizon(snap) and fits(snap, max(until, time.time() + 1)):
            # A failed probe says "UFSE is still down", nothing about this session: it waits
            # behind the circuit again without spending an attempt of its schedule.
            _note(p, entry)
            parked.park(p.project, p.session_id, p.version, attempt, max(until, time.time() + 1), "circuit")
            return "held"
        s = resources.settings()
        delay = schedule_delay(s.forward_retry_schedule, attempt, s.retry_time_scale)
        if delay is not None:
            # Honour the receiver's Retry-After: it may only lengthen the wait (the client caps
            # it at RETRY_AFTER_CAP).
            delay = max(delay, result.retry_after or 0.0)
            if not fits(snap, time.time() + delay):
                return give_up(celery, p, f"retry {attempt + 1}: {too_late(snap, time.time() + delay)}; last answer "
                               f"{result.status} {result.error or ''}".strip(), attempt + 1, [*log_so_far, entry])
            _note(p, entry)
            parked.park(p.project, p.session_id, p.version, attempt + 1, time.time() + delay, "retry")
            log.info("forward retry parked",
                     extra={"webhook_id": p.webhook_id, "attempt": attempt + 1, "retry_in_s": round(delay, 1)})
            return "retrying"
    return give_up(celery, p, f"{result.outcome}: status={result.status} {result.error or ''}".strip(), attempt + 1,
                   [*log_so_far, entry])


def attempts_of(snap: dict | None) -> list[dict]:
    """The delivery attempts kept with a snapshot so far, oldest first."""
    out = []
    for k, v in (snap or {}).items():
        if str(k).startswith("a:"):
            try:
                out.append(json.loads(v))
            except ValueError:
                continue
    return sorted(out, key=lambda e: (int(e.get("at_ms", 0)), int(e.get("attempt", 0))))


def _note(p: step.Prepared, entry: dict) -> None:
    """Keep an attempt that did not finish the version (best effort: the log is a record, not a
    decision; a Redis error here must not turn a parked retry into a failure)."""
    try:
        resources.session_store().note_attempt(p.project, p.session_id, p.version, entry)
    except INFRA_ERRORS as exc:
        log.warning("delivery attempt not logged", extra={"webhook_id": p.webhook_id, "error": str(exc)[:200]})


def _disable_if_failing(dest: Destination, breaker: Circuit) -> bool:
    """Disable a project destination that has failed without a success for
    DESTINATION_DISABLE_AFTER; True when it is disabled (now or by another worker)."""
    s = resources.settings()
    since = breaker.failing_since()
    if since is None or time.time() - since < s.destination_disable_after * s.retry_time_scale:
        return False
    failing_h = (time.time() - since) / 3600
    if destinations.set_enabled(s.database_url, dest.name, False,
                                f"failing without a success for {failing_h:.1f} h"):
        metrics.DESTINATIONS_DISABLED.labels(dest.name).inc()
        log.error("destination disabled: its deliveries are parked until `flask --app app destinations enable`",
                  extra={"destination": dest.name, "url": dest.display_url, "failing_hours": round(failing_h, 1)})
    destinations.reset_project(dest.name)
    return True


def storage_unavailable(project: str, session_id: str, version: int, attempt: int, infra: int,
                        exc: Exception) -> str | Countdown:
    """Our own storage failed mid-delivery: a few countdowns, then park for a minute, and when
    even parking fails leave the claimed version to the outbox sweep (app/maintenance.py)."""
    s = resources.settings()
    ref = f"{project}:{session_id}:{version}"
    metrics.TASK_FAILURES.labels(TaskName.FORWARD_DELIVER.value).inc()
    log.warning("forward: storage unavailable", extra={"webhook_id": ref, "error": str(exc)[:300]})
    wait = doubling(infra, base=2.0 * s.retry_time_scale, cap=s.sessions_retry_max) \
        if infra < INFRA_COUNTDOWNS else 60 * s.retry_time_scale
    try:
        snap = resources.session_store().snapshot(project, session_id, version)
    except INFRA_ERRORS:
        snap = None  # Redis is what fails: its snapshot's life is checked once it answers
    if snap is not None and not fits(snap, time.time() + wait):
        try:
            dead_letter(None, ref, f"storage unavailable: {too_late(snap, time.time() + wait)}: {str(exc)[:300]}",
                        attempt, {"project": project, "session_id": session_id, "version": version,
                                  "snapshot": snap})
            resources.session_store().complete(project, session_id, version)
            parked.due_index().done([parked.member(project, session_id, version)])
            return "dead_lettered"
        except INFRA_ERRORS:
            pass  # PostgreSQL or Redis away too: wait like any other storage failure
    if infra < INFRA_COUNTDOWNS:
        return Countdown(wait, {"attempt": attempt, "infra": infra + 1}, cause=exc)
    try:
        parked.park(project, session_id, version, attempt, time.time() + wait, "storage")
    except INFRA_ERRORS:
        log.error("forward deferred to the outbox sweep", extra={"webhook_id": ref})
        return "deferred"
    return "parked"


def past_horizon(snap: dict) -> bool:
    """True once a version was finalized longer ago than the whole retry schedule."""
    s = resources.settings()
    horizon = sum(s.forward_retry_schedule) * s.retry_time_scale
    finalized = int(snap.get("finalized_ms") or 0) / 1000.0
    return finalized > 0 and time.time() - finalized > horizon


def snapshot_expires_at(snap: dict) -> float:
    """When a frozen snapshot expires: the claim (or recovery) sets ``finalized_ms`` and the
    key's expiry (SessionStore.final_ttl) in one script; a backlog's hold and release set
    ``expires_ms`` with the expiry they give it."""
    if snap.get("expires_ms"):
        return int(snap["expires_ms"]) / 1000.0
    finalized = int(snap.get("finalized_ms") or 0) / 1000.0
    return (finalized or time.time()) + resources.session_store().final_ttl


def fits(snap: dict, due_at: float) -> bool:
    """True when an attempt due at ``due_at`` still finds the snapshot, with SNAPSHOT_MARGIN_S to spare."""
    return due_at <= snapshot_expires_at(snap) - SNAPSHOT_MARGIN_S


def too_late(snap: dict, due_at: float) -> str:
    """Why an attempt due at ``due_at`` cannot be made (the dead letter's reason)."""
    return (f"the next attempt would be due at {_iso(due_at)}, past its snapshot's expiry at "
            f"{_iso(snapshot_expires_at(snap))} less {SNAPSHOT_MARGIN_S:.0f} s")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dead_letter(prepared: step.Prepared | None, ref: str, error: str, attempts: int, extra: dict | None = None) -> int:
    """Keep an undeliverable version for an operator's replay; returns its dead-letter id."""
    data = prepared.as_dead_letter() if prepared else dict(extra or {})
    dl_id = resources.dead_letters().add("undeliverable_forward", ref, data, error, attempts)
    metrics.DEAD_LETTERS.labels("undeliverable_forward").inc()
    log.error("forward dead-lettered", extra={"webhook_id": ref, "dead_letter_id": dl_id, "error": error})
    return dl_id


def give_up(celery: Celery, prepared: step.Prepared, error: str, attempts: int,
            log_entries: list[dict] | None = None) -> str:
    """Dead-letter the version and finish it (``log_entries``: its delivery attempts)."""
    dead_letter(prepared, f"{prepared.project}:{prepared.session_id}:{prepared.version}", error, attempts)
    finish(celery, prepared, "dead_lettered", log_entries)
    return "dead_lettered"


def finish(celery: Celery, prepared: step.Prepared, status: str, log_entries: list[dict] | None = None) -> None:
    """Forget the snapshot and any parked retry; record the session in ClickHouse (a failure
    there is logged, not retried, since retrying would repeat a delivery UFSE accepted)."""
    p = prepared
    resources.session_store().complete(p.project, p.session_id, p.version)
    parked.due_index().done([parked.member(p.project, p.session_id, p.version)])
    row = step.session_row(p, status, log_entries)
    try:
        send_sessions_row(celery, row, p.webhook_id)
        return
    except Exception as exc:  # broker away: write it now rather than lose it
        log.warning("forward.record not published; writing the row at once", extra={"error": str(exc)[:200]})
    try:
        queries.insert_session_rows(resources.clickhouse(), [row])
    except ClickHouseError as exc:
        metrics.CH_ERRORS.labels("record_session").inc()
        log.error("could not record forwarded session", extra={"webhook_id": p.webhook_id, "error": str(exc)})

"""An operator's replay of a dead-lettered session: the same webhook-id, a fresh signature."""
from __future__ import annotations

import logging

from app import resources
from app.forwarding import destinations
from app.forwarding import prepare as step
from app.forwarding.deliver import INFRA_COUNTDOWNS, INFRA_ERRORS
from app.retry.backoff import doubling
from app.retry.countdown import Countdown
from app.storage.clickhouse import queries
from app.storage.clickhouse.client import ClickHouseError

log = logging.getLogger(__name__)


def replay(dead_letter_id: int, attempt: int = 0) -> str | Countdown:
    """Deliver a dead-lettered session again; returns what happened (or a short countdown)."""
    dlq = resources.dead_letters()
    row = dlq.get(dead_letter_id)
    if row is None or row["replayed_at"] is not None:
        return "skipped"
    try:
        prepared = _prepared(row["payload"])
    except step.NotVisibleYet as exc:
        dlq.record_failure(dead_letter_id, f"events still not visible: {exc}")
        return "failed"
    except INFRA_ERRORS:
        if attempt < INFRA_COUNTDOWNS:
            return Countdown(_wait(attempt), {"attempt": attempt + 1})
        raise
    dest = destinations.for_project(prepared.project)
    if dest is None:
        dlq.record_failure(dead_letter_id, "UFSE_URL is not configured")
        return "failed"
    result, entry = step.send(destinations.client_for(dest), prepared, dest.name)
    entry["replay_of"] = dead_letter_id
    if result.outcome == "delivered":
        dlq.mark_replayed(dead_letter_id)
        try:
            ch = resources.clickhouse()
            # The row replaces the dead-lettered one (ReplacingMergeTree): it carries that row's
            # attempts too, so the log keeps every attempt.
            step.record(ch, prepared, "delivered", [*queries.session_attempts(ch, prepared.project, prepared.session_id,
                                                                              prepared.version), entry])
        except ClickHouseError as exc:
            log.error("could not record replayed session", extra={"webhook_id": prepared.webhook_id, "error": str(exc)})
        return "delivered"
    if result.outcome == "retry" and attempt < INFRA_COUNTDOWNS:
        # An operator is waiting on a replay: a few short tries, then it stays pending.
        return Countdown(max(_wait(attempt), min(resources.settings().sessions_retry_max, result.retry_after or 0)),
                         {"attempt": attempt + 1})
    dlq.record_failure(dead_letter_id, f"{result.outcome}: status={result.status} {result.error or ''}".strip())
    return "failed"


def _prepared(data: dict) -> step.Prepared:
    if "payload" in data:
        return step.Prepared.from_dead_letter(data)
    # Dead-lettered before a payload existed (its events never became visible): an operator's
    # replay builds from what ClickHouse holds now; the old snapshot's check could never pass.
    return step.prepare(resources.clickhouse(), data["snapshot"], project=data["project"],
                        session_id=data["session_id"], version=int(data["version"]),
                        settings=resources.settings(), wait_for_writes=False)


def _wait(attempt: int) -> float:
    return doubling(attempt, base=2.0, cap=resources.settings().sessions_retry_max)

"""Forwarding a claimed session version: check visibility, read back, build, deliver."""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from app.forwarding import payload as payload_mod
from app.observability import metrics
from app.storage import events_repo

log = logging.getLogger(__name__)


class NotVisibleYet(Exception):
    """ClickHouse shows fewer batches than the session counted; try again later."""


@dataclass
class Prepared:
    """Everything needed to deliver (and later record) one session version."""

    project: str
    session_id: str
    version: int
    webhook_id: str
    payload: dict
    totals: dict
    finalized_reason: str
    finalized_at_ms: int

    def as_dead_letter(self) -> dict:
        """What the dead-letter row keeps for a replay."""
        return {"project": self.project, "session_id": self.session_id, "version": self.version,
                "webhook_id": self.webhook_id, "payload": self.payload, "totals": self.totals,
                "finalized_reason": self.finalized_reason, "finalized_at_ms": self.finalized_at_ms}

    @classmethod
    def from_dead_letter(cls, data: dict) -> "Prepared":
        """Rebuild from a dead-letter row's payload."""
        return cls(**{k: data[k] for k in ("project", "session_id", "version", "webhook_id", "payload",
                                           "totals", "finalized_reason", "finalized_at_ms")})


def prepare(ch, snapshot: dict, *, project: str, session_id: str, version: int, settings) -> Prepared:
    """Read a frozen session back from ClickHouse and build its UFSE payload."""
    expected = int(snapshot.get("batches", 0))
    visible = events_repo.count_session_batches(ch, project, session_id, version)
    if visible < expected:
        raise NotVisibleYet(f"{visible}/{expected} batches visible")
    totals = events_repo.session_totals(ch, project, session_id, version, 50, settings.forward_max_request_ids)
    rows = events_repo.session_events(ch, project, session_id, version, settings.forward_max_events + 1)
    reason = snapshot.get("reason", "idle")
    finalized_at = int(snapshot.get("finalized_ms", 0))
    body = payload_mod.build_payload(
        project=project, session_id=session_id, version=version, finalized_reason=reason,
        finalized_at_ms=finalized_at, event_rows=rows, totals=totals, max_events=settings.forward_max_events,
        max_request_ids=settings.forward_max_request_ids, max_pages=50)
    return Prepared(project, session_id, version, payload_mod.webhook_id(project, session_id, version),
                    body, totals, reason, finalized_at)


def send(client, prepared: Prepared):
    """One signed delivery attempt; returns the client's DeliveryResult."""
    rid = uuid.uuid4().hex
    result = client.deliver(payload_mod.encode(prepared.payload), msg_id=prepared.webhook_id, request_id=rid)
    metrics.FORWARD_RESULTS.labels(result.outcome).inc()
    metrics.FORWARD_LATENCY.observe(result.elapsed_s)
    log.info("ufse attempt", extra={"webhook_id": prepared.webhook_id, "outcome": result.outcome,
                                    "status": result.status, "error": result.error, "forward_request_id": rid})
    return result


def record(ch, prepared: Prepared, status: str) -> None:
    """Write the forwarded session to ClickHouse's ``sessions`` table."""
    events_repo.record_forwarded(
        ch, project=prepared.project, session_id=prepared.session_id, version=prepared.version,
        totals=prepared.totals, finalized_reason=prepared.finalized_reason,
        finalized_at_ms=prepared.finalized_at_ms, webhook_id=prepared.webhook_id, status=status)

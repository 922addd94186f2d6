"""Forward step: a claimed session version -> check visibility, read back, build, deliver, record.

The UFSE side (payload, signing, HTTP client, circuit, dead letters) lives in app/forwarding/."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.forwarding import payload as payload_mod
from app.observability import metrics
from app.storage.clickhouse import queries

if TYPE_CHECKING:
    from app.forwarding.client import DeliveryResult, UfseClient
    from app.settings import Settings
    from app.storage.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)


class NotVisibleYet(Exception):
    """A batch the version counted is not written to ClickHouse yet; try again later."""


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

    @property
    def empty(self) -> bool:
        """True when the version owns no event (every one it counted belongs to another version)."""
        return int(self.totals.get("event_count", 0)) == 0

    def as_dead_letter(self) -> dict:
        """What the dead-letter row keeps for a replay."""
        return {"project": self.project, "session_id": self.session_id, "version": self.version,
                "webhook_id": self.webhook_id, "payload": self.payload, "totals": self.totals,
                "finalized_reason": self.finalized_reason, "finalized_at_ms": self.finalized_at_ms}

    @classmethod
    def from_dead_letter(cls, data: dict) -> Prepared:
        """Rebuild from a dead-letter row's payload."""
        return cls(**{k: data[k] for k in ("project", "session_id", "version", "webhook_id", "payload",
                                           "totals", "finalized_reason", "finalized_at_ms")})


def ready(ch: ClickHouse, snapshot: dict, *, project: str, session_id: str, version: int) -> bool:
    """True once every batch the version counted is written (its ``pending`` count is back to 0).

    A lost marker makes a batch count twice in ``batches`` but both counts are paired with their
    own write in ``pending``, so nothing wedges. ``visible >= batches`` proves readiness too, without
    waiting for the marks.
    """
    if "pending" in snapshot and int(snapshot["pending"]) <= 0:
        return True
    expected = int(snapshot.get("batches", 0))
    return queries.count_session_batches(ch, project, session_id, version) >= expected


def prepare(ch: ClickHouse, snapshot: dict, *, project: str, session_id: str, version: int, settings: Settings,
            wait_for_writes: bool = True) -> Prepared:
    """Read a frozen version back from ClickHouse (the events it owns) and build its UFSE payload.

    Raises NotVisibleYet while a counted batch is unwritten; ``wait_for_writes=False`` (an
    operator's replay of a dead letter, whose snapshot is old) builds from what ClickHouse holds.
    """
    if wait_for_writes and not ready(ch, snapshot, project=project, session_id=session_id, version=version):
        raise NotVisibleYet(f"pending={snapshot.get('pending', '?')} batches={snapshot.get('batches', 0)}")
    window_ms = int(getattr(settings, "dedup_window", 86400)) * 1000
    elsewhere = queries.owned_elsewhere(ch, project, session_id, version, window_ms)
    rows = queries.session_events(ch, project, session_id, version, settings.forward_max_events + 1,
                                  window_ms=window_ms, elsewhere=elsewhere)
    if len(rows) <= settings.forward_max_events:  # every owned event read: count them here
        totals = queries.totals_from_rows(rows, 50, settings.forward_max_request_ids)
    else:  # truncated: the counts cover every event, only ClickHouse sees them all
        totals = queries.session_totals(ch, project, session_id, version, 50, settings.forward_max_request_ids,
                                        window_ms=window_ms, elsewhere=elsewhere)
    reason = snapshot.get("reason", "idle")
    finalized_at = int(snapshot.get("finalized_ms", 0))
    body = payload_mod.build_payload(
        project=project, session_id=session_id, version=version, finalized_reason=reason,
        finalized_at_ms=finalized_at, event_rows=rows, totals=totals, max_events=settings.forward_max_events,
        max_request_ids=settings.forward_max_request_ids, max_pages=50)
    return Prepared(project, session_id, version, payload_mod.webhook_id(project, session_id, version),
                    body, totals, reason, finalized_at)


def send(client: UfseClient, prepared: Prepared, destination: str = "default",
         attempt: int = 0) -> tuple[DeliveryResult, dict]:
    """One signed delivery attempt: the client's DeliveryResult and the attempt's entry for the
    delivery log (kept with the version's ``sessions`` row: ``flask trace``). ``destination``
    labels the metrics: "default" (UFSE_URL) or the project with a destination of its own."""
    rid = uuid.uuid4().hex
    at_ms = int(time.time() * 1000)
    result = client.deliver(payload_mod.encode(prepared.payload), msg_id=prepared.webhook_id, request_id=rid)
    metrics.FORWARD_RESULTS.labels(destination, result.outcome).inc()
    metrics.FORWARD_LATENCY.labels(destination).observe(result.elapsed_s)
    log.info("ufse attempt", extra={"webhook_id": prepared.webhook_id, "outcome": result.outcome,
                                    "status": result.status, "error": result.error, "forward_request_id": rid})
    entry = {"at_ms": at_ms, "attempt": int(attempt), "destination": destination, "outcome": result.outcome,
             "status": result.status, "latency_ms": round(result.elapsed_s * 1000, 1), "request_id": rid,
             "error": (result.error or "")[:300]}
    return result, entry


def session_row(prepared: Prepared, status: str, attempts: list[dict] | None = None) -> list:
    """The ``sessions`` row of a forwarded (or dead-lettered) version, with its delivery log."""
    return queries.session_row(
        project=prepared.project, session_id=prepared.session_id, version=prepared.version,
        totals=prepared.totals, finalized_reason=prepared.finalized_reason,
        finalized_at_ms=prepared.finalized_at_ms, webhook_id=prepared.webhook_id, status=status,
        attempts=attempts or [])


def record(ch: ClickHouse, prepared: Prepared, status: str, attempts: list[dict] | None = None) -> None:
    """Write the forwarded session to ClickHouse's ``sessions`` table at once (one INSERT;
    the forward task batches its rows through ``forward.record`` instead)."""
    queries.insert_session_rows(ch, [session_row(prepared, status, attempts)])

"""``forward.record``: write the ``sessions`` rows of forwarded versions, one INSERT per flush.

It runs on the events worker, whose batching holds many messages (app/names.py routes it). An
outage requeues and pauses like an events flush; rows ClickHouse refuses as data are logged and
dropped (the delivery already happened; nothing retried could fix them).
"""
from __future__ import annotations

import logging
from typing import Any

from app import resources
from app.events.flush import ACK, is_transient
from app.events.worker import deadline_clickhouse
from app.observability import metrics
from app.storage.clickhouse import queries

log = logging.getLogger(__name__)
_WEBHOOK_ID = queries.SESSION_COLUMNS.index("webhook_id")


def record(requests: list[Any]) -> dict:
    """Insert every request's row; returns ``{"verdicts": {...}, "pause": bool}`` like a flush."""
    rows = [r.args[0] for r in requests]
    try:
        queries.insert_session_rows(deadline_clickhouse(), rows, settings=resources.insert_settings())
    except Exception as exc:  # classified: an outage waits, a data error is dropped loudly
        if is_transient(exc):
            log.warning("sessions rows not written; requeueing", extra={"rows": len(rows), "error": str(exc)[:300]})
            return {"verdicts": {}, "pause": True}
        metrics.CH_ERRORS.labels("record_session").inc()
        log.error("sessions rows refused by ClickHouse; dropped", extra={
            "rows": len(rows), "error": str(exc)[:300], "webhook_ids": [row[_WEBHOOK_ID] for row in rows[:10]]})
    else:
        metrics.CH_INSERT_ROWS.labels("sessions").inc(len(rows))
    return {"verdicts": {r.id: ACK for r in requests}, "pause": False}

"""Client reports: the drops an SDK counted in the browser, reported with a batch, counted once.

The body of ``POST /v1/events`` may carry ``"client_report": {"id": "<uuid>", "dropped":
{"<reason>": n}}``: the events the SDK dropped since its last acknowledged report, by reason. The
SDK sends the same report (same id) until a 2xx answers a request that carried it, so a lost
answer makes it come again: the id is remembered a day (``SET NX``) and a second arrival is
answered ``duplicate`` and not counted. Counted reports go to
``observer_client_dropped_total{reason}`` and the project's ledger (``client:<reason>``).

Bounds (the OpenAPI file's ``ClientReport``): at most 16 reasons, each ``^[a-z][a-z0-9_]{0,31}$``
with a count from 1 to 1,000,000. A report outside them is answered ``ignored`` and never fails
the batch it rides with. Reasons outside the known set are counted as ``other`` in the metric
(its label set stays bounded) and by name in the ledger.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import redis

from app.accounting.ledger import Ledger
from app.ingest.validators import UUID_PATTERN
from app.observability import metrics
from app.storage import redis_keys

log = logging.getLogger(__name__)

KNOWN = frozenset({"queue_full", "store_full", "oversize", "too_large", "expired", "rejected", "refused",
                   "error_repeat", "rate_limited", "opt_out", "sampled"})
MAX_REASONS = 16
MAX_COUNT = 1_000_000
SEEN_TTL_S = 86400
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_REFUSED = re.compile(r"^refused_\d{3}$")
_UUID = re.compile(UUID_PATTERN)


@dataclass(frozen=True)
class Report:
    id: str
    dropped: dict[str, int]


def parse(obj: object) -> Report | str:
    """The report, or why it is ignored."""
    if not isinstance(obj, dict) or set(obj) - {"id", "dropped"}:
        return "must be an object with id and dropped"
    rid, dropped = obj.get("id"), obj.get("dropped")
    if not isinstance(rid, str) or not _UUID.match(rid):
        return "id must be a UUID"
    if not isinstance(dropped, dict) or not dropped or len(dropped) > MAX_REASONS:
        return f"dropped must map 1 to {MAX_REASONS} reasons to counts"
    for reason, n in dropped.items():
        if not isinstance(reason, str) or not _REASON.match(reason):
            return "a reason must match ^[a-z][a-z0-9_]{0,31}$"
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_COUNT:
            return f"a count must be an integer from 1 to {MAX_COUNT}"
    return Report(rid.lower(), {str(k): int(v) for k, v in dropped.items()})


def label(reason: str) -> str:
    """The metric's label of a reason: ``refused_<status>`` -> ``refused``; unknown -> ``other``."""
    if _REFUSED.match(reason):
        return "refused"
    return reason if reason in KNOWN else "other"


def record(r: redis.Redis, prefix: str, ledger: Ledger, project: str, obj: object, at_ms: int) -> str:
    """Count a body's report once: "counted", "duplicate" or "ignored"."""
    report = parse(obj)
    if isinstance(report, str):
        log.info("client report ignored", extra={"project": project, "why": report})
        return "ignored"
    try:
        first = r.set(redis_keys.client_report(prefix, project, report.id), "1", nx=True, ex=SEEN_TTL_S)
    except redis.RedisError as exc:
        # Unsure whether it came before: counted (an SDK forgets a report once a 2xx carried it,
        # so only a lost answer during this outage could make it count twice).
        log.warning("client report id not checked (Redis); counted", extra={"error": str(exc)[:200]})
        first = True
    if not first:
        return "duplicate"
    for reason, n in report.dropped.items():
        metrics.CLIENT_DROPPED.labels(label(reason)).inc(n)
    ledger.add(project, at_ms, {f"client:{reason}": n for reason, n in report.dropped.items()})
    return "counted"

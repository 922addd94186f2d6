"""Prometheus metrics shared by the web process and the workers.

Under gunicorn and prefork Celery set ``PROMETHEUS_MULTIPROC_DIR`` (``make run`` and the
test stacks do; a deployment sets it per host), so every process writes its samples there
and ``/metrics`` aggregates them.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

HTTP_REQUESTS = Counter("observer_http_requests_total", "HTTP answers", ["endpoint", "status"])
HTTP_LATENCY = Histogram("observer_http_request_seconds", "HTTP latency", ["endpoint"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
EVENTS_ACCEPTED = Counter("observer_events_accepted_total", "Events accepted at ingest")
EVENTS_REJECTED = Counter("observer_events_rejected_total", "Events rejected at ingest", ["code"])
PII_MASKED = Counter("observer_pii_masked_total", "Values masked by the privacy scrub")
ENQUEUE_FAILURES = Counter("observer_enqueue_failures_total", "Batches not published (broker down)")
KEY_CACHE = Counter("observer_key_cache_total", "Key cache lookups", ["result"])
RATE_LIMITED = Counter("observer_rate_limited_total", "Requests refused by rate limits", ["scope"])
CH_INSERT_ROWS = Counter("observer_clickhouse_rows_total", "Rows inserted into ClickHouse", ["table"])
CH_INSERT_SECONDS = Histogram("observer_clickhouse_insert_seconds", "ClickHouse INSERT latency", ["table"])
CH_ERRORS = Counter("observer_clickhouse_errors_total", "ClickHouse call failures", ["op"])
EVENTS_DUPLICATE = Counter("observer_events_duplicate_total",
                           "Events dropped before storage because another batch owns them within the dedup window")
BATCHES_DUPLICATE = Counter("observer_batches_duplicate_total", "Redelivered batches recognised by marker", ["step"])
SESSIONS_FINALIZED = Counter("observer_sessions_finalized_total", "Session versions claimed by the sweep")
FORWARD_RESULTS = Counter("observer_forward_attempts_total", "UFSE delivery attempts", ["outcome"])
FORWARD_LATENCY = Histogram("observer_forward_seconds", "UFSE request latency",
                            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
DEAD_LETTERS = Counter("observer_dead_letters_total", "Dead letters written", ["kind"])
TASK_FAILURES = Counter("observer_task_failures_total", "Task failures", ["task"])
FLUSH_SPLITS = Counter("observer_flush_splits_total", "Events flushes split to isolate a batch ClickHouse refused")
EVENTS_PARKED = Counter("observer_events_parked_total", "Refused batches parked for a later retry")
EVENTS_PAUSES = Counter("observer_events_pauses_total", "Pauses of an events worker while storage was unavailable")
FLUSH_LOST = Counter("observer_flush_lost_total", "Flushes whose pool child died; their messages were requeued at once")
BROKER_RESTORES = Counter("observer_broker_restores_total", "Unacked messages the Redis broker restored after the visibility timeout")
JOURNAL_REPUBLISHED = Counter("observer_journal_republished_total", "Accepted batches re-published from the ingest journal (lost by the broker)")
FORWARD_PARKED = Counter("observer_forward_parked_total", "Deliveries parked in the due-time index", ["reason"])
DUE_REPUBLISHED = Counter("observer_due_republished_total", "Parked retries re-published by the sweep", ["index"])
KEY_CACHE_STALE = Counter("observer_key_cache_stale_total", "Keys served from an expired cache entry while PostgreSQL was unreachable")
SWEEP_LAST = Gauge("observer_beat_last_sweep_timestamp", "Epoch seconds of the last finished maintenance sweep", multiprocess_mode="max")
STALLED = Gauge("observer_worker_stalled", "1 when a worker holds messages and made no progress", ["worker"], multiprocess_mode="max")
DUE_PARKED = Gauge("observer_due_parked", "Retries parked in the due-time index", ["index"], multiprocess_mode="livemax")
QUEUE_DEPTH = Gauge("observer_queue_depth", "Messages waiting per queue", ["queue"], multiprocess_mode="livemax")
LIVE_SESSIONS = Gauge("observer_live_sessions", "Sessions awaiting finalization", multiprocess_mode="livemax")


def render() -> bytes:
    """The exposition text for this process (or all processes in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)

"""Prometheus metrics shared by the web process and the workers.

Under gunicorn and prefork Celery, ``PROMETHEUS_MULTIPROC_DIR`` must name an existing, empty
directory per host (or container) so every process writes its samples there and ``/metrics``
sums them. The Procfile does not set it: the environment does. The image sets it and its entry
point (docker/entrypoint.sh) creates and empties it; ``make run`` uses ``var/prometheus``; the
test stacks use their own. docs/CONFIGURATION.md's metrics table is generated from the help texts here
(python -m devtools.settings_table), so they say what an operator needs to know.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

HTTP_REQUESTS = Counter("observer_http_requests_total", "HTTP answers by route and status code", ["endpoint", "status"])
HTTP_LATENCY = Histogram("observer_http_request_seconds", "HTTP latency by route, seconds", ["endpoint"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
EVENTS_ACCEPTED = Counter("observer_events_accepted_total", "Events accepted at ingest")
EVENTS_REJECTED = Counter("observer_events_rejected_total", "Events rejected at ingest, by rejection code", ["code"])
PII_MASKED = Counter("observer_pii_masked_total", "Values masked by the privacy scrub")
EVENTS_SUPPRESSED = Counter("observer_events_suppressed_total",
                            "Events dropped at ingest: their person's data is being deleted (app/deletion/)")
DELETION_MUTATIONS = Counter("observer_deletion_mutations_total", "ClickHouse ALTER ... DELETE mutations issued")
DELETIONS_VERIFIED = Counter("observer_deletions_verified_total", "Deletion requests verified (0 left in every store)")
ENQUEUE_FAILURES = Counter("observer_enqueue_failures_total", "Batches not published (broker down): answered 503")
KEY_CACHE = Counter("observer_key_cache_total",
                    "API key lookups by the per-process cache, by result (hit, load, unavailable, malformed)",
                    ["result"])
RATE_LIMITED = Counter("observer_rate_limited_total",
                       "Requests answered 429, by the limit that refused them (scope: key, ip, key_events, "
                       "ip_events, key_sessions, ip_sessions, lookup)", ["scope"])
RATELIMIT_FALLBACK = Counter("observer_ratelimit_fallback_total",
                             "Limit checks counted in process memory because the rate-limit Redis was unreachable")
CH_INSERT_ROWS = Counter("observer_clickhouse_rows_total", "Rows inserted into ClickHouse, by table", ["table"])
CH_INSERT_SECONDS = Histogram("observer_clickhouse_insert_seconds", "ClickHouse INSERT latency by table, seconds",
                              ["table"])
CH_ERRORS = Counter("observer_clickhouse_errors_total", "ClickHouse call failures, by operation", ["op"])
EVENTS_DUPLICATE = Counter("observer_events_duplicate_total",
                           "Events dropped before storage because another batch owns them within the dedup window")
BATCHES_DUPLICATE = Counter("observer_batches_duplicate_total",
                            "Redelivered batches recognised by their marker, by pipeline step", ["step"])
SESSIONS_FINALIZED = Counter("observer_sessions_finalized_total", "Session versions claimed by the sweep")
FORWARD_RESULTS = Counter("observer_forward_attempts_total",
                          "UFSE delivery attempts, by destination ('default' is UFSE_URL, else the project) and "
                          "outcome (delivered, retry, permanent)", ["destination", "outcome"])
FORWARD_LATENCY = Histogram("observer_forward_seconds", "UFSE request latency by destination, seconds", ["destination"],
                            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
DESTINATION_STATE = Gauge("observer_destination_state",
                          "State of each delivery destination: 0 healthy, 1 circuit open, 2 disabled (deliveries "
                          "parked until `destinations enable`); sampled at each /metrics scrape", ["destination"],
                          multiprocess_mode="livemostrecent")
DESTINATION_BACKLOG = Gauge("observer_destination_backlog",
                            "Deliveries parked for a disabled destination; sampled at each /metrics scrape",
                            ["destination"], multiprocess_mode="livemostrecent")
DESTINATION_BACKLOG_AGE = Gauge("observer_destination_backlog_oldest_seconds",
                                "Age of the oldest delivery parked for a disabled destination, seconds; sampled at "
                                "each /metrics scrape", ["destination"], multiprocess_mode="livemostrecent")
DESTINATIONS_DISABLED = Counter("observer_destinations_disabled_total",
                                "Destinations disabled after DESTINATION_DISABLE_AFTER without a success",
                                ["destination"])
DEAD_LETTERS = Counter("observer_dead_letters_total",
                       "Dead letters written, by kind (undeliverable_forward, poison_batch)", ["kind"])
TASK_FAILURES = Counter("observer_task_failures_total", "Task failures, by task name", ["task"])
FLUSH_SPLITS = Counter("observer_flush_splits_total", "Events flushes split to isolate a batch ClickHouse refused")
EVENTS_PARKED = Counter("observer_events_parked_total", "Refused batches parked for a later retry")
EVENTS_PAUSES = Counter("observer_events_pauses_total", "Pauses of an events worker while storage was unavailable")
FLUSH_LOST = Counter("observer_flush_lost_total", "Flushes whose pool child died; their messages were requeued at once")
BROKER_RESTORES = Counter("observer_broker_restores_total",
                          "Unacked messages the Redis broker restored after the visibility timeout (after a crash: the "
                          "recovery; otherwise a message waited too long)")
JOURNAL_REPUBLISHED = Counter("observer_journal_republished_total",
                              "Accepted batches re-published from the ingest journal (lost by the broker)")
FORWARD_PARKED = Counter("observer_forward_parked_total",
                         "UFSE deliveries parked in the due-time index, by reason (retry, circuit, storage)",
                         ["reason"])
DUE_REPUBLISHED = Counter("observer_due_republished_total",
                          "Parked retries re-published by the sweep, by index (events, forward)", ["index"])
KEY_CACHE_STALE = Counter("observer_key_cache_stale_total",
                          "Keys served from an expired cache entry while PostgreSQL was unreachable")
RETENTION_LAST_SUCCESS = Gauge("observer_retention_last_success_timestamp",
                               "Epoch seconds of the last retention run that finished (retention run, beat daily)",
                               multiprocess_mode="max")
RETENTION_BYTES = Counter("observer_retention_bytes_dropped_total",
                          "Bytes on disk of the ClickHouse partitions the retention job dropped, by table", ["table"])
RETENTION_PARTITIONS = Counter("observer_retention_partitions_dropped_total",
                               "ClickHouse partitions the retention job dropped, by table", ["table"])
SWEEP_LAST = Gauge("observer_beat_last_sweep_timestamp",
                   "Epoch seconds of the last finished maintenance sweep (alert when it stops moving)",
                   multiprocess_mode="max")
STALLED = Gauge("observer_worker_stalled",
                "1 when a worker holds messages and made no progress for the visibility timeout (/ready lists it under "
                "workers)", ["worker"], multiprocess_mode="max")
DUE_PARKED = Gauge("observer_due_parked",
                   "Retries parked in the due-time index, by index (events, forward); sampled at each /metrics scrape",
                   ["index"], multiprocess_mode="livemostrecent")
QUEUE_DEPTH = Gauge("observer_queue_depth",
                    "Messages waiting in each queue (events, sessions, forward, maintenance); sampled at each /metrics "
                    "scrape", ["queue"], multiprocess_mode="livemostrecent")
LIVE_SESSIONS = Gauge("observer_live_sessions",
                      "Live sessions awaiting finalization (entries of every idle-index bucket); sampled at each "
                      "/metrics scrape", multiprocess_mode="livemostrecent")

# Ages and sizes sampled at each /metrics scrape (app/observability/queues.py), for the alert rules
# in monitoring/prometheus/alerts.yml. "livemostrecent": a scrape lands on one gunicorn worker,
# which sets the value; the other workers' values are older samples, and the newest must win
# (with "livemax" a backlog's old high value outlived its end until each worker was scraped).
INGEST_OLDEST_UNSTORED = Gauge("observer_ingest_oldest_unstored_seconds",
                               "Age of the oldest accepted batch not yet stored and counted into its sessions (the "
                               "ingest journal's oldest entry: since the API accepted it, or since the sweep last "
                               "re-published it as lost), seconds; 0 with RabbitMQ (no journal); sampled at each "
                               "/metrics scrape", multiprocess_mode="livemostrecent")
FORWARD_OLDEST_UNDELIVERED = Gauge("observer_forward_oldest_undelivered_seconds",
                                   "Age since its claim of the oldest session version claimed and not yet delivered "
                                   "or dead-lettered, seconds: the claim time of the 8 outbox entries per idle-index "
                                   "bucket re-enqueued longest ago (exact while a bucket holds at most 8, else a lower "
                                   "bound); sampled at each /metrics scrape", multiprocess_mode="livemostrecent")
BROKER_MEMORY_USED = Gauge("observer_broker_memory_used_bytes",
                           "The Redis broker's used_memory (INFO memory), bytes; 0 with RabbitMQ (not sampled); "
                           "sampled at each /metrics scrape", multiprocess_mode="livemostrecent")
BROKER_MEMORY_MAX = Gauge("observer_broker_memory_max_bytes",
                          "The Redis broker's maxmemory, bytes (0: no limit set); the API answers 503 above "
                          "BROKER_MEMORY_LIMIT of it; 0 with RabbitMQ (not sampled); sampled at each /metrics scrape",
                          multiprocess_mode="livemostrecent")
DELETION_OLDEST_OPEN = Gauge("observer_deletion_oldest_open_seconds",
                             "Age of the oldest deletion request not yet verified (PostgreSQL deletion_requests), "
                             "seconds; 0 when none is open; sampled at each /metrics scrape",
                             multiprocess_mode="livemostrecent")

CLIENT_DROPPED = Counter("observer_client_dropped_total",
                         "Events the SDKs dropped in the browser, from their client reports (each report counted "
                         "once), by reason: queue_full, store_full, oversize, too_large, expired, rejected, refused, "
                         "rate_limited, opt_out, sampled, other", ["reason"])
EVENTS_RECEIVED = Counter("observer_events_received_total",
                          "Events in requests with a valid key and a readable body: accepted + rejected + "
                          "rate_limited + suppressed")


def render() -> bytes:
    """The exposition text for this process (or all processes in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)

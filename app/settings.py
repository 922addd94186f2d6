"""Every Observer setting, typed, defaulted and validated in one place.

Precedence: defaults < optional env file (``OBSERVER_ENV_FILE``, else ``./var/observer.env``
when present, written by ``make run``) < process environment < explicit overrides (tests).
A missing or nonsensical value stops start-up with a message naming the variable.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A setting is missing or has a value that makes no sense."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_RATE = re.compile(r"^\d+\s*/\s*(second|minute|hour|day)s?$|^\d+ per \d* ?(second|minute|hour|day)s?$")


def env_int(name: str, raw: str, minimum: int = 0) -> int:
    """Parse an integer setting, at least ``minimum``."""
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
    return value


def env_float(name: str, raw: str, minimum: float = 0.0) -> float:
    """Parse a number of seconds (or any float), at least ``minimum``."""
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
    return value


def env_bool(name: str, raw: str) -> bool:
    """Parse a boolean; anything but the known spellings (e.g. 'ture') is an error."""
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}: expected one of 1/0/true/false/yes/no/on/off, got {raw!r}")


def env_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    """Check that a URL uses one of ``schemes``."""
    scheme = urlparse(raw).scheme
    if scheme not in schemes:
        raise ConfigError(f"{name}: expected a URL with scheme {'/'.join(schemes)}, got {raw!r}")
    return raw


def env_rate(name: str, raw: str) -> str:
    """Check a rate limit such as '100/second' (flask-limiter notation)."""
    if not _RATE.match(raw.strip()):
        raise ConfigError(f"{name}: expected a rate like '100/second', got {raw!r}")
    return raw.strip()


def env_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    """Check that a value is one of ``choices``."""
    if raw not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def env_list(name: str, raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _redis(n: str, r: str) -> str:
    return env_url(n, r, ("redis", "rediss", "unix"))


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def _redis_or_cluster(n: str, r: str) -> str:
    """A Redis URL, or a Redis Cluster's ``redis+cluster://host:port[,host:port...]``."""
    return env_url(n, r, ("redis", "rediss", "unix") + CLUSTER_SCHEMES)


def _pos(n: str, r: str) -> int:
    return env_int(n, r, 1)


def _secs(n: str, r: str) -> float:
    return env_float(n, r, 0.001)


def _str(n: str, r: str) -> str:
    return r


def _schedule(n: str, r: str) -> tuple[float, ...]:
    """A comma-separated list of positive delays in seconds (at least one)."""
    items = env_list(n, r)
    if not items:
        raise ConfigError(f"{n}: expected comma-separated seconds, got {r!r}")
    return tuple(env_float(n, item, 0.001) for item in items)


# name -> (default, parser, one-line meaning). Defaults of ``None`` derive from another setting.
SPEC: dict[str, tuple[str | None, Callable[[str, str], Any], str]] = {
    "PORT": ("8000", _pos, "HTTP port of the web process"),
    "REDIS_URL": ("redis://127.0.0.1:6379/0", _redis_or_cluster, "default Redis for every role below"),
    "CELERY_BROKER_URL": (None, lambda n, r: env_url(n, r, ("redis", "rediss", "amqp", "amqps", "pyamqp")),
                          "Celery broker (defaults to REDIS_URL; amqp:// works)"),
    "SESSIONS_REDIS_URL": (None, _redis_or_cluster,
                           "Redis holding live session state (defaults to REDIS_URL); a Redis Cluster as "
                           "redis+cluster://host:port,host:port"),
    "RATELIMIT_REDIS_URL": (None, _redis_or_cluster,
                            "Redis for rate-limit counters (defaults to REDIS_URL); a Redis Cluster as "
                            "redis+cluster://host:port,host:port"),
    "REDIS_KEY_PREFIX": ("obs:", _str, "prefix of every non-broker Redis key"),
    "DATABASE_URL": ("postgresql://postgres@127.0.0.1:5432/observer",
                     lambda n, r: env_url(n, r, ("postgresql", "postgres")),
                     "PostgreSQL for projects, keys, dead letters"),
    "DATABASE_POOL_MAX": ("10", _pos, "max pooled PostgreSQL connections per process"),
    "CLICKHOUSE_URL": ("clickhouse://default:@127.0.0.1:9000/observer",
                       lambda n, r: env_url(n, r, ("clickhouse", "chdb")),
                       "clickhouse://user:pass@host:9000/db (server) or chdb:///path (embedded)"),
    "CLICKHOUSE_POOL_SIZE": ("8", _pos, "max pooled native connections per process"),
    "CLICKHOUSE_CLUSTER": ("", _str, "cluster name for DDL ON CLUSTER + Replicated tables (empty = single node)"),
    "CLICKHOUSE_TTL_DAYS": ("90", lambda n, r: env_int(n, r, 0), "event retention where the server has TTL (0 = keep)"),
    "UFSE_URL": ("", _str, "where finished sessions are POSTed (empty: forwards are dead-lettered)"),
    "UFSE_SECRET": ("", _str, "Standard Webhooks secret, whsec_<base64>"),
    "UFSE_TIMEOUT": ("10", _secs, "seconds per UFSE request"),
    "SESSION_IDLE_TIMEOUT": ("1800", _pos, "seconds of inactivity that finalize a session"),
    "SESSION_MAX_DURATION": ("86400", _pos, "seconds after which a session is finalized anyway"),
    "SESSION_SWEEP_INTERVAL": ("5", _secs, "seconds between beat sweeps for idle sessions"),
    "SESSION_BUCKETS": ("16", _pos, "idle-index buckets (hash tags) for Redis Cluster spread"),
    "SESSION_CLAIM_BATCH": ("500", _pos, "max sessions claimed per bucket per sweep"),
    "FORWARD_RETRY_SCHEDULE": ("5,300,1800,7200,18000,36000,36000", _schedule,
                               "seconds before each UFSE retry (jittered, scaled by RETRY_TIME_SCALE; ~27.6 h in all), "
                               "then dead letter"),
    "FORWARD_CIRCUIT_THRESHOLD": ("5", _pos, "consecutive retryable UFSE failures that open the destination's circuit"),
    "FORWARD_CIRCUIT_MAX": ("60", _secs,
                            "longest pause between probes of an open UFSE circuit, seconds (bounds the wait after "
                            "UFSE is back)"),
    "FORWARD_DRAIN_RATE": ("20", _pos, "parked forwards released per second once UFSE answers again"),
    "FORWARD_VISIBILITY_RETRIES": ("30", _pos, "times a forward waits for ClickHouse to show all counted batches"),
    "FORWARD_MAX_EVENTS": ("5000", _pos, "events per UFSE payload (more sets truncated=true)"),
    "FORWARD_MAX_REQUEST_IDS": ("100", _pos, "request ids listed per UFSE payload"),
    "FORWARD_OUTBOX_STALE": ("120", _secs,
                             "seconds after which a claimed, unforwarded session is re-enqueued (a lost forward "
                             "message costs this long)"),
    "EVENTS_FLUSH_EVERY": ("500", _pos, "events tasks buffered before one ClickHouse INSERT"),
    "EVENTS_FLUSH_INTERVAL": ("1", _secs, "max seconds a buffered events task waits for its INSERT"),
    "EVENTS_RETRY_SCHEDULE": ("60,300,900,3600", _schedule,
                              "seconds before each retry of a batch ClickHouse rejects as data (scaled; ~1.4 h), then "
                              "poison_batch"),
    "EVENTS_PAUSE_MAX": ("30", _secs,
                         "longest pause of the events worker between probes while ClickHouse is unavailable"),
    "CLICKHOUSE_TIMEOUT": ("20", _secs,
                           "seconds a ClickHouse call may take (bounded well under the visibility timeout)"),
    "SESSIONS_RETRY_MAX": ("30", _secs,
                           "cap of a sessions.update retry countdown, seconds (held by the worker, so < visibility "
                           "timeout)"),
    "BATCH_MARKER_TTL": ("900", _pos,
                         "seconds a (batch, session) counted-marker is kept in Redis: the redelivery window of a "
                         "message (visibility timeout, journal re-publish); later redeliveries are recognized from "
                         "ClickHouse's session_batches"),
    "DEDUP_WINDOW": ("86400", _pos,
                     "seconds within which an event_id of a project counts once, whichever batch carries it"),
    "RETRY_TIME_SCALE": ("1", lambda n, r: env_float(n, r, 0.0001),
                         "multiplies every retry delay (tests compress hours with e.g. 0.01); not the visibility "
                         "timeout"),
    "BROKER_VISIBILITY_TIMEOUT": ("60", _pos,
                                  "seconds before a Redis-broker message held by a dead worker is redelivered"),
    "JOURNAL_GRACE": ("90", _secs,
                      "seconds after which an accepted batch not yet counted, with the queues empty, is re-published "
                      "from the ingest journal"),
    "BROKER_MEMORY_LIMIT": ("0.9", lambda n, r: env_float(n, r, 0.1),
                            "fraction of the Redis broker's maxmemory above which the API answers 503 (the rest is the "
                            "workers' headroom)"),
    "BROKER_SOCKET_TIMEOUT": ("5", _secs,
                              "socket timeout of broker connections (a half-open broker never hangs a request)"),
    "BEAT_STALE_AFTER": ("60", _secs, "seconds without a finished sweep after which /ready reports beat as down"),
    "MAX_BODY_BYTES": ("1048576", _pos, "request body limit, before and after gzip"),
    "MAX_BODY_DRAIN": ("16777216", lambda n, r: env_int(n, r, 0),
                       "bytes of an over-limit body read and discarded so the client can read its 413"),
    "MAX_EVENTS_PER_REQUEST": ("1000", _pos, "events per request"),
    "MAX_EVENT_BYTES": ("10240", _pos, "serialized bytes per event"),
    "TIMESTAMP_MAX_PAST": ("604800", _pos, "seconds an event timestamp may lie before received_at"),
    "TIMESTAMP_MAX_FUTURE": ("3600", _pos, "seconds an event timestamp may lie after received_at"),
    "KEY_CACHE_TTL": ("30", _secs, "seconds a key lookup (hit or miss) is cached per web process"),
    "KEY_CACHE_STALE_MAX": ("3600", lambda n, r: env_float(n, r, 0.0),
                            "seconds a known key keeps working from the cache while PostgreSQL is unreachable (0 = "
                            "never)"),
    "KEY_ROTATE_GRACE": ("86400", _pos, "seconds an old key stays valid after rotate"),
    "RATE_LIMIT_DEFAULT": ("200/second", env_rate, "requests per key unless the key has its own"),
    "RATE_LIMIT_PER_IP": ("50/second", env_rate, "requests per client IP per key"),
    "RATELIMIT_FAIL_OPEN": ("true", env_bool, "accept traffic when the limiter's Redis is down"),
    "TRUSTED_PROXY_COUNT": ("0", lambda n, r: env_int(n, r, 0),
                            "proxies in front of the web tier (X-Forwarded-For hops to trust)"),
    "SENSITIVE_QUERY_PARAMS": ("", env_list, "extra query parameter names whose values are masked"),
    "CORS_MAX_AGE": ("600", lambda n, r: env_int(n, r, 0), "seconds browsers may cache a preflight"),
    "LOG_LEVEL": ("INFO", lambda n, r: env_choice(n, r.upper(), ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
                  "log level of web and workers (takes precedence over celery --loglevel)"),
    "LOG_FORMAT": ("json", lambda n, r: env_choice(n, r, ("json", "text")), "json (production) or text"),
    "SENTRY_DSN": ("", _str, "Sentry DSN; empty disables Sentry"),
    "WORKER_METRICS_PORT": ("0", lambda n, r: env_int(n, r, 0), "port where a Celery worker serves /metrics (0 = off)"),
    "OBSERVER_ENV": ("production", _str, "environment name in logs and Sentry"),
}


@dataclass(frozen=True)
class Settings:
    """Validated settings: one typed attribute per SPEC entry, named as its variable in lowercase.

    The attributes follow SPEC's order and its parsers' types (tests/unit/core/test_settings.py
    keeps the two equal), so a type checker sees ``settings.broker_visibility_timeout: int``.
    """

    port: int
    redis_url: str
    celery_broker_url: str
    sessions_redis_url: str
    ratelimit_redis_url: str
    redis_key_prefix: str
    database_url: str
    database_pool_max: int
    clickhouse_url: str
    clickhouse_pool_size: int
    clickhouse_cluster: str
    clickhouse_ttl_days: int
    ufse_url: str
    ufse_secret: str
    ufse_timeout: float
    session_idle_timeout: int
    session_max_duration: int
    session_sweep_interval: float
    session_buckets: int
    session_claim_batch: int
    forward_retry_schedule: tuple[float, ...]
    forward_circuit_threshold: int
    forward_circuit_max: float
    forward_drain_rate: int
    forward_visibility_retries: int
    forward_max_events: int
    forward_max_request_ids: int
    forward_outbox_stale: float
    events_flush_every: int
    events_flush_interval: float
    events_retry_schedule: tuple[float, ...]
    events_pause_max: float
    clickhouse_timeout: float
    sessions_retry_max: float
    batch_marker_ttl: int
    dedup_window: int
    retry_time_scale: float
    broker_visibility_timeout: int
    journal_grace: float
    broker_memory_limit: float
    broker_socket_timeout: float
    beat_stale_after: float
    max_body_bytes: int
    max_body_drain: int
    max_events_per_request: int
    max_event_bytes: int
    timestamp_max_past: int
    timestamp_max_future: int
    key_cache_ttl: float
    key_cache_stale_max: float
    key_rotate_grace: int
    rate_limit_default: str
    rate_limit_per_ip: str
    ratelimit_fail_open: bool
    trusted_proxy_count: int
    sensitive_query_params: tuple[str, ...]
    cors_max_age: int
    log_level: str
    log_format: str
    sentry_dsn: str
    worker_metrics_port: int
    observer_env: str

    def __getitem__(self, item: str) -> Any:
        """The value of a setting by its variable name (``settings["PORT"]``)."""
        if item not in SPEC:
            raise KeyError(item)
        return getattr(self, item.lower())

    @property
    def chdb_path(self) -> str | None:
        """Data directory when CLICKHOUSE_URL is ``chdb:///path``, else None."""
        parsed = urlparse(self.clickhouse_url)
        return parsed.path if parsed.scheme == "chdb" else None


def read_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines (blank lines and # comments ignored)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def _sources(environ: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    file_name = environ.get("OBSERVER_ENV_FILE")
    path = Path(file_name) if file_name else Path("var/observer.env")
    if file_name and not path.is_file():
        raise ConfigError(f"OBSERVER_ENV_FILE: no such file {file_name!r}")
    if path.is_file():
        merged.update(read_env_file(path))
    merged.update({k: v for k, v in environ.items() if k in SPEC})
    return merged


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build validated settings from the env file, the environment and overrides."""
    raw = _sources(os.environ if environ is None else environ)
    raw.update({k: str(v) for k, v in (overrides or {}).items()})
    unknown = set(overrides or {}) - set(SPEC)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, (default, parse, _doc) in SPEC.items():
        text = raw.get(name, default)
        if text is None:
            continue
        values[name] = parse(name, text)
    for derived in ("CELERY_BROKER_URL", "SESSIONS_REDIS_URL", "RATELIMIT_REDIS_URL"):
        if derived not in values:
            values[derived] = values["REDIS_URL"]
    _cross_check(values)
    return Settings(**{name.lower(): value for name, value in values.items()})


def _cross_check(v: dict[str, Any]) -> None:
    if v["CELERY_BROKER_URL"].startswith(CLUSTER_SCHEMES):
        # kombu has no Redis Cluster transport (kombu #526): SELECT and MOVED break it.
        raise ConfigError("CELERY_BROKER_URL: a Redis Cluster cannot be Celery's broker; use RabbitMQ "
                          "(amqp://) or one Redis (set CELERY_BROKER_URL when REDIS_URL is a cluster)")
    if v["UFSE_URL"]:
        env_url("UFSE_URL", v["UFSE_URL"], ("http", "https"))
        if not v["UFSE_SECRET"].startswith("whsec_"):
            raise ConfigError("UFSE_SECRET: required when UFSE_URL is set, format whsec_<base64>")
        from app.forwarding.signing import decode_secret

        try:
            decode_secret(v["UFSE_SECRET"])
        except ValueError as exc:
            raise ConfigError(f"UFSE_SECRET: {exc}") from None
    if v["SESSION_MAX_DURATION"] < v["SESSION_IDLE_TIMEOUT"]:
        raise ConfigError("SESSION_MAX_DURATION: must be >= SESSION_IDLE_TIMEOUT")
    # Nothing may wait unacked on a live worker longer than the visibility timeout, or the
    # Redis broker hands it to a second worker while the first still holds it. The longest
    # waits are: a countdown retry of sessions.update; a buffered events message held while
    # ClickHouse is paused (half the timeout); a flush (interval + its budget, half the timeout
    # less the interval, + the one ClickHouse call that may start just before the budget ends).
    # Longer waits (UFSE and data-error retries) live in the due-time index, not in messages.
    vt = v["BROKER_VISIBILITY_TIMEOUT"]
    if vt < 2 * v["SESSIONS_RETRY_MAX"]:
        raise ConfigError("BROKER_VISIBILITY_TIMEOUT: must be at least twice SESSIONS_RETRY_MAX")
    if vt < 2 * (v["EVENTS_FLUSH_INTERVAL"] + v["CLICKHOUSE_TIMEOUT"]):
        raise ConfigError("BROKER_VISIBILITY_TIMEOUT: must be at least twice "
                          "EVENTS_FLUSH_INTERVAL + CLICKHOUSE_TIMEOUT")
    if v["JOURNAL_GRACE"] < 1.5 * vt:
        # Younger entries may still be held by a worker or await their restore (an older one
        # that is merely slow is published twice, which dedup absorbs; one that is lost is not).
        raise ConfigError("JOURNAL_GRACE: must be at least 1.5 x BROKER_VISIBILITY_TIMEOUT")
    if vt < 2 * v["BROKER_SOCKET_TIMEOUT"]:
        raise ConfigError("BROKER_VISIBILITY_TIMEOUT: must be at least twice BROKER_SOCKET_TIMEOUT")
    if v["BATCH_MARKER_TTL"] < v["JOURNAL_GRACE"] + 2 * vt:
        # A restored message comes back within about the visibility timeout, a lost one from the
        # journal after its grace: the marker must still be there (ClickHouse answers later ones).
        raise ConfigError("BATCH_MARKER_TTL: must be at least JOURNAL_GRACE + 2 x BROKER_VISIBILITY_TIMEOUT")


def settings_table() -> list[tuple[str, str, str]]:
    """(name, default, meaning) rows for the README's configuration table."""
    return [(name, default if default is not None else "REDIS_URL", doc) for name, (default, _p, doc) in SPEC.items()]


__all__ = ["ConfigError", "Settings", "load_settings", "settings_table", "SPEC"]

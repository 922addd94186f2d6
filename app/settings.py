"""Every Observer setting, typed, defaulted and validated in one place.

Precedence: defaults < optional env file (``OBSERVER_ENV_FILE``, else ``./var/observer.env``
when present, written by ``make run``) < process environment < explicit overrides (tests).
A missing or nonsensical value stops start-up with a message naming the variable.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
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
    """Check a rate limit such as '100/second' (the limits library's notation)."""
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


def _networks(n: str, r: str) -> tuple[str, ...]:
    """Comma-separated CIDR networks (``10.1.0.0/16``, ``fd00::/8``), normalised."""
    import ipaddress

    try:
        return tuple(str(ipaddress.ip_network(item, strict=False)) for item in env_list(n, r))
    except ValueError as exc:
        raise ConfigError(f"{n}: {exc}") from None


def _setting(default: str | None, parse: Callable[[str, str], Any], doc: str) -> Any:
    """One setting: its default (as the environment would spell it; None derives from REDIS_URL),
    the parser that checks and converts it, and its one-line meaning for the configuration table."""
    return field(metadata={"default": default, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every setting once: an attribute per variable (named as it in lowercase), its type, its
    default, parser and meaning. Values other settings imply are properties, not settings."""

    port: int = _setting("8000", _pos, "HTTP port of the web process")
    # The operator listener: gunicorn binds it beside PORT (OPERATOR_HOST, 127.0.0.1 by default);
    # /ready and /metrics answer there only, never on the public PORT.
    operator_port: int = _setting("8001", _pos,
            "port of the web process's operator listener, the only one serving /ready and /metrics "
            "(bound to OPERATOR_HOST)")
    ready_timeout: float = _setting("2", _secs,
            "seconds /ready waits for its checks together (run at once); one still running is reported "
            "failed")
    redis_url: str = _setting("redis://127.0.0.1:6379/0", _redis_or_cluster, "default Redis for every role below")
    celery_broker_url: str = _setting(None, lambda n, r: env_url(n, r, ("redis", "rediss", "amqp", "amqps", "pyamqp")),
            "Celery broker (defaults to REDIS_URL; amqp:// works)")
    sessions_redis_url: str = _setting(None, _redis_or_cluster,
            "Redis holding live session state (defaults to REDIS_URL); a Redis Cluster as "
            "redis+cluster://host:port,host:port")
    ratelimit_redis_url: str = _setting(None, _redis_or_cluster,
            "Redis for rate-limit counters (defaults to REDIS_URL); a Redis Cluster as "
            "redis+cluster://host:port,host:port")
    redis_key_prefix: str = _setting("obs:", _str, "prefix of every non-broker Redis key")
    database_url: str = _setting("postgresql://postgres@127.0.0.1:5432/observer",
            lambda n, r: env_url(n, r, ("postgresql", "postgres")),
            "PostgreSQL for projects, keys, dead letters")
    database_pool_max: int = _setting("10", _pos, "max pooled PostgreSQL connections per process")
    clickhouse_url: str = _setting("clickhouse://default:@127.0.0.1:9000/observer",
            lambda n, r: env_url(n, r, ("clickhouse", "chdb")),
            "clickhouse://user:pass@host:9000/db (server) or chdb:///path (embedded)")
    clickhouse_pool_size: int = _setting("8", _pos, "max pooled native connections per process")
    clickhouse_cluster: str = _setting("", _str,
            "cluster name for DDL ON CLUSTER + Replicated tables (empty = single node)")
    retention_days: int = _setting("90", _pos,
            "days events are kept (whole partitions dropped by the daily retention job); a project's "
            "override: flask projects set P --retention-days N")
    dead_letter_retention_days: int = _setting("30", _pos, "days dead letters are kept (deleted by the retention job)")
    ufse_url: str = _setting("", _str, "where finished sessions are POSTed (empty: forwards are dead-lettered)")
    ufse_secret: str = _setting("", _str,
            "Standard Webhooks secret(s), whsec_<base64>; several, space-separated, sign every attempt "
            "with each (rotation: a receiver verifying with either accepts it)")
    ufse_timeout: float = _setting("10", _secs, "seconds per UFSE request")
    session_idle_timeout: int = _setting("1800", _pos, "seconds of inactivity that finalize a session")
    session_max_duration: int = _setting("86400", _pos, "seconds after which a session is finalized anyway")
    session_sweep_interval: float = _setting("5", _secs, "seconds between beat sweeps for idle sessions")
    forward_retry_schedule: tuple[float, ...] = _setting("5,300,1800,7200,18000,36000,36000", _schedule,
            "seconds before each UFSE retry (jittered, scaled by RETRY_TIME_SCALE; ~27.6 h in all), "
            "then dead letter")
    forward_circuit_threshold: int = _setting("5", _pos,
            "consecutive retryable UFSE failures that open the destination's circuit")
    forward_circuit_max: float = _setting("60", _secs,
            "longest pause between probes of an open UFSE circuit, seconds (bounds the wait after "
            "UFSE is back)")
    forward_drain_rate: int = _setting("20", _pos, "parked forwards released per second once UFSE answers again")
    secret_rotation_overlap: float = _setting("86400", _secs,
            "seconds a project destination's old secret keeps signing after `destinations rotate`")
    destination_disable_after: float = _setting("432000", _secs,
            "seconds a project destination may fail without one success before it is disabled: its "
            "deliveries are parked (never dead-lettered) until `destinations enable` (scaled by "
            "RETRY_TIME_SCALE)")
    destinations_allowed_networks: tuple[str, ...] = _setting("", _networks,
            "networks (CIDR, comma-separated) a project destination may resolve to although private, "
            "loopback or link-local (the SSRF guard refuses those otherwise; UFSE_URL is trusted)")
    forward_max_events: int = _setting("5000", _pos, "events per UFSE payload (more sets truncated=true)")
    forward_max_request_ids: int = _setting("100", _pos, "request ids listed per UFSE payload")
    events_flush_every: int = _setting("500", _pos, "events tasks buffered before one ClickHouse INSERT")
    events_flush_interval: float = _setting("1", _secs, "max seconds a buffered events task waits for its INSERT")
    events_retry_schedule: tuple[float, ...] = _setting("60,300,900,3600", _schedule,
            "seconds before each retry of a batch ClickHouse rejects as data (scaled; ~1.4 h), then "
            "poison_batch")
    clickhouse_timeout: float = _setting("20", _secs,
            "seconds a ClickHouse call may take (bounded well under the visibility timeout)")
    dedup_window: int = _setting("86400", _pos,
            "seconds within which an event_id of a project counts once, whichever batch carries it")
    retry_time_scale: float = _setting("1", lambda n, r: env_float(n, r, 0.0001),
            "multiplies every retry delay (tests compress hours with e.g. 0.01); not the visibility "
            "timeout")
    broker_visibility_timeout: int = _setting("60", _pos,
            "seconds before a Redis-broker message held by a dead worker is redelivered")
    broker_memory_limit: float = _setting("0.9", lambda n, r: env_float(n, r, 0.1),
            "fraction of the Redis broker's maxmemory above which the API answers 503 (the rest is the "
            "workers' headroom)")
    broker_socket_timeout: float = _setting("5", _secs,
            "socket timeout of broker connections (a half-open broker never hangs a request)")
    max_body_bytes: int = _setting("1048576", _pos, "request body limit, before and after gzip")
    max_events_per_request: int = _setting("1000", _pos, "events per request")
    max_event_bytes: int = _setting("10240", _pos, "serialized bytes per event")
    timestamp_max_past: int = _setting("604800", _pos, "seconds an event timestamp may lie before received_at")
    timestamp_max_future: int = _setting("3600", _pos, "seconds an event timestamp may lie after received_at")
    key_cache_ttl: float = _setting("30", _secs, "seconds a key lookup (hit or miss) is cached per web process")
    key_cache_stale_max: float = _setting("3600", lambda n, r: env_float(n, r, 0.0),
            "seconds a known key keeps working from the cache while PostgreSQL is unreachable (0 = "
            "never)")
    key_rotate_grace: int = _setting("86400", _pos, "seconds an old key stays valid after rotate")
    rate_limit_default: str = _setting("200/second", env_rate, "requests per key unless the key has its own")
    rate_limit_per_ip: str = _setting("50/second", env_rate, "requests per client IP per key")
    ratelimit_fail_open: bool = _setting("true", env_bool, "accept traffic when the limiter's Redis is down")
    event_rate_limit: str = _setting("10000/second", env_rate, "accepted events per key")
    event_rate_limit_per_ip: str = _setting("2000/second", env_rate, "accepted events per client IP per key")
    session_rate_limit: str = _setting("100/second", env_rate,
                                       "new sessions per key (a session id unseen for SESSION_IDLE_TIMEOUT)")
    session_rate_limit_per_ip: str = _setting("20/second", env_rate, "new sessions per client IP per key")
    key_lookup_rate_per_ip: str = _setting("60/minute", env_rate,
                                           "key lookups per client IP that reach PostgreSQL (uncached keys)")
    trusted_proxy_count: int = _setting("0", lambda n, r: env_int(n, r, 0),
            "proxies in front of the web tier (X-Forwarded-For hops to trust)")
    sensitive_query_params: tuple[str, ...] = _setting("", env_list,
            "extra query parameter names whose values are masked")
    log_level: str = _setting("INFO", lambda n, r: env_choice(n, r.upper(), ("DEBUG", "INFO", "WARNING", "ERROR",
            "CRITICAL")),
            "log level of web and workers (takes precedence over celery --loglevel)")
    log_format: str = _setting("json", lambda n, r: env_choice(n, r, ("json", "text")), "json (production) or text")
    sentry_dsn: str = _setting("", _str, "Sentry DSN; empty disables Sentry")
    worker_metrics_port: int = _setting("0", lambda n, r: env_int(n, r, 0),
            "port where a Celery worker serves /metrics (0 = off)")
    observer_env: str = _setting("production", _str, "environment name in logs and Sentry")

    def __getitem__(self, item: str) -> Any:
        """The value of a setting by its variable name (``settings["PORT"]``)."""
        if item not in SPEC and item not in DERIVED:
            raise KeyError(item)
        return getattr(self, item.lower())

    @property
    def chdb_path(self) -> str | None:
        """Data directory when CLICKHOUSE_URL is ``chdb:///path``, else None."""
        parsed = urlparse(self.clickhouse_url)
        return parsed.path if parsed.scheme == "chdb" else None

    # Timings the broker's visibility timeout implies. Nothing may wait unacked on a live worker
    # longer than it, or the Redis broker hands the message to a second worker meanwhile.
    @property
    def sessions_retry_max(self) -> float:
        """Cap of a held countdown retry (sessions.update, forward storage waits): half the
        visibility timeout."""
        return self.broker_visibility_timeout / 2

    @property
    def journal_grace(self) -> float:
        """Seconds before an accepted, uncounted batch is re-published from the ingest journal
        (queues empty): 1.5 x the visibility timeout. Younger entries may still be held by a
        worker or await their restore; one that is merely slow is published twice, which dedup
        absorbs."""
        return 1.5 * self.broker_visibility_timeout

    @property
    def batch_marker_ttl(self) -> int:
        """Seconds a (batch, session) counted-marker is kept once its session_batches row is
        written: a restored message comes back within about the visibility timeout, a lost one
        from the journal after its grace; later redeliveries are recognized from ClickHouse's
        session_batches. 15 x the timeout. Until written, a marker lives as long as a frozen
        snapshot (14 days), whatever the length of a storage outage."""
        return 15 * self.broker_visibility_timeout

    @property
    def beat_stale_after(self) -> float:
        """Seconds without a finished sweep after which /ready reports beat as down."""
        return max(60.0, 12 * self.session_sweep_interval)


SPEC: dict[str, tuple[str | None, Callable[[str, str], Any], str]] = {
    f.name.upper(): (f.metadata["default"], f.metadata["parse"], f.metadata["doc"]) for f in fields(Settings)
}
# Implied by other settings (properties above), shown in the configuration table as such.
# Settings that no longer exist, with what replaces them: set, they stop start-up with that message.
RETIRED = {
    "CLICKHOUSE_TTL_DAYS": "set RETENTION_DAYS instead (events now expire as whole partitions on every engine, "
                           "by the daily retention job; docs/OPERATIONS.md#retention)",
}
DERIVED = {
    "SESSIONS_RETRY_MAX": "BROKER_VISIBILITY_TIMEOUT / 2",
    "JOURNAL_GRACE": "1.5 x BROKER_VISIBILITY_TIMEOUT",
    "BATCH_MARKER_TTL": "15 x BROKER_VISIBILITY_TIMEOUT",
    "BEAT_STALE_AFTER": "max(60, 12 x SESSION_SWEEP_INTERVAL)",
}


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
    merged.update({k: v for k, v in environ.items() if k in SPEC or k in DERIVED or k in RETIRED})
    retired = sorted(set(merged) & set(RETIRED))
    if retired:
        raise ConfigError(f"{retired[0]}: retired; {RETIRED[retired[0]]}")
    derived = sorted(set(merged) & set(DERIVED))
    if derived:
        raise ConfigError(f"{derived[0]}: derived ({derived[0]} = {DERIVED[derived[0]]}), not settable; unset it")
    return merged


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build validated settings from the env file, the environment and overrides."""
    raw = _sources(os.environ if environ is None else environ)
    raw.update({k: str(v) for k, v in (overrides or {}).items()})
    unknown = set(overrides or {}) - set(SPEC)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return _build(raw)


def defaults() -> Settings:
    """Every setting at its default: no environment, no env file (what the tables and the
    benchmark compare against)."""
    return _build({})


def _build(raw: Mapping[str, str]) -> Settings:
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
            for secret in v["UFSE_SECRET"].split():
                decode_secret(secret)
        except ValueError as exc:
            raise ConfigError(f"UFSE_SECRET: {exc}") from None
    if v["SESSION_MAX_DURATION"] < v["SESSION_IDLE_TIMEOUT"]:
        raise ConfigError("SESSION_MAX_DURATION: must be >= SESSION_IDLE_TIMEOUT")
    # Nothing may wait unacked on a live worker longer than the visibility timeout, or the
    # Redis broker hands it to a second worker while the first still holds it. The countdown
    # retries are derived from it (Settings.sessions_retry_max); what remains to check: a
    # buffered events message held while ClickHouse is paused (half the timeout) and a flush
    # (interval + its budget, half the timeout less the interval, + the one ClickHouse call that
    # may start just before the budget ends). Longer waits (UFSE and data-error retries) live in
    # the due-time index, not in messages.
    vt = v["BROKER_VISIBILITY_TIMEOUT"]
    if vt < 2 * (v["EVENTS_FLUSH_INTERVAL"] + v["CLICKHOUSE_TIMEOUT"]):
        raise ConfigError("BROKER_VISIBILITY_TIMEOUT: must be at least twice "
                          "EVENTS_FLUSH_INTERVAL + CLICKHOUSE_TIMEOUT")
    if vt < 2 * v["BROKER_SOCKET_TIMEOUT"]:
        raise ConfigError("BROKER_VISIBILITY_TIMEOUT: must be at least twice BROKER_SOCKET_TIMEOUT")
    # Journal entries live DEDUP_WINDOW and are re-published once JOURNAL_GRACE (1.5 x the
    # visibility timeout) has passed: a shorter window drops them before the sweep may re-publish
    # them, and a re-published batch must still find its first copy's events to count once.
    if v["DEDUP_WINDOW"] < 2 * 1.5 * vt:
        raise ConfigError(f"DEDUP_WINDOW: must be at least twice JOURNAL_GRACE (1.5 x BROKER_VISIBILITY_TIMEOUT"
                          f" = {1.5 * vt:g} s), got {v['DEDUP_WINDOW']}")


__all__ = ["DERIVED", "SPEC", "ConfigError", "Settings", "defaults", "load_settings"]

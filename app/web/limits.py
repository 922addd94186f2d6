"""Every rate limit of an ingest request in one Redis round trip.

A request is counted against, per key and per client IP within the key: requests, accepted
events and new sessions (a session id this key has not sent within ``SESSION_IDLE_TIMEOUT``).
One Lua script reads every counter, refuses the request when any limit would be passed (then
nothing is counted), else adds the request's costs and refreshes the session markers. Counters
are fixed windows that start at their first hit (as flask-limiter's ``fixed-window``), so the
answer carries the same ``X-RateLimit-*`` headers and, on 429, ``Retry-After``.

Before PostgreSQL is asked about a key this process has not seen valid, ``allow_lookup`` counts
the lookup against a per-client-IP budget, so random keys cannot turn into a query each.

Keys (Redis Cluster: every key of one call shares a hash tag, ``{k<key id>}`` or ``{ip:<ip>}``):
  {p}rl:{k<id>}:<scope>            counters (``req``, ``ev``, ``ses``; ``ip:<ip>:...`` per client)
  {p}rl:{k<id>}:s:<session id>     a session seen lately (TTL SESSION_IDLE_TIMEOUT)
  {p}rl:{ip:<ip>}:lookup           key lookups that reached PostgreSQL

When the limiter's Redis is unreachable and ``RATELIMIT_FAIL_OPEN`` is on (the default), each
process counts requests and events in memory instead (new sessions are then not limited).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import limits
import redis
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from app.observability import metrics
from app.settings import Settings
from app.storage import lua, redis_clients, redis_keys

log = logging.getLogger(__name__)

_SCRIPT = "limits"  # app/web/limits.lua

# Scope -> what the 429 message counts.
_UNITS = {"key": "requests", "ip": "requests", "key_events": "events", "ip_events": "events",
          "key_sessions": "new sessions", "ip_sessions": "new sessions", "lookup": "key lookups"}


@dataclass(frozen=True)
class Verdict:
    """The outcome of one request's limits: the figures for the X-RateLimit-* headers."""

    allowed: bool
    scope: str
    limit: int
    remaining: int
    reset: int  # epoch seconds
    text: str  # e.g. "3 per 1 minute"

    @property
    def retry_after(self) -> int:
        return max(1, self.reset - int(time.time()))

    def headers(self) -> dict[str, str]:
        h = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
             "X-RateLimit-Reset": str(self.reset)}
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after)
        return h

    @property
    def message(self) -> str:
        unit = _UNITS.get(self.scope, "requests")
        what = self.text if unit == "requests" else f"{self.text} {unit}"
        return f"Rate limit exceeded ({what})."


def _parse(text: str) -> limits.RateLimitItem:
    return limits.parse(text)


def _ms(item: limits.RateLimitItem) -> int:
    return int(item.get_expiry() * 1000)


class IngestLimits:
    """The request/event/session limits and the key-lookup budget, on the rate-limit Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = redis_keys.ratelimit_prefix(settings.redis_key_prefix)
        url = settings.ratelimit_redis_url
        self.redis: Any
        if redis_clients.is_cluster(url):
            self.redis = redis_clients.client(url)
        else:
            # Short timeouts: this is on every request's path (flask-limiter's were the same).
            self.redis = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
                url, max_connections=64, socket_timeout=1, socket_connect_timeout=1, decode_responses=True))
        self.script = self.redis.register_script(lua.load(__file__, _SCRIPT))
        self.fail_open = settings.ratelimit_fail_open
        self._memory = FixedWindowRateLimiter(MemoryStorage())
        self._lock = threading.Lock()
        self._rates = {text: _parse(text) for text in {
            settings.rate_limit_default, settings.rate_limit_per_ip, settings.event_rate_limit,
            settings.event_rate_limit_per_ip, settings.session_rate_limit, settings.session_rate_limit_per_ip,
            settings.key_lookup_rate_per_ip}}

    def _rate(self, text: str) -> limits.RateLimitItem:
        item = self._rates.get(text)
        if item is None:  # a key's own limit
            with self._lock:
                item = self._rates[text] = _parse(text)
        return item

    def check(self, key_id: int, key_rate: str | None, ip: str, events: int, sessions: set[str]) -> Verdict:
        """Count one request of ``events`` accepted events over ``sessions``, or refuse it whole."""
        s = self.settings
        tag = f"{self.prefix}:{{k{key_id}}}:"
        checks = [  # (scope, counter key, rate text, cost; -1 = the request's new sessions)
            ("ip", f"{tag}ip:{ip}:req", s.rate_limit_per_ip, 1),
            ("key", f"{tag}req", key_rate or s.rate_limit_default, 1),
            ("ip_events", f"{tag}ip:{ip}:ev", s.event_rate_limit_per_ip, events),
            ("key_events", f"{tag}ev", s.event_rate_limit, events),
            ("ip_sessions", f"{tag}ip:{ip}:ses", s.session_rate_limit_per_ip, -1),
            ("key_sessions", f"{tag}ses", s.session_rate_limit, -1),
        ]
        items = [self._rate(text) for _scope, _key, text, _cost in checks]
        keys = [k for _scope, k, _text, _cost in checks] + [f"{tag}s:{sid}" for sid in sorted(sessions)]
        args: list[int] = [len(checks), s.session_idle_timeout]
        for (_scope, _key, _text, cost), item in zip(checks, items, strict=True):
            args += [cost, item.amount, _ms(item)]
        try:
            out = self.script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            return self._fallback(exc, [(scope, k, item, cost if cost >= 0 else 0)
                                        for (scope, k, _t, cost), item in zip(checks, items, strict=True)])
        now = time.time()
        over = bool(out[0])
        figures = []
        for i, (scope, _key, _text, _cost) in enumerate(checks):
            cost, count, ttl_ms = (int(x) for x in out[2 + 3 * i: 5 + 3 * i])
            item = items[i]
            reset = int(now + (ttl_ms if ttl_ms > 0 else _ms(item)) / 1000)
            figures.append((scope, item, cost, count, reset))
        return _verdict(over, figures)

    def _fallback(self, exc: BaseException, checks: list[tuple[str, str, limits.RateLimitItem, int]]) -> Verdict:
        if not self.fail_open:
            raise exc
        metrics.RATELIMIT_FALLBACK.inc()
        log.warning("rate-limit Redis unreachable; counting in memory",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
        figures = []
        over = False
        with self._lock:
            for _scope, key, item, cost in checks:
                if cost and not self._memory.test(item, key, cost=cost):
                    over = True
            for scope, key, item, cost in checks:
                if cost and not over:
                    self._memory.hit(item, key, cost=cost)
                stats = self._memory.get_window_stats(item, key)
                used = item.amount - stats.remaining
                figures.append((scope, item, cost, used, int(stats.reset_time)))
        return _verdict(over, figures)

    def allow_lookup(self, ip: str) -> Verdict:
        """Count one key lookup that will reach PostgreSQL for this client IP."""
        item = self._rate(self.settings.key_lookup_rate_per_ip)
        key = f"{self.prefix}:{{ip:{ip}}}:lookup"
        try:
            out = self.script(keys=[key], args=[1, 1, 1, item.amount, _ms(item)])
        except (redis.RedisError, OSError) as exc:
            return self._fallback(exc, [("lookup", key, item, 1)])
        reset = int(time.time() + (int(out[4]) if int(out[4]) > 0 else _ms(item)) / 1000)
        return _verdict(bool(out[0]), [("lookup", item, 1, int(out[3]), reset)])


def _verdict(over: bool, figures: list[tuple[str, limits.RateLimitItem, int, int, int]]) -> Verdict:
    """The refusing limit that frees last, else the key's request limit (the headers' figures)."""
    if over:
        refusing = [f for f in figures if f[2] > 0 and f[3] + f[2] > f[1].amount]
        scope, item, _cost, count, reset = max(refusing, key=lambda f: f[4])
        return Verdict(False, scope, item.amount, max(0, item.amount - count), reset, _text(item))
    main = next((f for f in figures if f[0] == "key"), figures[0])
    scope, item, _cost, count, reset = main
    return Verdict(True, scope, item.amount, max(0, item.amount - count), reset, _text(item))


def _text(item: limits.RateLimitItem) -> str:
    return str(item)  # "3 per 1 minute"


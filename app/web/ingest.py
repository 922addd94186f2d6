"""POST /v1/events: key -> origin -> rate limits -> validate -> scrub -> publish one message -> 202."""
from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request

from app.accounting import client_reports
from app.accounting import rejected as rejected_store
from app.broker import BrokerUnavailable
from app.deletion.suppress import suppressed as is_suppressed
from app.ingest.body import drain, read_json_body
from app.ingest.errors import NoAcceptableEvents, PayloadTooLarge
from app.ingest.message import batch_id_for, metadata_json
from app.ingest.privacy import scrub_event
from app.ingest.schemas import check_events, parse_batch
from app.keys.cache import KeyStoreUnavailable
from app.keys.model import KeyInfo, origin_or_raw
from app.observability import metrics
from app.web.errors import ApiError
from app.web.limits import Verdict

if TYPE_CHECKING:
    from app.web.factory import Runtime

log = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

CORS_ALLOW_HEADERS = "Content-Type, Content-Encoding, Authorization, X-API-Key, X-Request-ID"
# Seconds a browser may cache a preflight (Chromium caps it at 2 h, Firefox at 24 h).
CORS_MAX_AGE = 600
CORS_EXPOSE_HEADERS = "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"


def _header_key() -> str | None:
    """The key from ``Authorization`` (``Bearer KEY``, or the bare key), else ``X-API-Key``.

    Any other Authorization value (another scheme, ``Bearer`` alone) is remembered, so that a
    request with no key elsewhere is answered ``malformed_authorization``, not ``missing_api_key``."""
    auth = request.headers.get("Authorization", "").strip()
    if auth:
        scheme, _, rest = auth.partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            return rest.strip()
        if not rest and scheme.lower() != "bearer":
            return scheme  # "Authorization: obs_pk_..." is what people write when they forget Bearer
        g.malformed_authorization = True
    return request.headers.get("X-API-Key") or None


def _refuse(verdict: Verdict) -> ApiError:
    metrics.RATE_LIMITED.labels(verdict.scope).inc()
    return ApiError(429, "rate_limited", verdict.message, details={"limit": verdict.scope, "rate": verdict.text},
                    headers=verdict.headers())


def _authenticate(rt: Runtime, key: str | None, ip: str) -> KeyInfo:
    if not key:
        if g.get("malformed_authorization"):
            raise ApiError(401, "malformed_authorization",
                           "The Authorization header must be 'Bearer <key>' (or the key alone); "
                           "X-API-Key or the body's api_key work too.")
        raise ApiError(401, "missing_api_key",
                       "An API key is required (Authorization: Bearer, X-API-Key or body api_key).")

    def lookup_budget() -> None:
        # A key this process does not know as valid is about to cost a PostgreSQL query:
        # counted per client IP first, so random keys cannot become a query each.
        verdict = rt.limiter.allow_lookup(ip)
        if not verdict.allowed:
            raise _refuse(verdict)

    try:
        info: KeyInfo | None = rt.keys.get(key, before_load=lookup_budget)
    except KeyStoreUnavailable:
        # PostgreSQL is away and this key was not seen lately: it cannot be checked, so the
        # client keeps its events and retries (known keys keep working from the cache).
        raise ApiError(503, "key_store_unavailable", "API keys cannot be checked right now; retry later.",
                       headers={"Retry-After": "5"}) from None
    if info is None:
        raise ApiError(401, "invalid_api_key", "Unknown or revoked API key.")
    return info


@functools.lru_cache(maxsize=4096)
def _normalized_origin(origin: str) -> str:
    return origin_or_raw(origin)


def _check_origin(info: KeyInfo) -> None:
    origin = request.headers.get("Origin")
    # An origin check binds browsers only (any other client can send any Origin); the
    # allow-list stops other sites from using a key copied out of a page. Both sides are
    # normalized (case, default port, IDNA, a trailing slash), the key's when it was loaded.
    if origin and info.origins and _normalized_origin(origin) not in info.origins:
        raise ApiError(403, "origin_not_allowed", "This key does not accept events from this origin.")


def _rate_limit(rt: Runtime, info: KeyInfo, ip: str, accepted: list[dict]) -> None:
    """Requests, accepted events and new sessions, per key and per client IP within the key (a
    public key must not let one client drain the customer's quota): one Redis round trip."""
    verdict = rt.limiter.check(info.id, info.rate_limit, ip, len(accepted), {e["session_id"] for e in accepted})
    g.rate_limit_headers = verdict.headers()
    if not verdict.allowed:
        raise _refuse(verdict)


@bp.route("/v1/events", methods=["POST"], provide_automatic_options=False)
def ingest() -> Response:
    """Accept a batch of events."""
    rt: Runtime = current_app.extensions["observer"]
    s = rt.settings
    received_at = int(time.time() * 1000)
    ip = request.remote_addr or "unknown"
    header_key = _header_key()
    info = _authenticate(rt, header_key, ip) if header_key else None
    try:
        body = read_json_body(request.stream, content_type=request.headers.get("Content-Type"),
                              content_encoding=request.headers.get("Content-Encoding"),
                              content_length=request.content_length, max_bytes=s.max_body_bytes)
    except PayloadTooLarge:
        # Answering while the client is still sending makes the server close a socket with
        # unread data, which the client sees as a connection reset instead of our 413: read
        # (and discard) a bounded amount first.
        drain(request.stream)
        raise
    # A body-carried key (sendBeacon) is read only now, after the content type, size and JSON
    # checks; its lookup is then held to the same per-IP budget as a header key's.
    raw_events, body_key = parse_batch(body, max_events=s.max_events_per_request)
    if info is None:
        info = _authenticate(rt, body_key, ip)
    _check_origin(info)
    g.project = info.project
    if isinstance(body, dict) and "client_report" in body:
        g.client_report = client_reports.record(rt.sessions_redis, s.redis_key_prefix, rt.ledger, info.project,
                                                body["client_report"], received_at)
    accepted, rejected, plain = check_events(raw_events, received_at_ms=received_at, max_event_bytes=s.max_event_bytes,
                                             max_past_ms=s.timestamp_max_past * 1000,
                                             max_future_ms=s.timestamp_max_future * 1000)
    for r in rejected:
        metrics.EVENTS_REJECTED.labels(r["code"]).inc()
    metrics.EVENTS_RECEIVED.inc(len(raw_events))
    counts = {"received": len(raw_events), **_by_code(rejected)}
    if rejected:
        rejected_store.keep(rt.sessions_redis, s.redis_key_prefix, info.project, raw_events, rejected, g.request_id,
                            received_at)
    # After validation (what counts is accepted events and their new sessions), before the
    # scrub and the publish; a batch with nothing acceptable still counts as a request.
    try:
        _rate_limit(rt, info, ip, accepted)
    except ApiError:
        rt.ledger.add(info.project, received_at, {**counts, "rate_limited": len(accepted)})
        rt.tails.publish(rt.sessions_redis, info.project, g.request_id, [], rejected, raw_events, 429)
        raise
    if not accepted:
        rt.ledger.add(info.project, received_at, counts)
        rt.tails.publish(rt.sessions_redis, info.project, g.request_id, [], rejected, raw_events, 400)
        raise NoAcceptableEvents(details=rejected)
    # A person whose data is being deleted (app/deletion/): their events are accepted (the SDK must
    # not resend them) and dropped here, before anything is queued, and counted.
    sup = rt.suppressions.of(info.project)
    suppressed = 0
    if sup is not None:
        keep = [not is_suppressed(sup, e) for e in accepted]
        suppressed = keep.count(False)
        if suppressed:
            accepted = [e for e, k in zip(accepted, keep, strict=True) if k]
            plain = [p for p, k in zip(plain, keep, strict=True) if k]
            metrics.EVENTS_SUPPRESSED.inc(suppressed)
            counts["suppressed"] = suppressed
            if not accepted:
                rt.ledger.add(info.project, received_at, counts)
                return _accepted(suppressed, rejected)
    masked = 0
    events = []
    for e, is_plain in zip(accepted, plain, strict=True):
        masked += scrub_event(e, rt.sensitive_params)
        e.pop("index", None)
        e["metadata"] = metadata_json(e["metadata"], is_plain)
        events.append(e)
    batch = {"batch_id": batch_id_for(info.project, events), "project": info.project,
             "request_id": g.request_id, "received_at": received_at, "events": events}
    try:
        # Written down before the publish: kombu's Redis transport can lose a message it
        # already had (app/ingest/journal.py), and a 202 is a promise.
        rt.publisher.ensure_capacity()
        if rt.journal is not None:
            rt.journal.write(batch)
        rt.publisher.publish_batch(batch, g.request_id)
    except (BrokerUnavailable, redis.RedisError) as exc:
        if isinstance(exc, redis.RedisError):
            log.error("journal write failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        metrics.ENQUEUE_FAILURES.inc()
        # Not counted in the ledger: the SDK keeps the batch and sends it again.
        raise ApiError(503, "broker_unavailable", "Events could not be queued; retry later.",
                       headers={"Retry-After": "5"}) from exc
    rt.ledger.add(info.project, received_at, {**counts, "accepted": len(events)})
    rt.tails.publish(rt.sessions_redis, info.project, g.request_id, events, rejected, raw_events, 202)
    metrics.EVENTS_ACCEPTED.inc(len(events))
    if masked:
        metrics.PII_MASKED.inc(masked)
    log.info("batch accepted", extra={"project": info.project, "batch_id": batch["batch_id"], "accepted": len(events),
                                      "rejected": len(rejected), "pii_masked": masked})
    return _accepted(len(events) + suppressed, rejected)


def _by_code(rejected: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rejected:
        out[f"rejected:{r['code']}"] = out.get(f"rejected:{r['code']}", 0) + 1
    return out


def _accepted(n: int, rejected: list) -> Response:
    doc = {"accepted": n, "rejected": rejected, "request_id": g.request_id}
    if g.get("client_report"):
        doc["client_report"] = g.client_report
    resp = jsonify(doc)
    resp.status_code = 202
    return resp


@bp.route("/v1/events", methods=["OPTIONS"])
def preflight() -> Response:
    """CORS preflight (no key is sent with a preflight, so any origin gets an answer)."""
    resp = current_app.response_class(status=204)
    origin = request.headers.get("Origin")
    if origin:
        resp.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        resp.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE)
    return resp


@bp.after_request
def _rate_limit_headers(resp: Response) -> Response:
    """X-RateLimit-* on every answer of the ingest view once its limits were counted."""
    for name, value in (g.get("rate_limit_headers") or {}).items():
        if name != "Retry-After" or resp.status_code == 429:
            resp.headers.setdefault(name, value)
    return resp


@bp.after_app_request
def _cors(resp: Response) -> Response:
    """Reflect the origin on every /v1/ answer, errors included, so the SDK can read statuses."""
    origin = request.headers.get("Origin")
    if origin and request.path.startswith("/v1/"):
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        resp.vary.add("Origin")
    return resp

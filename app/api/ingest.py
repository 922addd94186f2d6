"""POST /v1/events: key -> origin -> rate limits -> validate -> scrub -> publish one message -> 202."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request

from app.api.errors import ApiError
from app.broker import BrokerUnavailable
from app.ingest.body import drain, read_json_body
from app.ingest.errors import NoAcceptableEvents, PayloadTooLarge
from app.ingest.message import batch_id_for, metadata_json
from app.ingest.privacy import scrub_event
from app.ingest.schemas import check_events, parse_batch
from app.keys.cache import KeyStoreUnavailable
from app.keys.model import KeyInfo
from app.observability import metrics

if TYPE_CHECKING:
    from app.factory import Runtime

log = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

CORS_ALLOW_HEADERS = "Content-Type, Content-Encoding, Authorization, X-API-Key, X-Request-ID"
CORS_EXPOSE_HEADERS = "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"


def _header_key() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("X-API-Key") or None


def _authenticate(key: str | None) -> KeyInfo:
    if not key:
        raise ApiError(401, "missing_api_key",
                       "An API key is required (Authorization: Bearer, X-API-Key or body api_key).")
    try:
        info: KeyInfo | None = current_app.extensions["observer"].keys.get(key)
    except KeyStoreUnavailable:
        # PostgreSQL is away and this key was not seen lately: it cannot be checked, so the
        # client keeps its events and retries (known keys keep working from the cache).
        raise ApiError(503, "key_store_unavailable", "API keys cannot be checked right now; retry later.",
                       headers={"Retry-After": "5"}) from None
    if info is None:
        raise ApiError(401, "invalid_api_key", "Unknown or revoked API key.")
    return info


def _check_origin(info: KeyInfo) -> None:
    origin = request.headers.get("Origin")
    # An origin check binds browsers only (any other client can send any Origin); the
    # allow-list stops other sites from using a key copied out of a page.
    if origin and info.origins and origin not in info.origins:
        raise ApiError(403, "origin_not_allowed", "This key does not accept events from this origin.")


def _rate_limit(info: KeyInfo) -> None:
    rt: Runtime = current_app.extensions["observer"]
    limiter, s = rt.limiter, rt.settings
    ip = request.remote_addr or "unknown"
    # Per client IP within the key first (a public key must not let one client drain the
    # customer's quota), then the key's own limit, whose figures end up in the headers.
    with limiter.limit(s.rate_limit_per_ip, key_func=lambda: f"ip:{info.id}:{ip}", scope="ip"):
        pass
    with limiter.limit(info.rate_limit or s.rate_limit_default, key_func=lambda: f"key:{info.id}", scope="key"):
        pass


@bp.route("/v1/events", methods=["POST"], provide_automatic_options=False)
def ingest() -> Response:
    """Accept a batch of events."""
    rt: Runtime = current_app.extensions["observer"]
    s = rt.settings
    received_at = int(time.time() * 1000)
    header_key = _header_key()
    info = _authenticate(header_key) if header_key else None
    try:
        body = read_json_body(request.stream, content_type=request.headers.get("Content-Type"),
                              content_encoding=request.headers.get("Content-Encoding"),
                              content_length=request.content_length, max_bytes=s.max_body_bytes)
    except PayloadTooLarge:
        # Answering while the client is still sending makes the server close a socket with
        # unread data, which the client sees as a connection reset instead of our 413: read
        # (and discard) a bounded amount first.
        drain(request.stream, s.max_body_drain)
        raise
    raw_events, body_key = parse_batch(body, max_events=s.max_events_per_request)
    if info is None:
        info = _authenticate(body_key)
    _check_origin(info)
    _rate_limit(info)
    accepted, rejected, plain = check_events(raw_events, received_at_ms=received_at, max_event_bytes=s.max_event_bytes,
                                             max_past_ms=s.timestamp_max_past * 1000,
                                             max_future_ms=s.timestamp_max_future * 1000)
    for r in rejected:
        metrics.EVENTS_REJECTED.labels(r["code"]).inc()
    if not accepted:
        raise NoAcceptableEvents(details=rejected)
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
        # already had (app/pipeline/journal.py), and a 202 is a promise.
        rt.publisher.ensure_capacity()
        if rt.journal is not None:
            rt.journal.write(batch)
        rt.publisher.publish_batch(batch, g.request_id)
    except (BrokerUnavailable, redis.RedisError) as exc:
        if isinstance(exc, redis.RedisError):
            log.error("journal write failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        metrics.ENQUEUE_FAILURES.inc()
        raise ApiError(503, "broker_unavailable", "Events could not be queued; retry later.",
                       headers={"Retry-After": "5"}) from exc
    metrics.EVENTS_ACCEPTED.inc(len(events))
    if masked:
        metrics.PII_MASKED.inc(masked)
    log.info("batch accepted", extra={"project": info.project, "batch_id": batch["batch_id"], "accepted": len(events),
                                      "rejected": len(rejected), "pii_masked": masked})
    resp = jsonify({"accepted": len(events), "rejected": rejected, "request_id": g.request_id})
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
        resp.headers["Access-Control-Max-Age"] = str(current_app.extensions["observer"].settings.cors_max_age)
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

"""The one error contract: {"error": {"code", "message", "request_id", "details"}} on every non-2xx."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from app.ingest.errors import IngestError
from app.observability.context import request_id_var

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          408: "request_timeout", 413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limited",
          500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """An error answer raised from a view."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers or {}


def error_response(status: int, code: str, message: str | None, details: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    """Build the JSON error answer."""
    body = {"error": {"code": code, "message": message,
                      "request_id": getattr(g, "request_id", None) or request_id_var.get(), "details": details}}
    resp = jsonify(body)
    resp.status_code = status
    headers = headers or {}
    for k, v in headers.items():
        resp.headers[k] = v
    if "Retry-After" in headers:
        g.retry_after = headers["Retry-After"]
    if 400 <= status < 500:
        # One line per refused request, so "why was my request refused?" has an answer in the logs.
        log.info("request refused", extra={"status": status, "code": code, "project": g.get("project"),
                                           "request_id": body["error"]["request_id"]})
    return resp


def register(app: Flask) -> None:
    """Install handlers so Flask's own 404/405/500 use the contract too."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(IngestError)
    def _ingest_error(exc: IngestError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        allowed = getattr(exc, "valid_methods", None)  # MethodNotAllowed's
        if status == 405 and allowed:
            headers["Allow"] = ", ".join(allowed)
        message = exc.description if status < 500 else "Internal error."
        if status == 429:  # a 429 raised outside the ingest limits (app/web/limits.py adds its own headers)
            message = f"Rate limit exceeded ({exc.description})."
        return error_response(status, _CODES.get(status, "http_error"), message, None, headers)

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"error_type": type(exc).__name__})
        return error_response(500, "internal_error", "Internal error.")

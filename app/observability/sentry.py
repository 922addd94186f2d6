"""Sentry options that keep personal data out: no local variables, no request bodies.

Sentry's defaults capture every frame's local variables; in the ingest view those hold the
raw, unscrubbed batch (emails, card numbers, URLs with tokens). Request bodies, cookies and
query strings are dropped too; a ``before_send`` hook removes whatever an integration still
attached, so the event keeps only the exception, the stack (code, no values) and our ids.
"""
from __future__ import annotations

from typing import Any

_KEEP_REQUEST = ("method", "url")  # url without its query string (stripped below)


def scrub_event(event: dict[str, Any], _hint: Any = None) -> dict[str, Any]:
    """before_send: drop request data, frame variables and extra context values."""
    request = event.get("request")
    if isinstance(request, dict):
        kept = {k: request[k] for k in _KEEP_REQUEST if k in request}
        if "url" in kept and isinstance(kept["url"], str):
            kept["url"] = kept["url"].split("?", 1)[0]
        event["request"] = kept
    for exc in (event.get("exception") or {}).get("values") or []:
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    for thread in (event.get("threads") or {}).get("values") or []:
        for frame in (thread.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    event.pop("extra", None)
    event.pop("user", None)
    # Log breadcrumbs carry our structured-log extras (batch ids are fine, bodies are never logged).
    return event


def scrub_breadcrumb(crumb: dict[str, Any], _hint: Any = None) -> dict[str, Any]:
    """before_breadcrumb: an outgoing request's breadcrumb (the stdlib integration records every
    one, UFSE's included) keeps its URL without credentials, query or fragment."""
    from app.forwarding.url_redaction import redacted_url

    data = crumb.get("data")
    if isinstance(data, dict):
        for k in ("http.query", "http.fragment"):
            data.pop(k, None)
        if isinstance(data.get("url"), str):
            data["url"] = redacted_url(data["url"].split("?", 1)[0].split("#", 1)[0])
    return crumb


def safe_options() -> dict[str, Any]:
    """Keyword arguments for ``sentry_sdk.init`` shared by the web and the workers."""
    return {
        "send_default_pii": False,
        "include_local_variables": False,
        "max_request_body_size": "never",
        "traces_sample_rate": 0.0,
        "before_send": scrub_event,
        "before_breadcrumb": scrub_breadcrumb,
    }

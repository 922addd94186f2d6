"""Errors raised at the ingest edge; the API turns each into the one JSON error shape."""

from __future__ import annotations

from typing import Any


class IngestError(Exception):
    """A request the ingest edge refuses, with its HTTP status and machine-readable code."""

    status: int = 400
    code: str = "ingest_error"
    default_message: str = "The request was refused."

    def __init__(self, message: str | None = None, *, details: Any = None,
                 code: str | None = None) -> None:
        self.message = message or self.default_message
        self.details = details
        if code is not None:
            # An instance may narrow the class code (e.g. unsupported_content_encoding).
            self.code = code
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class MalformedJSON(IngestError):
    """The body is not valid (gzip-wrapped) UTF-8 JSON."""

    status = 400
    code = "malformed_json"
    default_message = "The request body is not valid JSON."


class PayloadTooLarge(IngestError):
    """The body is over the size limit, before or after gzip."""

    status = 413
    code = "payload_too_large"
    default_message = "The request body is over the size limit."


class TooManyEvents(IngestError):
    """The batch holds more events than allowed in one request."""

    status = 413
    code = "too_many_events"
    default_message = "The batch holds too many events."


class UnsupportedMediaType(IngestError):
    """The content type or content encoding is not one the API reads."""

    status = 415
    code = "unsupported_media_type"
    default_message = "Content-Type must be application/json or text/plain (UTF-8)."


class InvalidBatch(IngestError):
    """The JSON is well formed but is not a batch object."""

    status = 400
    code = "invalid_batch"
    default_message = "The body must be an object with an 'events' array."


class NoAcceptableEvents(IngestError):
    """Every event of the batch was rejected; details lists each rejection."""

    status = 400
    code = "no_acceptable_events"
    default_message = "No event in the batch was acceptable."

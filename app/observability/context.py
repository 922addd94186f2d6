"""Per-request / per-task context carried into every log line."""
from __future__ import annotations

import contextvars
import re
import uuid

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)

_VALID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def valid_request_id(value: str | None) -> str | None:
    """Return ``value`` when it is an acceptable request id, else None."""
    if value and _VALID.match(value):
        return value
    return None


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex

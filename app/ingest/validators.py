"""Field validators and limits shared by the event schema and its fast path: text, URLs, ids, metadata depth."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError

EVENT_TYPES = ("page_view", "click", "rage_click", "error", "network", "navigation",
               "web_vital", "custom")
MAX_NAME_CHARS = 200
MAX_URL_CHARS = 2048
MAX_API_KEY_CHARS = 256
MAX_METADATA_DEPTH = 10
ID_PATTERN = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")
UUID_PATTERN = re.compile(r"\A[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
# NUL breaks C consumers; lone surrogates cannot be encoded as UTF-8 for storage.
BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def clean_text(value: str) -> None:
    """Refuse NUL characters and unpaired surrogates."""
    if BAD_CHARS.search(value):
        raise ValidationError("Must not contain NUL characters or unpaired surrogates.")


def http_url(value: str) -> None:
    """Accept an absolute http(s) URL or the empty string."""
    if not value:
        return
    clean_text(value)
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc \
            or any(c.isspace() for c in value):
        raise ValidationError("Must be an absolute http(s) URL or empty.")


def optional_id(value: str) -> None:
    """Accept an empty value or 1-128 of [A-Za-z0-9._:-]."""
    # Empty means "not known", as does absent or null.
    if value and not ID_PATTERN.match(value):
        raise ValidationError("Must be 0-128 of [A-Za-z0-9._:-].")


def metadata_depth(value: dict) -> None:
    """Refuse metadata nested too deeply or holding bad characters."""
    # Iterative walk: the depth limit must hold before anything recurses over the value.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            clean_text(node)
        elif isinstance(node, (dict, list)):
            if depth > MAX_METADATA_DEPTH:
                raise ValidationError(f"Must not nest deeper than {MAX_METADATA_DEPTH} levels.")
            if isinstance(node, dict):
                for key in node:
                    clean_text(key)
                stack.extend((child, depth + 1) for child in node.values())
            else:
                stack.extend((child, depth + 1) for child in node)

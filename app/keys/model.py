"""Key format and hashing. Keys are shown once; only their SHA-256 is stored."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

KEY_PREFIX = "obs_pk_"  # "publishable key": may sit in a web page, can only write events
_KEY_SHAPE = re.compile(r"^obs_pk_[A-Za-z0-9_-]{43}$")
PROJECT_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


@dataclass(frozen=True)
class KeyInfo:
    """What the ingest path needs to know about a valid key."""

    id: int
    project: str
    origins: tuple[str, ...] = field(default_factory=tuple)
    rate_limit: str | None = None


def generate() -> str:
    """A new 256-bit key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def well_formed(key: str) -> bool:
    """Cheap shape check before any lookup."""
    return bool(_KEY_SHAPE.match(key))


def digest(key: str) -> bytes:
    """SHA-256 of the key (what PostgreSQL stores)."""
    return hashlib.sha256(key.encode()).digest()


def same_digest(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a, b)


def display_prefix(key: str) -> str:
    """The part of a key shown in listings."""
    return key[: len(KEY_PREFIX) + 6]


_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def normalize_origin(raw: str) -> str:
    """The origin a browser sends for ``raw``: ``scheme://host[:port]``, lower-case, the host in
    IDNA (punycode) form, the scheme's default port dropped. Raises ValueError for anything that
    is not an origin (a path, query, fragment, user info, no host, ``null``, ``*``)."""
    text = raw.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.match(scheme):
        raise ValueError(f"{raw!r} is not an origin: expected scheme://host[:port], e.g. https://shop.example")
    if rest.endswith("/"):
        rest = rest[:-1]  # "https://shop.example/" is how many people write an origin
    if not rest or any(c in rest for c in "/?#@\\ \t"):
        raise ValueError(f"{raw!r} is not an origin: only scheme://host[:port], no path, query or user info")
    host, port_text = rest, ""
    if rest.startswith("["):  # IPv6 literal
        end = rest.find("]")
        if end < 0 or (rest[end + 1:] and not rest[end + 1:].startswith(":")):
            raise ValueError(f"{raw!r} is not an origin: bad IPv6 host")
        host, port_text = rest[: end + 1].lower(), rest[end + 2:]
    elif ":" in rest:
        host, _, port_text = rest.rpartition(":")
    if (rest.startswith("[") or ":" in rest) and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"{raw!r} is not an origin: the port must be 1-65535")
    if not host.startswith("["):
        try:
            host = host.encode("idna").decode("ascii").lower() if host else ""
        except UnicodeError:
            raise ValueError(f"{raw!r} is not an origin: {host!r} is not a valid host name") from None
        if not host or not _HOST.match(host):
            raise ValueError(f"{raw!r} is not an origin: {host!r} is not a valid host name")
    port = int(port_text) if port_text else None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_or_raw(raw: str) -> str:
    """``normalize_origin`` for a value that may predate the check (a stored key's origin, a
    request's Origin header): what cannot be normalized is compared as it is."""
    try:
        return normalize_origin(raw)
    except ValueError:
        return raw

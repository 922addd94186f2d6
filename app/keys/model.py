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

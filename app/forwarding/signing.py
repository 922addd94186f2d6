"""Standard Webhooks signing for UFSE deliveries (https://www.standardwebhooks.com)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 -- the format's prefix, not a secret


def decode_secret(secret: str) -> bytes:
    """Return the HMAC key encoded in a `whsec_<base64>` secret, or raise ValueError."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("UFSE secret must look like 'whsec_<base64>'")
    encoded = secret[len(SECRET_PREFIX):]
    try:
        # Secrets are often pasted without their '=' padding; restore it before decoding.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("UFSE secret after 'whsec_' is not valid base64") from None
    if not key:
        raise ValueError("UFSE secret is empty after 'whsec_'")
    return key


def sign(secret_bytes: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `v1,<base64 HMAC-SHA256>` signature of `{msg_id}.{timestamp}.{body}`."""
    # Sign the exact bytes sent; never re-encode the body, or the receiver's check breaks.
    to_sign = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_bytes, to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def webhook_headers(
    keys: bytes | Sequence[bytes], msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """Return the webhook-id, webhook-timestamp and webhook-signature headers for body.

    With several keys (a secret being rotated) the signature header lists one signature per key,
    space-separated, as the standard allows: a receiver verifying with any one of them accepts it.
    """
    # A fresh timestamp per attempt: receivers reject signatures older than ~5 minutes.
    timestamp = int(time.time() if now is None else now)
    keys = [keys] if isinstance(keys, bytes) else list(keys)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(k, msg_id, timestamp, body) for k in keys),
    }

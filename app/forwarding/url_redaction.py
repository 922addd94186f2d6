"""A destination URL as Observer may show it: never its credentials.

``UFSE_URL`` may carry a secret (``https://user:pass@host/path?token=...``). Every text Observer
writes about a destination (exception text, log lines, dead-letter errors, Sentry breadcrumbs,
Redis key names) goes through this module: ``redacted_url`` for the URL itself, ``redact`` for a
text that may quote it (requests' exceptions quote the path and query), ``origin`` for a name
(the circuit's Redis key).
"""
from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Shorter secret values are not replaced inside free text: "1" or "ab" would mangle every
# message, and a value that short is no secret worth hiding.
_MIN_SECRET = 4


def redacted_url(url: str) -> str:
    """``url`` with its password, every query value and its fragment replaced by ``***``.

    The user name, host, port, path and query keys stay (they say which destination it is).
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return MASK  # unparseable: nothing of it is safe to show
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{MASK}@{hostport}"
    query = urlencode([(k, MASK) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    if parts.query and not query:
        query = MASK  # a bare token (``?s3cret``) has no key to keep
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))


def origin(url: str) -> str:
    """``host[:port]`` of ``url``, without user info (the destination's name in Redis keys)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    return netloc.rpartition("@")[2]


def secrets_in(url: str) -> list[str]:
    """The parts of ``url`` that must never be shown, raw and percent-decoded, longest first."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url] if url else []
    found: set[str] = set()
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        found.add(userinfo)
        if ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
    if parts.query:
        found.add(parts.query)
        for chunk in parts.query.split("&"):
            found.add(chunk.split("=", 1)[-1])
    if parts.fragment:
        found.add(parts.fragment)
    out = set()
    for s in found:
        for form in (s, unquote(s), quote(unquote(s), safe="")):
            if len(form) >= _MIN_SECRET:
                out.add(form)
    return sorted(out, key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """``text`` with ``url`` (whole, or any secret part of it) replaced by its redacted form."""
    if not text or not url:
        return text
    shown = redacted_url(url)
    text = text.replace(url, shown)
    try:
        raw, safe = urlsplit(url), urlsplit(shown)
        # The parts a message quotes on their own (requests: "url: /path?query"), shown redacted.
        pairs = [(raw.netloc, safe.netloc), (raw.query, safe.query)]
    except ValueError:
        pairs = []
    for part, mask in pairs:
        if part and part != mask:
            text = text.replace(part, mask)
    for secret in secrets_in(url):
        text = text.replace(secret, MASK)
    return text

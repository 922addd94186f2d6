"""Server-side PII scrubbing of event strings: emails, card numbers, secrets in query strings."""

from __future__ import annotations

import re
from typing import Any, Collection
from urllib.parse import unquote

# Query/fragment parameter names whose values are masked (compared lower-cased, after
# percent-decoding). Credentials and bearer material (OAuth, JWTs, signed-URL signatures),
# one-time codes, and session identifiers. Extend with the SENSITIVE_QUERY_PARAMS setting.
DEFAULT_SENSITIVE_PARAMS = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase",
    "token", "access_token", "refresh_token", "id_token", "auth_token", "csrf_token",
    "xsrf_token", "_csrf", "jwt", "bearer", "otp", "code",
    "secret", "client_secret", "auth", "authorization", "credentials",
    "key", "api_key", "apikey", "api-key", "private_key",
    "session", "sessionid", "session_id", "sid", "phpsessid", "jsessionid",
    "signature", "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential",
})
# Metadata keys (any depth, case-insensitive) whose value is dropped with the key: these
# carry credentials wholesale, so masking patterns inside them is not enough.
DROPPED_KEYS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization",
                          "x-api-key"})

EMAIL_MASK, CARD_MASK, PARAM_MASK = "[email]", "[card]", "[redacted]"

# Lookbehinds pin each match to the start of a run and possessive quantifiers forbid
# backtracking inside it, so a hostile 10 KiB string is scanned in linear time.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@(?:[A-Za-z0-9-]++\.)+[A-Za-z]{2,63}")
# A run of digits with single spaces or dashes between them, not glued to a letter or digit
# on its left (so digit runs inside UUIDs and hex ids are not candidates).
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9](?:[ -]?[0-9])*+")
_SEPARATOR = re.compile(r"[ -]")
# Longer runs (tables of numbers) are not searched for a card inside them: the search is
# quadratic-ish in Python and would let one hostile string cost seconds.
_MAX_GROUPS = 64
_PARAM = re.compile(r"([?&#;])([^=&#?;\s]{1,64}+)=([^&#;\s\"'<>]*+)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_end(groups: list[str], start: int) -> int:
    """Return the end of the shortest Luhn-valid 13-19 digit window from start, else 0."""
    total = 0
    for end in range(start, len(groups)):
        total += len(groups[end])
        if total > 19:
            return 0
        if total >= 13 and _luhn_ok("".join(groups[start:end + 1])):
            return end + 1
    return 0


def _mask_run(run: str) -> tuple[str, int]:
    digits = _SEPARATOR.sub("", run)
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return CARD_MASK, 1
    groups, separators = _SEPARATOR.split(run), _SEPARATOR.findall(run)
    if len(groups) < 2 or len(groups) > _MAX_GROUPS:
        return run, 0
    # A card next to other numbers ("4111 1111 1111 1111 12/25"): mask the card alone.
    parts, count, i = [], 0, 0
    while i < len(groups):
        end = _card_end(groups, i)
        parts.append(CARD_MASK if end else groups[i])
        count += bool(end)
        i = end or i + 1
        if i < len(groups):
            parts.append(separators[i - 1])
    return "".join(parts), count


def _mask_cards(s: str) -> tuple[str, int]:
    pieces, last, count = [], 0, 0
    for match in _DIGIT_RUN.finditer(s):
        start, end = match.span()
        if end - start < 13 or (end < len(s) and s[end].isalnum()):
            continue
        masked, n = _mask_run(match.group())
        if n:
            pieces += [s[last:start], masked]
            last, count = end, count + n
    if not count:
        return s, 0
    pieces.append(s[last:])
    return "".join(pieces), count


def mask_string(s: str, sensitive_params: Collection[str]) -> tuple[str, int]:
    """Return s with sensitive values masked, and how many were; param names must be lower-case."""
    count = 0

    def param(match: re.Match) -> str:
        nonlocal count
        value = match.group(3)
        if not value or value == PARAM_MASK or unquote(match.group(2)).lower() not in sensitive_params:
            return match.group(0)
        count += 1
        return f"{match.group(1)}{match.group(2)}={PARAM_MASK}"

    # Cheap substring tests first: most strings hold none of these and skip the regexes.
    # Parameters go first so a token that happens to contain an email is masked once.
    if "=" in s:
        s = _PARAM.sub(param, s)
    if "@" in s:
        s, emails = _EMAIL.subn(EMAIL_MASK, s)
        count += emails
    if len(s) >= 13:
        s, cards = _mask_cards(s)
        count += cards
    return s, count


def _scrub_value(value: Any, sensitive_params: Collection[str]) -> tuple[Any, int]:
    if isinstance(value, str):
        return mask_string(value, sensitive_params)
    if isinstance(value, dict):
        return value, _scrub_dict(value, sensitive_params)
    if isinstance(value, list):
        masked = 0
        for i, item in enumerate(value):
            value[i], n = _scrub_value(item, sensitive_params)
            masked += n
        return value, masked
    return value, 0  # numbers, booleans and null are never PII patterns by contract


def _scrub_dict(node: dict, sensitive_params: Collection[str]) -> int:
    masked = 0
    for key in list(node):
        if isinstance(key, str) and key.lower() in DROPPED_KEYS:
            del node[key]
            masked += 1
            continue
        node[key], n = _scrub_value(node[key], sensitive_params)
        masked += n
    return masked


def scrub_event(event: dict, sensitive_params: Collection[str] = DEFAULT_SENSITIVE_PARAMS) -> int:
    """Mask PII in the event's url, name and metadata in place; return how many items were masked."""
    masked = 0
    for field in ("url", "name"):
        if isinstance(event.get(field), str):
            event[field], n = mask_string(event[field], sensitive_params)
            masked += n
    if isinstance(event.get("metadata"), dict):
        masked += _scrub_dict(event["metadata"], sensitive_params)
    return masked

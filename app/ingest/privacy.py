"""Server-side PII scrubbing of event strings, by the rules the browser SDK applies too.

The rules (sensitive parameter names, patterns, card checks, test vectors) live in
``privacy_rules.json`` beside this module; the SDK's build and tests read the same file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Collection
from urllib.parse import unquote

RULES = json.loads((Path(__file__).with_name("privacy_rules.json")).read_text(encoding="utf-8"))

# Query/fragment parameter names whose values are masked (compared lower-cased, after
# percent-decoding). Extend with the SENSITIVE_QUERY_PARAMS setting.
DEFAULT_SENSITIVE_PARAMS = frozenset(RULES["sensitive_params"])
# Metadata keys (any depth, case-insensitive) whose value is dropped with the key: these
# carry credentials wholesale, so masking patterns inside them is not enough.
DROPPED_KEYS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization",
                          "x-api-key"})

MASKS = RULES["masks"]
EMAIL_MASK, CARD_MASK, PARAM_MASK = MASKS["email"], MASKS["card"], MASKS["param"]

_PARAM = re.compile(RULES["param"])
# Each pattern is bounded on both sides (lookarounds, bounded quantifiers): linear scans.
_PATTERNS = [(re.compile(p["regex"]), MASKS[p["name"]], p["hint"]) for p in RULES["patterns"]]
_CARD = RULES["card"]
# A run of digits with single spaces or dashes between them, not glued to a letter or digit
# on its left (so digit runs inside UUIDs and hex ids are not candidates).
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])" + _CARD["digit_run"])
_SEPARATOR = re.compile(r"[ -]")
_DIGIT = re.compile(r"[0-9]")
_MIN, _MAX, _FIRST, _MAX_GROUPS = _CARD["min_digits"], _CARD["max_digits"], _CARD["first_digits"], _CARD["max_groups"]


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    # Issuer numbers start with 2-6: epoch-millisecond timestamps (1...) are never cards.
    return _MIN <= len(digits) <= _MAX and digits[0] in _FIRST and _luhn_ok(digits)


def _card_end(groups: list[str], start: int) -> int:
    """Return the end of the shortest card-valid window of groups from start, else 0."""
    total = 0
    for end in range(start, len(groups)):
        total += len(groups[end])
        if total > _MAX:
            return 0
        if total >= _MIN and _is_card("".join(groups[start:end + 1])):
            return end + 1
    return 0


def _mask_run(run: str) -> tuple[str, int]:
    if _is_card(_SEPARATOR.sub("", run)):
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
        if end - start < _MIN or (end < len(s) and s[end].isalnum()):
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
    has_digit = _DIGIT.search(s) is not None
    if has_digit and len(s) >= _MIN:
        s, cards = _mask_cards(s)
        count += cards
    for regex, mask, hint in _PATTERNS:
        if (hint == "@" and "@" in s) or (hint == "digit" and has_digit):
            s, n = regex.subn(mask, s)
            count += n
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

"""Card numbers in free text: Luhn-valid digit runs of 13-19 digits (rules in privacy_rules.json)."""

from __future__ import annotations

import re

from app.ingest.rules import MASKS, RULES

CARD_MASK = MASKS["card"]
_CARD = RULES["card"]
# A run of digits with single spaces or dashes between them, not glued to a letter or digit
# on its left (so digit runs inside UUIDs and hex ids are not candidates).
DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])" + _CARD["digit_run"])
MIN_DIGITS = _CARD["min_digits"]
_SEPARATOR = re.compile(r"[ -]")
_MAX, _FIRST, _MAX_GROUPS = _CARD["max_digits"], _CARD["first_digits"], _CARD["max_groups"]


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
    return MIN_DIGITS <= len(digits) <= _MAX and digits[0] in _FIRST and _luhn_ok(digits)


def _card_end(groups: list[str], start: int) -> int:
    """Return the end of the shortest card-valid window of groups from start, else 0."""
    total = 0
    for end in range(start, len(groups)):
        total += len(groups[end])
        if total > _MAX:
            return 0
        if total >= MIN_DIGITS and _is_card("".join(groups[start:end + 1])):
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


def mask_cards(s: str) -> tuple[str, int]:
    """Return s with every card number in it masked, and how many were."""
    pieces, last, count = [], 0, 0
    for match in DIGIT_RUN.finditer(s):
        start, end = match.span()
        if end - start < MIN_DIGITS or (end < len(s) and s[end].isalnum()):
            continue
        masked, n = _mask_run(match.group())
        if n:
            pieces += [s[last:start], masked]
            last, count = end, count + n
    if not count:
        return s, 0
    pieces.append(s[last:])
    return "".join(pieces), count

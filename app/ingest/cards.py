"""Card numbers in free text: Luhn-valid digit runs of 13-19 digits (rules in privacy_rules.json).

The work is bounded by the caller's budget (app/ingest/privacy.py): each window of groups
looked at costs a unit, and when the budget is spent ``BudgetSpent`` is raised so the caller
redacts what is left instead of leaving it unchecked.
"""

from __future__ import annotations

import re
from typing import Protocol

from app.ingest.rules import MASKS, RULES

CARD_MASK = MASKS["card"]
_CARD = RULES["card"]
# A run of digits with single spaces or dashes between them, not glued to a letter or digit
# on its left (so digit runs inside UUIDs and hex ids are not candidates).
DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])" + _CARD["digit_run"])
MIN_DIGITS = _CARD["min_digits"]
_SEPARATOR = re.compile(r"[ -]")
_MAX, _FIRST = _CARD["max_digits"], frozenset(_CARD["first_digits"])
# Luhn: a digit at an odd position from the right counts doubled, minus 9 when over 9.
_DOUBLED = str.maketrans("0123456789", "0246813579")


class BudgetSpent(Exception):
    """The event's budget for exact checks is spent: the caller redacts the rest."""


class Budget(Protocol):
    def spend(self, units: int) -> bool: ...


class _Unlimited:
    def spend(self, units: int) -> bool:
        return True


UNLIMITED: Budget = _Unlimited()


def _luhn_ok(digits: str) -> bool:
    # Both halves are summed by C code: the string's bytes, with the doubled digits translated.
    plain, doubled = digits[::-2].encode(), digits[-2::-2].translate(_DOUBLED).encode()
    return (sum(plain) + sum(doubled) - 48 * len(digits)) % 10 == 0


def _is_card(digits: str) -> bool:
    # Issuer numbers start with 2-6: epoch-millisecond timestamps (1...) are never cards.
    return MIN_DIGITS <= len(digits) <= _MAX and digits[0] in _FIRST and _luhn_ok(digits)


def _card_end(groups: list[str], start: int, budget: Budget) -> int:
    """Return the end of the shortest card-valid window of groups from start, else 0."""
    if not budget.spend(1):
        raise BudgetSpent
    if groups[start][0] not in _FIRST:  # no window from here can be a card
        return 0
    total = 0
    for end in range(start, len(groups)):
        if not budget.spend(1):
            raise BudgetSpent
        total += len(groups[end])
        if total > _MAX:
            return 0
        if total >= MIN_DIGITS and _is_card("".join(groups[start:end + 1])):
            return end + 1
    return 0


def _mask_run(run: str, budget: Budget) -> tuple[str, int]:
    if not budget.spend(1 + len(run) // 16):  # the C scans of the run
        raise BudgetSpent
    digits = _SEPARATOR.sub("", run)
    if len(digits) <= _MAX and _is_card(digits):
        return CARD_MASK, 1
    groups, separators = _SEPARATOR.split(run), _SEPARATOR.findall(run)
    if len(groups) < 2:
        return run, 0
    # A card next to other numbers ("4111 1111 1111 1111 12/25"): mask the card alone. No cap
    # on the number of groups (the SDK's max_groups): the budget bounds the work, and a cap
    # that left long runs unchecked would let a card through behind 64 other numbers.
    parts, count, i = [], 0, 0
    while i < len(groups):
        end = _card_end(groups, i, budget)
        parts.append(CARD_MASK if end else groups[i])
        count += bool(end)
        i = end or i + 1
        if i < len(groups):
            parts.append(separators[i - 1])
    return "".join(parts), count


def mask_cards(s: str, budget: Budget = UNLIMITED) -> tuple[str, int]:
    """Return s with every card number in it masked, and how many were.

    Raises BudgetSpent (s unchanged) when ``budget`` runs out before every run was checked.
    """
    pieces, last, count = [], 0, 0
    for match in DIGIT_RUN.finditer(s):
        if not budget.spend(1):
            raise BudgetSpent
        start, end = match.span()
        if end - start < MIN_DIGITS or (end < len(s) and s[end].isalnum()):
            continue
        masked, n = _mask_run(match.group(), budget)
        if n:
            pieces += [s[last:start], masked]
            last, count = end, count + n
    if not count:
        return s, 0
    pieces.append(s[last:])
    return "".join(pieces), count

"""Server-side PII scrubbing of event strings, by the rules the browser SDK applies too.

The rules (sensitive parameter names, patterns, card checks, test vectors) live in
``privacy_rules.json`` beside this module; the SDK's build and tests read the same file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from urllib.parse import unquote

from app.ingest.cards import MIN_DIGITS, mask_cards
from app.ingest.rules import MASKS, RULES

__all__ = ["RULES", "MASKS", "DEFAULT_SENSITIVE_PARAMS", "DROPPED_KEYS", "EMAIL_MASK", "CARD_MASK", "PARAM_MASK",
           "mask_string", "scrub_event"]

# Query/fragment parameter names whose values are masked (compared lower-cased, after
# percent-decoding). Extend with the SENSITIVE_QUERY_PARAMS setting.
DEFAULT_SENSITIVE_PARAMS = frozenset(RULES["sensitive_params"])
# Metadata keys (any depth, case-insensitive) whose value is dropped with the key: these
# carry credentials wholesale, so masking patterns inside them is not enough.
DROPPED_KEYS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization",
                          "x-api-key"})

EMAIL_MASK, CARD_MASK, PARAM_MASK = MASKS["email"], MASKS["card"], MASKS["param"]

_PARAM = re.compile(RULES["param"])
# Each pattern is bounded on both sides (lookarounds, bounded quantifiers): linear scans.
_PATTERNS = [(re.compile(p["regex"]), MASKS[p["name"]], p["hint"]) for p in RULES["patterns"]]
_DIGIT = re.compile(r"[0-9]")

# Prefilters: a cheap scan that finds nothing proves the exact rules would change nothing.
# A card is a digit run (as cards.DIGIT_RUN finds it) of at least MIN_DIGITS characters of
# digits and separators: its first MIN_DIGITS characters are such, after no letter or digit.
_CARD_CANDIDATE = rf"(?<![0-9A-Za-z])[0-9][0-9 -]{{{MIN_DIGITS - 1}}}"
# The union of the digit patterns as they are (a match of any one is a match of the union).
# The lookahead only makes the scan cheap: every match of these patterns starts with a digit,
# "+" or "(" (checked against generated strings by tests/unit/ingest/test_privacy_prefilter.py).
_DIGIT_PATTERNS = [p["regex"] for p in RULES["patterns"] if p["hint"] == "digit"]
# Backreferences count groups from the left: the one pattern with groups goes first.
_DIGIT_PATTERNS.sort(key=lambda p: re.compile(p).groups == 0)
if sum(re.compile(p).groups > 0 for p in _DIGIT_PATTERNS) > 1:
    raise RuntimeError("privacy_rules.json: two digit patterns with groups cannot share one union regex")


def _union(patterns: list[str]) -> re.Pattern:
    return re.compile("(?=[0-9+(])(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")


_ANY_DIGIT_PATTERN = _union(_DIGIT_PATTERNS)
# The same scan with the card candidate too: one pass answers both questions when it finds nothing.
_ANY_DIGIT_RULE = _union(_DIGIT_PATTERNS + [_CARD_CANDIDATE])


@functools.lru_cache(maxsize=8)
def _sensitive_param_at(sensitive_params: frozenset) -> re.Pattern:
    """Where a parameter with one of these names starts, in an ASCII string without "%"."""
    names = "|".join(re.escape(n) for n in sorted(sensitive_params, key=len, reverse=True))
    # ASCII case folding is str.lower() on ASCII text; percent-escapes would need unquote.
    return re.compile(rf"[?&#;](?:{names})=", re.IGNORECASE | re.ASCII)


def _no_sensitive_param(s: str, sensitive_params: Collection[str]) -> bool:
    """True when no parameter of s can be masked (False: not known)."""
    return type(sensitive_params) is frozenset and s.isascii() and "%" not in s \
        and _sensitive_param_at(sensitive_params).search(s) is None


def _mask_params(s: str, sensitive_params: Collection[str]) -> tuple[str, int]:
    count = 0

    def param(match: re.Match[str]) -> str:
        nonlocal count
        value = match.group(3)
        if not value or value == PARAM_MASK or unquote(match.group(2)).lower() not in sensitive_params:
            return match.group(0)
        count += 1
        return f"{match.group(1)}{match.group(2)}={PARAM_MASK}"

    return _PARAM.sub(param, s), count


def mask_string(s: str, sensitive_params: Collection[str], *, fast: bool = True) -> tuple[str, int]:
    """Return s with sensitive values masked, and how many were; param names must be lower-case.

    ``fast=False`` runs every rule without the prefilters: the reference they are tested against.
    """
    count = 0
    # Cheap substring tests first: most strings hold none of these and skip the regexes.
    # Parameters go first so a token that happens to contain an email is masked once.
    if "=" in s and not (fast and _no_sensitive_param(s, sensitive_params)):
        s, count = _mask_params(s, sensitive_params)
    has_digit = _DIGIT.search(s) is not None
    if fast and not has_digit and "@" not in s:
        return s, count  # every remaining rule needs a digit or an "@"
    # None: not known whether a digit pattern matches s as it is now (a card or email mask
    # may change what surrounds a number, so then the question is asked again).
    no_digit_match = None if fast else False
    if has_digit and len(s) >= MIN_DIGITS:
        if not fast or _ANY_DIGIT_RULE.search(s):
            s, cards = mask_cards(s)
            count += cards
        else:
            no_digit_match = True  # neither a card candidate nor a digit pattern
    for regex, mask, hint in _PATTERNS:
        if hint == "@" and "@" in s:
            s, n = regex.subn(mask, s)
            count += n
            if n and fast:
                no_digit_match = None
        elif hint == "digit" and has_digit:
            if no_digit_match is None:
                no_digit_match = _ANY_DIGIT_PATTERN.search(s) is None
            if not no_digit_match:
                s, n = regex.subn(mask, s)
                count += n
    return s, count


def _scrub_list(items: list, sensitive_params: Collection[str], fast: bool) -> int:
    masked = 0
    for i, item in enumerate(items):
        if isinstance(item, str):
            if item:  # "" holds nothing to mask
                items[i], n = mask_string(item, sensitive_params, fast=fast)
                masked += n
        elif isinstance(item, dict):
            masked += _scrub_dict(item, sensitive_params, fast)
        elif isinstance(item, list):
            masked += _scrub_list(item, sensitive_params, fast)
        # numbers, booleans and null are never PII patterns by contract
    return masked


def _scrub_dict(node: dict, sensitive_params: Collection[str], fast: bool) -> int:
    masked = 0
    for key in list(node):
        if isinstance(key, str) and key.lower() in DROPPED_KEYS:
            del node[key]
            masked += 1
            continue
        value = node[key]
        if isinstance(value, str):
            if value:
                node[key], n = mask_string(value, sensitive_params, fast=fast)
                masked += n
        elif isinstance(value, dict):
            masked += _scrub_dict(value, sensitive_params, fast)
        elif isinstance(value, list):
            masked += _scrub_list(value, sensitive_params, fast)
    return masked


def scrub_event(event: dict, sensitive_params: Collection[str] = DEFAULT_SENSITIVE_PARAMS, *, fast: bool = True) -> int:
    """Mask PII in the event's url, name and metadata in place; return how many items were masked.

    ``fast=False``: mask_string without its prefilters (the reference they are tested against).
    """
    masked = 0
    for field in ("url", "name"):
        value = event.get(field)
        if isinstance(value, str) and value:
            event[field], n = mask_string(value, sensitive_params, fast=fast)
            masked += n
    if isinstance(event.get("metadata"), dict):
        masked += _scrub_dict(event["metadata"], sensitive_params, fast)
    return masked

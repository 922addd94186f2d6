"""Server-side PII scrubbing of event strings, by the rules the browser SDK applies too.

The rules (sensitive parameter names, patterns, card checks, test vectors) live in
``privacy_rules.json`` beside this module; the SDK's build and tests read the same file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from urllib.parse import unquote

from app.ingest.cards import MIN_DIGITS, BudgetSpent, mask_cards
from app.ingest.rules import MASKS, RULES

__all__ = ["RULES", "MASKS", "DEFAULT_SENSITIVE_PARAMS", "DROPPED_KEYS", "EMAIL_MASK", "CARD_MASK", "PARAM_MASK",
           "FAILSAFE_MASK", "EVENT_BUDGET", "Budget", "mask_string", "scrub_event"]

# Query/fragment parameter names whose values are masked (compared lower-cased, after
# percent-decoding). Extend with the SENSITIVE_QUERY_PARAMS setting.
DEFAULT_SENSITIVE_PARAMS = frozenset(RULES["sensitive_params"])
# Metadata keys (any depth, case-insensitive) whose value is dropped with the key: these
# carry credentials wholesale, so masking patterns inside them is not enough.
DROPPED_KEYS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization",
                          "x-api-key"})

EMAIL_MASK, CARD_MASK, PARAM_MASK = MASKS["email"], MASKS["card"], MASKS["param"]

# Cost bound. The digit rules (cards, national ids, phones) only ever match inside a
# "cluster": a run of digits and of the characters those rules allow between digits, of at
# least _MIN_MATCH characters (the shortest match of any digit rule: "+12345"), starting with
# a character a match can start with. A string is first read by C passes (_card_shaped,
# _digit_rule_shaped: class translation and substring tests): without a rule's shape it costs
# nothing more. With one, its regex scan (a unit per _SCAN_CHARS characters), each cluster
# holding a candidate and the exact checks in it (Luhn windows, phone tokens, the rules on
# the cluster alone, with the one character either side their lookarounds read) draw on one
# budget of EVENT_BUDGET units per event, about a microsecond each; when it cannot pay, every
# cluster left in the event is replaced by FAILSAFE_MASK unchecked (fail safe: redacted, never
# leaked). Ordinary numbers (timestamps, UUIDs, IPs, prices) spend none of it
# (tests/unit/ingest/test_privacy_budget.py; the worst case: scripts/bench, figure 9).
_MIN_MATCH = 6
_CLUSTER = re.compile(rf"[0-9+(][0-9 ().+-]{{{_MIN_MATCH - 1},}}")
# Every match of a digit rule lies in a cluster, starts with [0-9+(] and ends with [0-9)]:
# this covers all of them (greedy: from the cluster's start to its last digit or ")").
_FAILSAFE = re.compile(rf"[0-9+(][0-9 ().+-]{{{_MIN_MATCH - 2},}}[0-9)]")
FAILSAFE_MASK = PARAM_MASK
# 256: the rules file's 28 vectors and 27 false-positive strings in one event cost 158 units
# (tests/e2e/test_privacy_pipeline.py), so a rich but honest event is never redacted; the worst
# case stays under 3x a plain body's CPU (scripts/bench, figure 9).
EVENT_BUDGET = 256


class Budget:
    """Units of exact checking left for one event (cards.BudgetSpent when spent)."""

    __slots__ = ("left",)

    def __init__(self, units: int = EVENT_BUDGET) -> None:
        self.left = units

    def spend(self, units: int) -> bool:
        self.left -= units
        return self.left >= 0

    @property
    def spent(self) -> bool:
        return self.left < 0


_PARAM = re.compile(RULES["param"])
# Each pattern is bounded on both sides (lookarounds, bounded quantifiers): linear scans, but
# the international phone pattern's bounded quantifiers still let a backtracking engine try
# thousands of ways to split a long digit run (~100 us at each "+" that fails): the server
# finds its matches with _intl_phone_end instead (the same matches: the prefilter tests
# compare the two), and the regex is only the reference (fast=False) and the SDK's rule.
_INTL_PHONE = r"(?<![0-9A-Za-z+])\+[1-9][0-9]{0,2}(?:[ -]?(?:\([0-9]{1,4}\)|[0-9]{2,5})){2,5}(?![0-9A-Za-z])"
# The shared email pattern takes at most 64 characters before the "@" and is not anchored on
# its left, so a longer local part kept its first characters unmasked. The server anchors it
# instead: a match starts where a run of local-part characters starts, and takes the whole run
# (linear: only a run's first character passes the lookbehind, and the run holds no "@"). It
# masks every email the shared pattern masks, over a span that reaches at least as far left.
# The SDK keeps the shared rule (its bundle's size); the server masks what is left of a prefix.
_EMAIL_SHARED_LOCAL = "[A-Za-z0-9._%+-]{1,64}@"
_EMAIL_LOCAL = "(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@"


def _server_regex(rule: dict[str, str]) -> str:
    if rule["name"] != "email":
        return rule["regex"]
    if not rule["regex"].startswith(_EMAIL_SHARED_LOCAL):
        raise RuntimeError("privacy_rules.json: the email pattern's local part changed; update _EMAIL_LOCAL")
    return _EMAIL_LOCAL + rule["regex"][len(_EMAIL_SHARED_LOCAL):]


_PATTERNS = [(re.compile(_server_regex(p)), MASKS[p["name"]], p["hint"]) for p in RULES["patterns"]]
if sum(p["regex"] == _INTL_PHONE for p in RULES["patterns"]) != 1:
    raise RuntimeError("privacy_rules.json: the international phone pattern changed; update _intl_phone_end")
_DIGIT = re.compile(r"[0-9]")

# Prefilters: a cheap scan that finds nothing proves the exact rules would change nothing.
# A card is a window of a digit run (as cards.DIGIT_RUN finds it: digits with single spaces or
# dashes between them, after no letter or digit) of at least MIN_DIGITS digits: the run starts
# with MIN_DIGITS such digits (so a UUID's 12-digit tail is no candidate).
_CARD_CANDIDATE = rf"(?<![0-9A-Za-z])[0-9](?:[ -]?[0-9]){{{MIN_DIGITS - 1}}}"
# The union of the digit patterns as they are (a match of any one is a match of the union).
# The lookahead only makes the scan cheap: every match of these patterns starts with a digit,
# "+" or "(" (checked against generated strings by tests/unit/ingest/test_privacy_prefilter.py).
# The international phone pattern is there by its start alone (a necessary condition; the
# whole pattern backtracks where it fails).
_INTL_START = r"(?<![0-9A-Za-z+])\+[1-9]"
_DIGIT_PATTERNS = [_INTL_START if p["regex"] == _INTL_PHONE else p["regex"]
                   for p in RULES["patterns"] if p["hint"] == "digit"]
# Backreferences count groups from the left: the one pattern with groups goes first.
_DIGIT_PATTERNS.sort(key=lambda p: re.compile(p).groups == 0)
if sum(re.compile(p).groups > 0 for p in _DIGIT_PATTERNS) > 1:
    raise RuntimeError("privacy_rules.json: two digit patterns with groups cannot share one union regex")


def _union(patterns: list[str]) -> re.Pattern:
    return re.compile("(?=[0-9+(])(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")


_ANY_DIGIT_PATTERN = _union(_DIGIT_PATTERNS)
# The same scan with the card candidate too: one pass answers both questions when it finds nothing.
_ANY_DIGIT_RULE = _union(_DIGIT_PATTERNS + [_CARD_CANDIDATE])
_CARD_CANDIDATES = re.compile(_CARD_CANDIDATE)


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


_INTL_CANDIDATE = re.compile(_INTL_START)
_ASCII_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_RUN = re.compile(r"[0-9]+")
_PAREN_GROUP = re.compile(r"\([0-9]{1,4}\)")
_ALL_COUNTS = 0b111111  # bit k: k groups (0-5) can have been matched so far


def _groups_of_run(length: int) -> int:
    """The counts of 2-5 digit groups a run of ``length`` digits splits into (bit mask)."""
    lo, hi = -(-length // 5), min(length // 2, 5)
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1) if length >= 2 and lo <= hi else 0


def _add(counts: int, more: int) -> int:
    """Counts reachable with one more run (groups added), capped at 5 groups."""
    out = 0
    for k in range(6):
        if more >> k & 1:
            out |= counts << k
    return out & _ALL_COUNTS


def _intl_phone_end(s: str, start: int) -> int:
    """The end of the international phone pattern's match at s[start] ("+" then 1-9, after no
    letter, digit or "+"), else 0: linear, no backtracking.

    The pattern is "+", a country code of 1-3 digits, then 2-5 groups (a 2-5 digit group, or
    1-4 digits in brackets), each after an optional space or dash, not followed by a letter
    or digit. Groups without a separator merge into one digit run, so the state is the set of
    group counts a prefix can be split into; a match ends at the end of a run or bracket with
    2-5 groups behind it. The longest such end is the regex's match (its greedy quantifiers
    take the fewest, longest groups first, which reach furthest)."""
    i = start + 1
    while i < len(s) and "0" <= s[i] <= "9":  # the caller matched "+[1-9]": a run of at least one
        i += 1
    n0 = i - start - 1
    counts = 0  # country code of c digits, the rest of the run in groups
    for c in range(1, min(3, n0) + 1):
        counts |= 1 if n0 == c else _groups_of_run(n0 - c)
    best = 0
    while counts:
        if counts & 0b111100 and (i >= len(s) or s[i] not in _ASCII_ALNUM):
            best = i
        j = i + 1 if i < len(s) and s[i] in " -" else i
        group = _PAREN_GROUP.match(s, j)
        if group is not None:
            counts, i = (counts << 1) & _ALL_COUNTS, group.end()
            continue
        # Digits right after digits are the same run: only a separator or ")" comes first.
        group = _RUN.match(s, j) if j > i or s[i - 1] == ")" else None
        if group is None:
            break
        counts, i = _add(counts, _groups_of_run(group.end() - j)), group.end()
    return best


def _mask_intl_phones(s: str, mask: str, budget: Budget) -> tuple[str, int]:
    pieces, last, count = [], 0, 0
    for match in _INTL_CANDIDATE.finditer(s):
        start = match.start()
        if start < last:
            continue
        if not budget.spend(2):
            raise BudgetSpent
        end = _intl_phone_end(s, start)
        if end:
            pieces += [s[last:start], mask]
            last, count = end, count + 1
    if not count:
        return s, 0
    pieces.append(s[last:])
    return "".join(pieces), count


def _digit_rules(s: str, budget: Budget) -> tuple[str, int]:
    """The digit patterns, in their order, on s (a cluster with its context characters)."""
    count = 0
    if not _ANY_DIGIT_PATTERN.search(s):
        return s, 0
    for regex, mask, hint in _PATTERNS:
        if hint != "digit":
            continue
        if regex.pattern == _INTL_PHONE:
            s, n = _mask_intl_phones(s, mask, budget)
        else:
            if not budget.spend(1 + len(s) // 64):
                raise BudgetSpent
            s, n = regex.subn(mask, s)
        count += n
    return s, count


def _failsafe(s: str) -> tuple[str, int]:
    return _FAILSAFE.subn(FAILSAFE_MASK, s)


def _table(classes: dict[bytes, bytes]) -> bytes:
    """A bytes.translate table: each listed byte to its class letter, every other byte to "x"."""
    table = bytearray(b"x" * 256)
    for chars, cls in classes.items():
        for c in chars:
            table[c] = cls[0]
    return bytes(table)


# Shapes (C substring tests on the text's bytes translated to character classes, ~1 ns a byte)
# that every match of a rule contains, so a string without them is skipped without the rule
# scans (~30-50 ns a character in the regex engine). Timestamps, dates, UUIDs, IPs, prices and
# versions hold none of them; tests/unit/ingest/test_privacy_budget.py checks each rule's
# vectors and generated strings against them.
_DIGITS = b"0123456789"
# A card: 13 or more digits in a run with single spaces or dashes (read with the spaces and
# dashes deleted: 13 digits in a row; "2024-01-15 09:30" has 10).
_CARD_CLASSES = _table({_DIGITS: b"d", b" -": b" "})
_CARD_SHAPE = b"d" * MIN_DIGITS
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# national_id: ddd?dd?dddd (? a space or dash, twice the same). US phone: ddd[.-]ddd[.-]dddd,
# or (ddd) then ddd. In both, a run of 2-digit or 4-digit groups (UUIDs, dates) is no shape.
_DIGIT_CLASSES = _table({_DIGITS: b"d", b" ": b"s", b"-": b"h", b".": b"p", b"(": b"o", b")": b"c"})
_DIGIT_SHAPES = (b"dddsddsdddd", b"dddhddhdddd", b"dddhdddhdddd", b"dddhdddpdddd", b"dddpdddhdddd",
                 b"dddpdddpdddd", b"odddcddd", b"odddcsddd")
# The national phone: "0", a digit 1-9, after neither letter, digit, "+", ".", "," nor "-" (a
# space or another character: s or x), then a digit (0[1-9][0-9]{1,3}[ -][0-9]{3,8}) or a
# separator ((?:[ .-][0-9]{2}){4}); the text is read after one leading space (its start).
_ZERO_CLASSES = _table({b"0": b"z", b"123456789": b"d", b" ": b"s", b"-": b"h", b".": b"p", _LETTERS + b"+,": b"a"})
_ZERO_SHAPES = tuple(bound + b"zd" + nxt for bound in (b"s", b"x") for nxt in (b"z", b"d", b"s", b"p", b"h"))
# The slow scans of a string whose shape may hold a match are paid from the event's budget:
# a unit per _SCAN_CHARS characters (about a microsecond of the regex engine).
_SCAN_CHARS = 32


_PLUS_DIGIT = re.compile(r"\+[1-9]")  # a literal first: the engine's fast search


def _card_shaped(raw: bytes) -> bool:
    return _CARD_SHAPE in raw.translate(_CARD_CLASSES, b" -")


def _digit_rule_shaped(s: str, raw: bytes) -> bool:
    if "+" in s and _PLUS_DIGIT.search(s):  # the international phone pattern: "+" then 1-9
        return True
    classes = raw.translate(_DIGIT_CLASSES)
    if any(shape in classes for shape in _DIGIT_SHAPES):
        return True
    classes = (b" " + raw).translate(_ZERO_CLASSES)
    return any(shape in classes for shape in _ZERO_SHAPES)


_CLUSTER_START = re.compile(r"[0-9+(]")
_OUTSIDE_CLUSTER = re.compile(r"[^0-9 ().+-]")


def _by_cluster(s: str, rule: Callable[[str, Budget], tuple[str, int]], budget: Budget,
                candidates: re.Pattern) -> tuple[str, int]:
    """``rule(piece, budget)`` on every cluster of s that holds a match of ``candidates`` (a
    necessary condition of the rule's matches, found by C scans), with the one character
    either side it may look at; when the budget runs out, from that cluster on everything a
    digit rule could match is FAILSAFE_MASK.

    Clusters without a candidate (timestamps, ids, prices) cost no budget and no Python step:
    only the candidates are visited, each cluster once (a cluster is the run of cluster
    characters around the candidate, from the run's first character a match can start with,
    as _CLUSTER.finditer would find it)."""
    pieces, last, count, pos, rev = [], 0, 0, 0, ""
    while (cand := candidates.search(s, pos)) is not None:
        c = cand.start()
        rev = rev or s[::-1]
        other = _OUTSIDE_CLUSTER.search(rev, len(s) - c)  # the nearest non-cluster character left of c
        first = _CLUSTER_START.search(s, len(s) - other.start() if other else 0)
        cluster = _CLUSTER.match(s, first.start()) if first is not None else None
        if cluster is None or cluster.end() <= c:  # a "+1" too short to be a cluster: no rule matches it
            start, end = c, c + 1
            cost, piece = 1, None
        else:
            start, end = cluster.span()
            lo, hi = max(start - 1, 0), min(end + 1, len(s))
            cost, piece = 2 + (hi - lo) // 64, s[lo:hi]
        pos = end
        try:
            if not budget.spend(cost):
                raise BudgetSpent
            if piece is None:
                continue
            piece, n = rule(piece, budget)
        except BudgetSpent:
            rest, n = _failsafe(s[start:])
            pieces += [s[last:start], rest]
            return "".join(pieces), count + n
        if n:
            # The context characters come back as they were (no digit rule matches them).
            pieces += [s[last:start], piece[start - lo:len(piece) - (hi - end)]]
            last, count = end, count + n
    if not count:
        return s, 0
    pieces.append(s[last:])
    return "".join(pieces), count


def mask_string(s: str, sensitive_params: Collection[str], *, fast: bool = True,
                budget: Budget | None = None) -> tuple[str, int]:
    """Return s with sensitive values masked, and how many were; param names must be lower-case.

    ``budget``: the event's (scrub_event passes one); a fresh one when None.
    ``fast=False`` runs every rule on the whole string without the prefilters and the budget:
    the reference they are tested against.
    """
    count = 0
    # Cheap substring tests first: most strings hold none of these and skip the regexes.
    # Parameters go first so a token that happens to contain an email is masked once.
    if "=" in s and not (fast and _no_sensitive_param(s, sensitive_params)):
        s, count = _mask_params(s, sensitive_params)
    has_digit = _DIGIT.search(s) is not None
    if not fast:
        return _mask_reference(s, count, has_digit)
    if not has_digit and "@" not in s:
        return s, count  # every remaining rule needs a digit or an "@"
    if budget is None:
        budget = Budget()
    # Only strings shaped like a digit rule's match are scanned, and in them only the clusters
    # where a rule can match are checked (tests/unit/ingest/test_privacy_budget.py): ordinary
    # numbers spend nothing, and an event is redacted only past EVENT_BUDGET of real work.
    # A string shaped like none of them costs a few C passes; one that may hold a match pays
    # for its scans from the budget, and past it is FAILSAFE_MASKed.
    if has_digit and len(s) >= MIN_DIGITS and _card_shaped(s.encode("utf-8", "surrogatepass")):
        s, n = _scanned(s, mask_cards, budget, _CARD_CANDIDATES)
        count += n
    for regex, mask, hint in _PATTERNS:
        if hint == "@" and "@" in s:
            s, n = _subn_until_clean(regex, mask, s)
            count += n
    if has_digit and _digit_rule_shaped(s, s.encode("utf-8", "surrogatepass")):
        s, n = _scanned(s, _digit_rules, budget, _ANY_DIGIT_PATTERN)
        count += n
    return s, count


def _scanned(s: str, rule: Callable[[str, Budget], tuple[str, int]], budget: Budget,
             candidates: re.Pattern) -> tuple[str, int]:
    if not budget.spend(1 + len(s) // _SCAN_CHARS):
        return _failsafe(s)
    return _by_cluster(s, rule, budget, candidates)


def _mask_reference(s: str, count: int, has_digit: bool) -> tuple[str, int]:
    """Every rule over the whole string, in the rules file's order (the regexes as written)."""
    if has_digit and len(s) >= MIN_DIGITS:
        s, n = mask_cards(s)
        count += n
    for regex, mask, hint in _PATTERNS:
        if hint == "@" and "@" in s:
            s, n = _subn_until_clean(regex, mask, s)
            count += n
        elif hint == "digit" and has_digit:
            s, n = regex.subn(mask, s)
            count += n
    return s, count


def _subn_until_clean(regex: re.Pattern, mask: str, s: str) -> tuple[str, int]:
    """``regex.subn`` again while it masked something and an "@" is left: a domain whose last
    label is cut at 63 letters leaves the rest of that run, and with the next "@" it is an
    email of its own (``a@ex.com`` + 70 letters + ``@ex.com``). Each pass removes an "@",
    so the passes are at most the "@"s."""
    total = 0
    while True:
        s, n = regex.subn(mask, s)
        total += n
        if not n or "@" not in s:
            return s, total


def _scrub_list(items: list, sensitive_params: Collection[str], fast: bool, budget: Budget) -> int:
    masked = 0
    for i, item in enumerate(items):
        if isinstance(item, str):
            if item:  # "" holds nothing to mask
                items[i], n = mask_string(item, sensitive_params, fast=fast, budget=budget)
                masked += n
        elif isinstance(item, dict):
            masked += _scrub_dict(item, sensitive_params, fast, budget)
        elif isinstance(item, list):
            masked += _scrub_list(item, sensitive_params, fast, budget)
        # numbers, booleans and null are never PII patterns by contract
    return masked


def _scrub_dict(node: dict, sensitive_params: Collection[str], fast: bool, budget: Budget) -> int:
    masked = 0
    renamed: dict[str, str] = {}
    for key in list(node):
        if isinstance(key, str) and key.lower() in DROPPED_KEYS:
            del node[key]
            masked += 1
            continue
        if isinstance(key, str) and key:
            new, n = mask_string(key, sensitive_params, fast=fast, budget=budget)
            if n:
                renamed[key] = new
                masked += n
        value = node[key]
        if isinstance(value, str):
            if value:
                node[key], n = mask_string(value, sensitive_params, fast=fast, budget=budget)
                masked += n
        elif isinstance(value, dict):
            masked += _scrub_dict(value, sensitive_params, fast, budget)
        elif isinstance(value, list):
            masked += _scrub_list(value, sensitive_params, fast, budget)
    if renamed:
        _rename_keys(node, renamed)
    return masked


def _rename_keys(node: dict, renamed: dict[str, str]) -> None:
    """Give masked keys their masked names, in place and in order. Keys that were not masked
    keep theirs; a masked name already taken becomes "<name>#2", "#3", ... (the first free
    one, in key order), so no value is lost or overwritten."""
    taken = {k for k in node if k not in renamed}
    items = list(node.items())
    node.clear()
    for key, value in items:
        new = renamed.get(key, key)
        if key in renamed:
            base, n = new, 1
            while new in taken:
                n += 1
                new = f"{base}#{n}"
            taken.add(new)
        node[new] = value


def scrub_event(event: dict, sensitive_params: Collection[str] = DEFAULT_SENSITIVE_PARAMS, *, fast: bool = True) -> int:
    """Mask PII in the event's url, name and metadata (keys and values) in place; return how
    many items were masked. The exact checks draw on one Budget per event.

    ``fast=False``: mask_string without its prefilters (the reference they are tested against).
    """
    masked, budget = 0, Budget()
    for field in ("url", "name"):
        value = event.get(field)
        if isinstance(value, str) and value:
            event[field], n = mask_string(value, sensitive_params, fast=fast, budget=budget)
            masked += n
    if isinstance(event.get("metadata"), dict):
        masked += _scrub_dict(event["metadata"], sensitive_params, fast, budget)
    return masked

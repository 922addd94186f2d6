"""The privacy prefilters only skip work: masking with them equals masking without them."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.cards import DIGIT_RUN, MIN_DIGITS
from app.ingest.privacy import (
    _ANY_DIGIT_PATTERN,
    _ANY_DIGIT_RULE,
    _CARD_CANDIDATE,
    DEFAULT_SENSITIVE_PARAMS,
    RULES,
    mask_string,
)

SETTINGS = settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
PARAMS = DEFAULT_SENSITIVE_PARAMS
DIGIT_PATTERNS = [re.compile(p["regex"]) for p in RULES["patterns"] if p["hint"] == "digit"]

# Strings made of what the rules look at: digits, separators, signs, brackets, @, dots,
# query syntax, letters on either side, and a little of everything else.
_PIECES = ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "378282246310005", "+44 20 7946 0958",
           "+1 (555) 123-4567", "(555) 123-4567", "555-123-4567", "555.123.4567", "020 7946 0958", "06 12 34 56 78",
           "123-45-6789", "123 45 6789", "jane.doe@example.com", "a@b.co", "?token=abc", "&q=x", "#access_token=t",
           "api%5Fkey=k", "1700000000000", "2024-01-15T10:30:00.123Z", "v1.2.3", "12/25", "x", "-", " ", ".", ",", "+",
           "(", ")", "@", "=", "?", "&", "é", "٤", "0", "7", "55", "?to\u212aen=x", "?TOKEN=x", "?next=/a?token=b",
           ";sid=1", "?Search=x", "?ke y=1", "?pass=[redacted]", "?code=", "&tenant=acme", "?%74oken=x", "=x"]
strings = st.one_of(
    st.lists(st.sampled_from(_PIECES), max_size=8).map("".join),
    st.text(alphabet="0123456789 -+().,@=?&#;xX", max_size=40),
    st.text(max_size=30),
)


@SETTINGS
@given(s=strings)
def test_mask_string_with_prefilters_equals_without(s):
    assert mask_string(s, PARAMS) == mask_string(s, PARAMS, fast=False)


@SETTINGS
@given(s=strings, params=st.sampled_from([frozenset({"tenant", "to\u212aen", "a.b"}), frozenset(), {"token", "q"}]))
def test_other_parameter_lists_with_and_without_prefilters(s, params):
    assert mask_string(s, params) == mask_string(s, params, fast=False)


@SETTINGS
@given(s=strings)
def test_digit_matches_start_where_the_union_looks(s):
    """Every match of a digit pattern starts with a digit, '+' or '(' (the union's lookahead)."""
    for regex in DIGIT_PATTERNS:
        for match in regex.finditer(s):
            assert match.group()[:1] in set("0123456789+(")
            assert _ANY_DIGIT_PATTERN.search(s) and _ANY_DIGIT_RULE.search(s)


@SETTINGS
@given(s=strings)
def test_every_card_candidate_run_passes_the_card_prefilter(s):
    for match in DIGIT_RUN.finditer(s):
        if sum(c.isdigit() for c in match.group()) >= MIN_DIGITS:  # a card needs that many digits
            assert re.search(_CARD_CANDIDATE, s) and _ANY_DIGIT_RULE.search(s)


@pytest.mark.parametrize("text", [v[0] for v in RULES["vectors"]] + RULES["keep"])
def test_shared_corpus_with_and_without_prefilters(text):
    assert mask_string(text, PARAMS) == mask_string(text, PARAMS, fast=False)


def test_an_email_mask_can_expose_a_phone_number():
    # "m555-123-4567" is no phone (glued to a letter) until the email before it is masked:
    # the digit prefilter must look at the string as the digit rules see it.
    text = "x@ex.com555-123-4567"
    assert mask_string(text, PARAMS, fast=False) == ("[email][phone]", 2)
    assert mask_string(text, PARAMS) == ("[email][phone]", 2)

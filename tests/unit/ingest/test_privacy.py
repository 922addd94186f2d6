"""Unit tests for app.ingest.privacy: the PII corpus, nesting, counts and hostile inputs."""

import copy

import pytest

from app.ingest.privacy import DEFAULT_SENSITIVE_PARAMS, DROPPED_KEYS, RULES, mask_string, scrub_event

PARAMS = DEFAULT_SENSITIVE_PARAMS

EMAILS = ["jane.doe@example.com", "J.Doe+tag@mail.example.co.uk", "x_y%z@sub-domain.io"]
CARDS = [
    "4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111",  # Visa
    "5555555555554444", "5555-5555-5555-4444",  # Mastercard
    "378282246310005", "3782 822463 10005",  # Amex, 4-6-5 grouping
    "6011111111111117", "4222222222222",  # Discover; 13-digit Visa
    "6304000000000000000",  # 19-digit Maestro
]
LUHN_INVALID = ["4111111111111112", "4111 1111 1111 1112", "1234567890123", "5555-5555-5555-4445"]
TOKENS = [
    ("https://app.example.com/cb?token=abc123&x=1", "https://app.example.com/cb?token=[redacted]&x=1"),
    ("/reset?x=1&PASSWORD=hunter2", "/reset?x=1&PASSWORD=[redacted]"),
    ("https://x.io/#access_token=eyJ.a.b&state=ok", "https://x.io/#access_token=[redacted]&state=ok"),
    ("https://s3/obj?X-Amz-Signature=deadbeef;a=b", "https://s3/obj?X-Amz-Signature=[redacted];a=b"),
    ("GET /api?api%5Fkey=k1 HTTP/1.1", "GET /api?api%5Fkey=[redacted] HTTP/1.1"),
    ('<a href="/x?sid=42">', '<a href="/x?sid=[redacted]">'),
    ("/login?code=&next=/", "/login?code=&next=/"),  # empty values have nothing to mask
    ("/list?page=token&sort=2", "/list?page=token&sort=2"),  # a value, not a name
    ("/search?q=jane+doe&page=2", "/search?q=[redacted]&page=2"),  # search terms are redacted
]


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2)
               for i, d in enumerate(digits)) % 10 == 0


def test_corpus_is_what_it_claims():
    assert all(luhn_ok(c) for c in CARDS)
    assert not any(luhn_ok(c) for c in LUHN_INVALID)


@pytest.mark.parametrize("email", EMAILS)
def test_emails_masked(email):
    assert mask_string(f"contact {email}, please", PARAMS) == ("contact [email], please", 1)


@pytest.mark.parametrize("card", CARDS)
def test_cards_masked_with_and_without_separators(card):
    assert mask_string(f"paid with {card}.", PARAMS) == ("paid with [card].", 1)
    assert mask_string(card, PARAMS) == ("[card]", 1)


@pytest.mark.parametrize("number", LUHN_INVALID + [
    "41111111111111111111",  # 20 digits: too long to be a card
    "411111111111",  # 12 digits: too short
    "order-4111111111111111x",  # glued to a letter
    "123e4567-e89b-12d3-a456-426614174000",  # digit runs inside a UUID
    "4111  1111 1111 1111",  # a double space is not a card separator
    "1234 5678 9012 3456 7890 1234",  # grouped digits with no Luhn-valid 13-19 digit window
    "٤١١١١١١١١١١١١١١١",  # Arabic-Indic digits are not card digits
])
def test_non_cards_unchanged(number):
    assert mask_string(number, PARAMS) == (number, 0)


def test_card_next_to_other_numbers_is_masked_alone():
    assert mask_string("4111 1111 1111 1111 12/25", PARAMS) == ("[card] 12/25", 1)
    assert mask_string("qty 2 4111111111111111", PARAMS) == ("qty 2 [card]", 1)


@pytest.mark.parametrize("text, expected", TOKENS)
def test_sensitive_query_params(text, expected):
    masked, count = mask_string(text, PARAMS)
    assert masked == expected
    assert count == (text != expected)


def test_custom_param_list_and_case_insensitive_names():
    assert mask_string("?Tenant=acme&token=t", frozenset({"tenant"})) == ("?Tenant=[redacted]&token=t", 1)


def test_masking_is_idempotent_and_counts_each_value():
    text = "a@b.io ?token=x&secret=y 4111111111111111"
    once, count = mask_string(text, PARAMS)
    assert (once, count) == ("[email] ?token=[redacted]&secret=[redacted] [card]", 4)
    assert mask_string(once, PARAMS) == (once, 0)


def test_param_holding_an_email_is_masked_once():
    assert mask_string("?token=a@b.io&to=c@d.io", PARAMS) == ("?token=[redacted]&to=[email]", 2)


def test_scrub_event_nested_metadata():
    event = {
        "event_id": "e", "type": "error", "ts_ms": 1, "session_id": "jane@example.com",
        "url": "https://shop.example/checkout?token=abc#card=4111111111111111",
        "name": "failed for jane@example.com",
        "metadata": {
            "total": 4111111111111111, "ok": True, "none": None, "ratio": 0.5,
            "jane@example.com": "keys are scrubbed too",
            "l1": {"l2": [{"l3": {"l4": {"l5": ["card 5555 5555 5555 4444", 4111111111111111,
                                                 "not a card 4111 1111 1111 1112"]}}}]},
            "headers": {"Authorization": "Bearer x", "COOKIE": "a=b", "Accept": "text/html",
                        "nested": [{"set-cookie": "s"}, {"X-API-Key": "k"}]},
            "Proxy-Authorization": "Basic x",
        },
    }
    masked = scrub_event(event, PARAMS)
    assert event["url"] == "https://shop.example/checkout?token=[redacted]#card=[card]"
    assert event["name"] == "failed for [email]"
    assert event["session_id"] == "jane@example.com"  # ids are charset-checked, not scrubbed
    meta = event["metadata"]
    assert meta["total"] == 4111111111111111  # JSON numbers are left alone
    assert (meta["ok"], meta["none"], meta["ratio"]) == (True, None, 0.5)
    assert meta["[email]"] == "keys are scrubbed too" and "jane@example.com" not in meta
    assert meta["l1"]["l2"][0]["l3"]["l4"]["l5"] == ["card [card]", 4111111111111111,
                                                   "not a card 4111 1111 1111 1112"]
    assert meta["headers"] == {"Accept": "text/html", "nested": [{}, {}]}
    assert "Proxy-Authorization" not in meta
    assert masked == 3 + 1 + 1 + 5  # url 2 + name 1, one key, one card, five dropped headers


def test_scrub_event_without_optional_fields():
    event = {"event_id": "e", "url": "", "name": "", "metadata": {}}
    assert scrub_event(event, PARAMS) == 0
    assert scrub_event({"event_id": "e"}) == 0


def test_scrub_event_leaves_clean_events_equal():
    event = {"url": "https://example.com/a?page=2", "name": "signup",
             "metadata": {"list": [1, "two", {"three": 3.0}], "date": "2026-11-27T10:00:00Z"}}
    before = copy.deepcopy(event)
    assert scrub_event(event, PARAMS) == 0
    assert event == before


def test_default_lists_are_lower_case():
    assert all(name == name.lower() for name in PARAMS | DROPPED_KEYS)
    assert {"password", "token", "secret", "auth", "key", "api_key"} <= PARAMS


@pytest.mark.parametrize("hostile", [
    "a" * 10_000 + "@", "a." * 5_000 + "@" + "b." * 5_000, "@a" * 5_000, "x@" + "a-" * 5_000,
    "1 " * 5_000, "1" * 10_000, "1-" * 5_000 + "x", "12345 " * 1_700, "?a=b&" * 2_000,
    "?" + "a" * 10_000 + "=", "4111 1111 1111 1112 " * 500,
])
def test_hostile_strings_are_linear(hostile):
    """A guard, not a performance target (scripts/bench_privacy.py prints the figures): linear
    scans take about a millisecond, a backtracking pattern on these inputs takes minutes, so a
    10 s alarm only trips on backtracking, whatever the machine's load."""
    import signal

    def _backtracking(*_a):
        raise AssertionError("masking did not finish in 10 s: a pattern backtracks")

    old = signal.signal(signal.SIGALRM, _backtracking)
    signal.alarm(10)
    try:
        out = mask_string(hostile, PARAMS)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert isinstance(out[0], str)  # (masked text, count)


def test_a_full_request_is_scrubbed_completely():
    metadata = {f"k{i}": f"user{i}@example.com paid 4111 1111 1111 1111 at /p?token=t{i}"
                for i in range(60)}
    events = [{"url": "https://example.com/?page=1", "name": "n", "metadata": dict(metadata)}
              for _ in range(1000)]
    assert sum(scrub_event(e, PARAMS) for e in events) == 1000 * 60 * 3  # cost: scripts/bench_privacy.py


@pytest.mark.parametrize("text, expected", RULES["vectors"])
def test_shared_rule_vectors(text, expected):
    """The vectors of privacy_rules.json: the SDK's unit tests run the very same list."""
    assert mask_string(text, PARAMS)[0] == expected


@pytest.mark.parametrize("text", RULES["keep"])
def test_shared_false_positive_corpus_unchanged(text):
    """Timestamps, UUIDs, prices, order ids and the like stay as they are."""
    assert mask_string(text, PARAMS) == (text, 0)


def test_epoch_milliseconds_are_never_cards():
    # 1700000000004 passes Luhn; issuer numbers start with 2-6, so it is no card.
    assert mask_string("1700000000004", PARAMS) == ("1700000000004", 0)

"""Standard Webhooks signing, checked against the reference standardwebhooks verifier."""

import base64
from datetime import UTC, datetime

import pytest
import standardwebhooks

from app.forwarding.signing import decode_secret, sign, webhook_headers

SECRET = "whsec_" + base64.b64encode(b"observer-test-secret-32-bytes!!!").decode()
BODY = b'{"session":{"project":"p1"},"events":[]}'


def test_decode_secret_returns_key_bytes():
    assert decode_secret(SECRET) == b"observer-test-secret-32-bytes!!!"


def test_decode_secret_accepts_missing_padding():
    padded = "whsec_" + base64.b64encode(b"abcd1").decode()
    assert padded.endswith("=")
    assert decode_secret(padded.rstrip("=")) == b"abcd1"


@pytest.mark.parametrize("bad", ["", "abc", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_%%%"])
def test_decode_secret_rejects_malformed(bad):
    with pytest.raises(ValueError, match="secret"):
        decode_secret(bad)


def test_sign_matches_reference_implementation():
    key = decode_secret(SECRET)
    ours = sign(key, "p1:s1:1", 1_700_000_000, BODY)
    ref = standardwebhooks.Webhook(SECRET).sign(
        "p1:s1:1", datetime.fromtimestamp(1_700_000_000, tz=UTC), BODY.decode())
    assert ours == ref
    assert ours.startswith("v1,")


def test_headers_verify_with_standardwebhooks():
    headers = webhook_headers(decode_secret(SECRET), "p1:s1:1", BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "p1:s1:1"
    assert standardwebhooks.Webhook(SECRET).verify(BODY, headers) == {
        "session": {"project": "p1"}, "events": []}


def test_tampered_body_is_rejected():
    headers = webhook_headers(decode_secret(SECRET), "p1:s1:1", BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(BODY.replace(b"p1", b"p2"), headers)


def test_other_secret_is_rejected():
    headers = webhook_headers(decode_secret(SECRET), "p1:s1:1", BODY)
    other = "whsec_" + base64.b64encode(b"another-secret").decode()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(BODY, headers)


def test_timestamp_comes_from_now_and_changes_the_signature():
    key = decode_secret(SECRET)
    first = webhook_headers(key, "p1:s1:1", BODY, now=1_700_000_000.9)
    later = webhook_headers(key, "p1:s1:1", BODY, now=1_700_000_060)
    assert first["webhook-timestamp"] == "1700000000"
    assert first["webhook-signature"] != later["webhook-signature"]


def test_non_ascii_body_signs_exact_bytes():
    body = '{"name":"caf\u00e9 \u2603"}'.encode()
    headers = webhook_headers(decode_secret(SECRET), "p1:s1:2", body)
    standardwebhooks.Webhook(SECRET).verify(body, headers)


def test_several_secrets_give_one_signature_each_and_either_verifies_alone():
    other = "whsec_" + base64.b64encode(b"a-second-secret-for-rotation-32b").decode()
    headers = webhook_headers([decode_secret(SECRET), decode_secret(other)], "p1:s1:1", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, other):
        standardwebhooks.Webhook(secret).verify(BODY, headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(BODY, headers)

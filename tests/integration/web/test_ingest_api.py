"""POST /v1/events over the real app: real Redis (broker + limiter) and real PostgreSQL (keys).

Every test builds the app with ``create_app(config=...)`` pointing REDIS_URL and
CELERY_BROKER_URL at a Redis db of its own, so the one Celery message a 202 promises can be
read back from the Redis list ``events`` (kombu's Redis transport key for the queue).
"""
from __future__ import annotations

import base64
import gzip
import io
import json
import re
import time
import tracemalloc
import uuid
import zlib

import pytest
import redis

from app.keys.store import KeyStore
from app.web.factory import create_app

CLOSED = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def env(redis_url, clean_pg):
    """Settings for one test: its own Redis db (broker + limiter) and key prefix, clean PostgreSQL."""
    return {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": clean_pg,
            "REDIS_KEY_PREFIX": f"it{uuid.uuid4().hex[:8]}:", "RATE_LIMIT_DEFAULT": "1000/second",
            "RATE_LIMIT_PER_IP": "1000/second", "LOG_LEVEL": "WARNING"}


@pytest.fixture
def make_app(env):
    def factory(**overrides):
        return create_app(config={**env, **overrides})
    return factory


@pytest.fixture
def client(make_app):
    return make_app().test_client()


@pytest.fixture
def store(clean_pg):
    return KeyStore(clean_pg)


@pytest.fixture
def key(store):
    return store.create("shop")[1]


@pytest.fixture
def broker(redis_url):
    return redis.Redis.from_url(redis_url)


def event(**extra):
    e = {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
         "session_id": "sess-1", "url": "https://shop.test/cart", "metadata": {"button": "buy"}}
    e.update(extra)
    return e


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def post(client, body=None, key=None, *, data=None, headers=None, **kw):
    h = {**(bearer(key) if key else {}), **(headers or {})}
    if data is None:
        return client.post("/v1/events", json=body, headers=h, **kw)
    kw.setdefault("content_type", "application/json")
    return client.post("/v1/events", data=data, headers=h, **kw)


def broker_messages(broker) -> list[dict]:
    """Every message waiting on the ``events`` queue, decoded (kombu JSON envelope, base64 body,
    zlib-compressed msgpack)."""
    from kombu import compression, serialization

    out = []
    for raw in broker.lrange("events", 0, -1):
        envelope = json.loads(raw)
        assert envelope["properties"]["body_encoding"] == "base64"
        assert envelope["content-type"] == "application/x-msgpack"
        assert envelope["headers"]["compression"] == "application/x-gzip"
        body = compression.decompress(base64.b64decode(envelope["body"]), envelope["headers"]["compression"])
        args, kwargs, _embed = serialization.loads(body, envelope["content-type"], envelope["content-encoding"],
                                                   accept={"application/x-msgpack"})
        out.append({"envelope": envelope, "args": args, "kwargs": kwargs, "size": len(raw)})
    return out


def assert_error(resp, status, code=None):
    """The one documented error shape plus the X-Request-ID header."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "request_id", "details"}, err
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    assert resp.headers["X-Request-ID"] and err["request_id"] == resp.headers["X-Request-ID"]
    if code:
        assert err["code"] == code, err
    # never a stack trace or SQL
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and "SELECT" not in text
    return err


# --------------------------------------------------------------------------- 202 + broker


def test_accepted_batch_publishes_exactly_one_message(client, key, broker):
    t = int(time.time() * 1000)
    events = [
        event(url="https://shop.test/reset?token=s3cr3t&page=2", metadata={"email": "jane.doe@example.com",
              "note": "card 4111 1111 1111 1111", "n": 4111111111111111, "deep": {"a": [1, "x"]}}),
        event(type="custom", name="signup", timestamp=t - 5, metadata=None),
    ]
    r = post(client, {"events": events, "sent_at": t}, key, headers={"X-Request-ID": "client-req-0001"})
    assert r.status_code == 202, r.get_data(as_text=True)
    body = r.get_json()
    assert body == {"accepted": 2, "rejected": [], "request_id": "client-req-0001"}
    assert r.headers["X-Request-ID"] == "client-req-0001"

    msgs = broker_messages(broker)
    assert len(msgs) == 1
    env = msgs[0]["envelope"]
    assert env["headers"]["task"] == "events.persist"
    assert env["headers"]["request_id"] == "client-req-0001"
    assert env["properties"]["delivery_info"]["routing_key"] == "events"
    # Task events (Flower) carry the batch id and size, never its contents.
    assert env["headers"]["argsrepr"] == f"[<batch {msgs[0]['args'][0]['batch_id']}: 2 events>]"
    (batch,) = msgs[0]["args"]
    assert batch["project"] == "shop" and batch["request_id"] == "client-req-0001"
    assert re.fullmatch(r"[0-9a-f]{32}", batch["batch_id"])
    assert [e["event_id"] for e in batch["events"]] == [e["event_id"] for e in events]
    first, second = batch["events"]
    assert first["url"] == "https://shop.test/reset?token=[redacted]&page=2"
    # metadata travels as a JSON string, scrubbed; numbers untouched
    assert isinstance(first["metadata"], str)
    assert json.loads(first["metadata"]) == {"email": "[email]", "note": "card [card]", "n": 4111111111111111,
                                             "deep": {"a": [1, "x"]}}
    assert second["metadata"] == "{}" and second["name"] == "signup" and second["ts_ms"] == t - 5
    raw = json.dumps(batch)
    assert "jane.doe@example.com" not in raw and "s3cr3t" not in raw and "4111 1111" not in raw


def test_partial_acceptance_rejects_bad_events_alone(client, key, broker):
    good1, good2 = event(), event()
    bad = {"event_id": "not-a-uuid", "type": "click"}
    r = post(client, {"events": [good1, bad, good2, "nope", good1]}, key)
    assert r.status_code == 202
    body = r.get_json()
    assert body["accepted"] == 2
    rej = {x["index"]: x for x in body["rejected"]}
    assert set(rej) == {1, 3, 4}
    assert rej[1]["code"] == "invalid_event" and "event_id" in rej[1]["errors"]
    assert rej[3]["code"] == "not_an_object"
    assert rej[4]["code"] == "duplicate_event_id"
    (msg,) = broker_messages(broker)
    assert [e["event_id"] for e in msg["args"][0]["events"]] == [good1["event_id"], good2["event_id"]]


def test_rate_limit_headers_on_ingest_answers(make_app, store, broker):
    _id, key = store.create("shop", rate_limit="10/minute")
    client = make_app().test_client()
    before = int(time.time())
    seen = []
    for _ in range(3):
        r = post(client, {"events": [event()]}, key)
        assert r.status_code == 202
        seen.append(int(r.headers["X-RateLimit-Remaining"]))
        assert r.headers["X-RateLimit-Limit"] == "10"
        reset = int(r.headers["X-RateLimit-Reset"])
        assert before <= reset <= int(time.time()) + 61  # epoch seconds, within the window
    assert seen == [9, 8, 7]
    # error answers from the ingest view carry them too
    r = post(client, {"events": [{"type": "click"}]}, key)
    assert_error(r, 400, "no_acceptable_events")
    assert r.headers["X-RateLimit-Remaining"] == "6"
    assert len(broker_messages(broker)) == 3


# --------------------------------------------------------------------------- 401 / 403


def test_401_without_a_key(client, broker):
    err = assert_error(post(client, {"events": [event()]}), 401, "missing_api_key")
    assert "key" in err["message"].lower()
    assert broker.llen("events") == 0


@pytest.mark.parametrize("bad", ["obs_pk_" + "A" * 43, "not-even-a-key", "obs_pk_short"])
def test_401_with_an_unknown_key(client, bad, broker):
    assert_error(post(client, {"events": [event()]}, bad), 401, "invalid_api_key")
    assert_error(post(client, {"events": [event()]}, headers={"X-API-Key": bad}), 401, "invalid_api_key")
    assert_error(post(client, {"events": [event()], "api_key": bad}), 401, "invalid_api_key")
    assert broker.llen("events") == 0


def test_401_with_a_revoked_key(make_app, store, broker):
    key_id, key = store.create("shop")
    client = make_app().test_client()
    # Override KEY_CACHE_TTL (default 30 s) to 0.2 s: short enough to wait out here.
    short = make_app(KEY_CACHE_TTL="0.2").test_client()
    assert post(client, {"events": [event()]}, key).status_code == 202
    assert post(short, {"events": [event()]}, key).status_code == 202  # its cache now holds the key
    store.revoke(str(key_id))
    # a fresh process (empty key cache) refuses it at once; a warm cache once its entry expired
    # (tests/integration/web/test_key_revocation.py shows that over two real gunicorn processes)
    fresh = make_app().test_client()
    assert_error(post(fresh, {"events": [event()]}, key), 401, "invalid_api_key")
    time.sleep(0.3)
    assert_error(post(short, {"events": [event()]}, key), 401, "invalid_api_key")
    assert broker.llen("events") == 2


def test_403_on_a_foreign_origin_and_cors_on_an_allowed_one(client, store, broker):
    _id, key = store.create("shop", origins=["https://shop.test", "https://www.shop.test"])
    r = post(client, {"events": [event()]}, key, headers={"Origin": "https://evil.test"})
    assert_error(r, 403, "origin_not_allowed")
    assert broker.llen("events") == 0

    r = post(client, {"events": [event()]}, key, headers={"Origin": "https://www.shop.test"})
    assert r.status_code == 202
    assert r.headers["Access-Control-Allow-Origin"] == "https://www.shop.test"
    assert "Origin" in [v.strip() for v in r.headers["Vary"].split(",")]
    exposed = r.headers["Access-Control-Expose-Headers"]
    for h in ("X-Request-ID", "X-RateLimit-Limit", "Retry-After"):
        assert h in exposed
    # no Origin (a server-side client) is not subject to the browser allow-list
    assert post(client, {"events": [event()]}, key).status_code == 202
    assert broker.llen("events") == 2


def test_cors_preflight(client):
    r = client.options("/v1/events", headers={"Origin": "https://shop.test", "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "content-type, authorization"})
    assert r.status_code == 204
    assert r.get_data() == b""
    methods = {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"POST", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization", "x-api-key", "x-request-id", "content-encoding"} <= allowed
    assert r.headers["Access-Control-Allow-Origin"] == "https://shop.test"
    assert "Origin" in r.headers["Vary"]
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert r.headers["X-Request-ID"]


# --------------------------------------------------------------------------- 413 / 415 / 400


def test_413_on_a_2_mib_body(client, key, broker):
    big = json.dumps({"events": [event(metadata={"pad": "x" * (2 * 1024 * 1024)})]})
    err = assert_error(post(client, key=key, data=big), 413, "payload_too_large")
    assert err["details"] == {"max_bytes": 1048576}
    assert broker.llen("events") == 0


def test_413_on_1001_events(client, key, broker):
    err = assert_error(post(client, {"events": [event() for _ in range(1001)]}, key), 413, "too_many_events")
    assert err["details"]["max_events"] == 1000
    # 1000 is fine
    r = post(client, {"events": [event() for _ in range(1000)]}, key)
    assert r.status_code == 202 and r.get_json()["accepted"] == 1000
    assert broker.llen("events") == 1


def _gzip_bomb(inflated_mib: int) -> bytes:
    """One gzip member of ``inflated_mib`` MiB of zeros, compressed as a stream (~1030:1)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    out = [comp.compress(zeros) for _ in range(inflated_mib)]
    out.append(comp.flush())
    return b"".join(out)


def _peak_during(fn):
    """Run fn under tracemalloc; return (result, peak bytes allocated while it ran)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - base


PEAK_LIMIT = 16 * 1024 * 1024


def test_413_on_a_gzip_bomb_without_inflating_it(client, key, broker):
    # How memory is measured: tracemalloc (in this process) traces every Python allocation,
    # zlib's output buffers and zlib's own state included (CPython's zlib allocates through
    # PyMem_RawMalloc, which tracemalloc traces). The peak is taken over the whole request
    # handling -- the Flask test client building the WSGI environ, the ingest view, the error
    # answer -- and must stay under 16 MiB while the bomb would inflate to 200 MiB (and the
    # second one to several GiB).
    #
    # The control first proves the instrument sees inflation: fully inflating 32 MiB shows
    # a peak of at least 32 MiB.
    small = _gzip_bomb(32)
    _, control_peak = _peak_during(lambda: gzip.decompress(small))
    assert control_peak >= 32 * 1024 * 1024

    # 1) under the raw 1 MiB limit (about 200 KiB on the wire), inflating to 200 MiB: refused
    # by the inflated-size check after at most MAX_BODY_BYTES + 1 of output.
    bomb = _gzip_bomb(200)
    assert len(bomb) < 1024 * 1024
    r, peak = _peak_during(lambda: post(client, key=key, data=bomb, headers={"Content-Encoding": "gzip"}))
    err = assert_error(r, 413, "payload_too_large")
    assert "inflated" in err["message"]
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.1f} MiB"
    print(f"gzip bomb 200 MiB ({len(bomb)} bytes gzip): peak {peak / 2**20:.2f} MiB")

    # 2) a few MiB of gzip (concatenated members, valid gzip) inflating to 3.2 GiB: refused
    # without reading past the raw limit -- with and without a Content-Length up front.
    multi = bomb * 16
    assert len(multi) > 3 * 1024 * 1024
    r, peak2 = _peak_during(lambda: post(client, key=key, data=multi, headers={"Content-Encoding": "gzip"}))
    assert_error(r, 413, "payload_too_large")
    assert peak2 < PEAK_LIMIT, f"peak {peak2 / 2**20:.1f} MiB"
    # chunked: no Content-Length; gunicorn marks such a body wsgi.input_terminated
    r, peak3 = _peak_during(lambda: post(client, key=key, data=io.BytesIO(multi),
                                         headers={"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"},
                                         environ_base={"wsgi.input_terminated": True}))
    assert_error(r, 413, "payload_too_large")
    assert peak3 < PEAK_LIMIT, f"peak {peak3 / 2**20:.1f} MiB"
    print(f"gzip bomb 3.2 GiB ({len(multi)} bytes gzip): peak {peak2 / 2**20:.2f} / {peak3 / 2**20:.2f} MiB")
    assert broker.llen("events") == 0


def test_gzip_body_within_limits_is_accepted(client, key, broker):
    body = gzip.compress(json.dumps({"events": [event()]}).encode())
    r = post(client, key=key, data=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 202
    assert broker.llen("events") == 1


@pytest.mark.parametrize("ctype,encoding,code", [
    ("application/xml", None, "unsupported_media_type"),
    ("multipart/form-data; boundary=x", None, "unsupported_media_type"),
    ("application/json; charset=latin-1", None, "unsupported_media_type"),
    (None, None, "unsupported_media_type"),
    ("application/json", "br", "unsupported_content_encoding"),
])
def test_415_on_an_unsupported_content_type(client, key, broker, ctype, encoding, code):
    headers = {"Content-Encoding": encoding} if encoding else {}
    data = json.dumps({"events": [event()]})
    if ctype is None:
        r = client.post("/v1/events", data=data, headers={**bearer(key), **headers})
    else:
        r = post(client, key=key, data=data, content_type=ctype, headers=headers)
    assert_error(r, 415, code)
    assert broker.llen("events") == 0


@pytest.mark.parametrize("data", ['{"events": [', "not json", "", '{"events": [NaN]}', b"\xff\xfe{}"])
def test_400_on_malformed_json(client, key, data, broker):
    assert_error(post(client, key=key, data=data), 400, "malformed_json")
    assert broker.llen("events") == 0


@pytest.mark.parametrize("body", [[], {"no_events": 1}, {"events": "x"}])
def test_400_on_a_body_that_is_not_a_batch(client, key, body):
    assert_error(post(client, body, key), 400, "invalid_batch")


def test_400_when_no_event_is_acceptable(client, key, broker):
    old = int(time.time() * 1000) - 30 * 86400 * 1000
    events = [{"type": "click"}, 42, event(type="nope"), event(timestamp=old), event(type="custom")]
    err = assert_error(post(client, {"events": events}, key), 400, "no_acceptable_events")
    details = err["details"]
    assert [d["index"] for d in details] == [0, 1, 2, 3, 4]
    assert [d["code"] for d in details] == ["invalid_event", "not_an_object", "invalid_event",
                                            "timestamp_out_of_range", "invalid_event"]
    assert "event_id" in details[0]["errors"] and "type" in details[2]["errors"] and "name" in details[4]["errors"]
    assert all(isinstance(msgs, list) for d in details for msgs in d["errors"].values())
    assert broker.llen("events") == 0


# --------------------------------------------------------------------------- 429


def test_429_for_one_key(make_app, store, broker):
    _id, key = store.create("shop", rate_limit="3/minute")
    _id2, other = store.create("shop")
    client = make_app().test_client()
    for _i in range(3):
        assert post(client, {"events": [event()]}, key).status_code == 202
    r = post(client, {"events": [event()]}, key)
    err = assert_error(r, 429, "rate_limited")
    assert "3 per 1 minute" in err["message"]
    assert 0 < int(r.headers["Retry-After"]) <= 60
    assert r.headers["X-RateLimit-Limit"] == "3" and r.headers["X-RateLimit-Remaining"] == "0"
    # the same key through the body (sendBeacon) is limited too; another key is not
    assert_error(post(client, {"events": [event()], "api_key": key}, data=None), 429, "rate_limited")
    assert post(client, {"events": [event()]}, other).status_code == 202
    assert broker.llen("events") == 4  # three for the limited key, one for the other: nothing for a 429


def test_429_for_one_ip_while_another_ip_with_the_same_key_passes(make_app, key, broker):
    client = make_app(RATE_LIMIT_PER_IP="2/minute").test_client()
    ip_a, ip_b = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "198.51.100.9"}
    for _ in range(2):
        assert post(client, {"events": [event()]}, key, environ_base=ip_a).status_code == 202
    r = post(client, {"events": [event()]}, key, environ_base=ip_a)
    err = assert_error(r, 429, "rate_limited")
    assert "2 per 1 minute" in err["message"]
    assert 0 < int(r.headers["Retry-After"]) <= 60
    assert r.headers["X-RateLimit-Limit"] == "2" and r.headers["X-RateLimit-Remaining"] == "0"
    r = post(client, {"events": [event()]}, key, environ_base=ip_b)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert broker.llen("events") == 3


def test_rate_limiter_redis_down_fails_open(make_app, key, redis_url, broker):
    # Documented decision (RATELIMIT_FAIL_OPEN=true): events are accepted when the limiter's
    # Redis is unreachable; the broker is still the real Redis, so nothing is lost.
    client = make_app(RATELIMIT_REDIS_URL=CLOSED).test_client()
    for _ in range(3):
        r = post(client, {"events": [event()]}, key)
        assert r.status_code == 202, r.get_data(as_text=True)
    assert broker.llen("events") == 3


# --------------------------------------------------------------------------- beacon, 503


def test_text_plain_beacon_with_the_key_in_the_body(client, key, broker):
    body = json.dumps({"events": [event()], "api_key": key})
    r = client.post("/v1/events", data=body, content_type="text/plain;charset=UTF-8",
                    headers={"Origin": "https://shop.test"})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.get_json()["accepted"] == 1
    assert r.headers["Access-Control-Allow-Origin"] == "https://shop.test"
    (msg,) = broker_messages(broker)
    assert "api_key" not in json.dumps(msg["args"]) and key not in json.dumps(msg["args"])


def test_503_with_retry_after_when_the_broker_is_unreachable(make_app, key, broker):
    client = make_app(CELERY_BROKER_URL=CLOSED).test_client()
    started = time.monotonic()
    r = post(client, {"events": [event()]}, key)
    assert time.monotonic() - started < 10  # bounded retries, no hanging request
    assert_error(r, 503, "broker_unavailable")
    assert "accepted" not in r.get_json()
    assert r.headers["Retry-After"] == "5"  # ours, not flask-limiter's window reset
    # nothing silently accepted: not on the real Redis either
    assert broker.llen("events") == 0


# --------------------------------------------------------------------------- Flask's own errors, request ids


def test_flask_404_and_405_use_the_error_shape(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.post("/v1/nope", json={}), 404, "not_found")
    r = client.get("/v1/events")
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]
    assert_error(client.put("/health"), 405, "method_not_allowed")


def test_request_id_echoed_when_valid_and_replaced_when_not(client, key, broker):
    r = post(client, {"events": [event()]}, key, headers={"X-Request-ID": "sdk-abc.123:XYZ_9"})
    assert r.headers["X-Request-ID"] == "sdk-abc.123:XYZ_9" and r.get_json()["request_id"] == "sdk-abc.123:XYZ_9"
    for bad in ("has spaces in it", "short", "x" * 129, "<script>alert(1)</script>", "ünïcödé-id-123"):
        r = post(client, {"events": [event()]}, key, headers={"X-Request-ID": bad})
        assert r.status_code == 202
        rid = r.headers["X-Request-ID"]
        assert rid != bad and HEX_ID.match(rid) and r.get_json()["request_id"] == rid
    # errors too, and endpoints other than ingest
    r = client.get("/health", headers={"X-Request-ID": "health-check-0001"})
    assert r.headers["X-Request-ID"] == "health-check-0001"
    err = assert_error(client.get("/missing", headers={"X-Request-ID": "bad id"}), 404)
    assert HEX_ID.match(err["request_id"])
    ids = [m["envelope"]["headers"]["request_id"] for m in broker_messages(broker)]
    assert len(ids) == 6 and "sdk-abc.123:XYZ_9" in ids


def test_unhandled_error_is_a_500_in_the_error_shape_without_leaking(make_app, key):
    app = make_app()

    def boom(batch, request_id):
        raise RuntimeError("SELECT password FROM secrets -- internal detail")

    app.extensions["observer"].publisher.publish_batch = boom
    r = post(app.test_client(), {"events": [event()]}, key)
    err = assert_error(r, 500, "internal_error")
    assert err["message"] == "Internal error." and err["details"] is None
    assert "secrets" not in r.get_data(as_text=True) and "RuntimeError" not in r.get_data(as_text=True)


def test_retry_after_only_on_429_and_503(make_app, key, broker):
    client = make_app().test_client()
    r = post(client, {"events": [event()]}, key)
    assert r.status_code == 202 and "X-RateLimit-Limit" in r.headers
    assert "Retry-After" not in r.headers  # flask-limiter would add its window reset here

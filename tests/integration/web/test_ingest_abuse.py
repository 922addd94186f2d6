"""The public ingest edge under abuse, over the real app: real Redis (broker, limits) and real
PostgreSQL (keys), at the default limits unless a test says otherwise.

Unknown keys (a per-IP budget before PostgreSQL, misses kept apart from valid keys), limits on
accepted events and new sessions, origins normalized, and the Authorization header's forms.
"""
from __future__ import annotations

import time
import uuid

import pytest
import redis

from app.keys import model
from app.keys.cache import KeyStoreUnavailable
from app.keys.store import KeyStore
from app.settings import load_settings
from app.storage import postgres
from app.web.factory import create_app

CLOSED_PG = "postgresql://postgres@127.0.0.1:1/observer"  # nothing listens on port 1: refused at once


@pytest.fixture
def env(redis_url, clean_pg):
    """Its own Redis db and key prefix, clean PostgreSQL; every limit at its default."""
    return {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": clean_pg,
            "REDIS_KEY_PREFIX": f"ab{uuid.uuid4().hex[:8]}:", "LOG_LEVEL": "WARNING"}


@pytest.fixture
def app(env):
    return create_app(config=env)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(clean_pg):
    return KeyStore(clean_pg)


@pytest.fixture
def broker(redis_url):
    return redis.Redis.from_url(redis_url)


def event(session_id="sess-1", **extra):
    e = {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
         "session_id": session_id, "url": "https://shop.test/cart", "metadata": {"button": "buy"}}
    e.update(extra)
    return e


def post(client, events, key=None, ip="203.0.113.7", headers=None, body_key=None):
    body = {"events": events}
    if body_key:
        body["api_key"] = body_key
    h = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1/events", json=body, headers={**h, **(headers or {})}, environ_base={"REMOTE_ADDR": ip})


def code(resp):
    return (resp.get_json() or {}).get("error", {}).get("code")


# --------------------------------------------------------------------------- finding 9: unknown keys


def test_unknown_keys_cannot_push_a_valid_key_out_before_a_postgres_blip(app, store):
    """More distinct unknown keys than the cache holds valid keys, each looked up in the real
    PostgreSQL, then PostgreSQL refuses connections once the valid key's entry is past its TTL:
    the valid key is still served from the cache, not answered 503."""
    rt = app.extensions["observer"]
    # Override: the valid-key bound (50,000 by default) lowered to 1,000, so that 1,001 real
    # lookups (not 50,001, over a minute here) exceed it; the misses' own bound stays at its default.
    rt.keys.max_entries = 1000
    _id, key = store.create("shop")
    assert rt.keys.get(key).project == "shop"
    for _ in range(rt.keys.max_entries + 1):
        assert rt.keys.get(model.generate()) is None  # one real PostgreSQL query each
    # The blip: the store's connections are refused (a real psycopg2 OperationalError), and the
    # clock moves past KEY_CACHE_TTL (30 s) instead of the test waiting it out.
    rt.keys.loader = KeyStore(CLOSED_PG).lookup
    base = rt.keys.clock
    rt.keys.clock = lambda: base() + rt.settings.key_cache_ttl + 1
    try:
        info = rt.keys.get(key)
    except KeyStoreUnavailable as exc:
        pytest.fail(f"the valid key was pushed out of the cache by unknown keys: {exc}")
    assert info is not None and info.project == "shop"
    # an unknown key during the blip cannot be checked (503), as before
    with pytest.raises(KeyStoreUnavailable):
        rt.keys.get(model.generate())


def test_unknown_key_lookups_are_limited_per_client_ip_before_postgres(app, client, store, broker):
    """KEY_LOOKUP_RATE_PER_IP (60/minute): the 61st distinct unknown key from one IP is refused
    with 429 before PostgreSQL is asked; another IP, and a valid key already cached, still pass."""
    rt = app.extensions["observer"]
    asked = []
    real = rt.keys.loader

    def counting_loader(k):  # the real store's lookup, counted
        asked.append(k)
        return real(k)

    rt.keys.loader = counting_loader
    _id, key = store.create("shop")
    assert post(client, [event()], key).status_code == 202  # cached now (one lookup, counted)
    statuses = [code(post(client, [event()], model.generate())) for _ in range(59)]
    assert statuses == ["invalid_api_key"] * 59
    assert len(asked) == 60
    r = post(client, [event()], model.generate())
    assert r.status_code == 429, r.get_data(as_text=True)
    assert code(r) == "rate_limited" and r.get_json()["error"]["details"]["limit"] == "lookup"
    assert 0 < int(r.headers["Retry-After"]) <= 60
    assert r.headers["X-RateLimit-Limit"] == "60" and r.headers["X-RateLimit-Remaining"] == "0"
    # the body-carried key (sendBeacon) is held to the same budget
    assert post(client, [event()], body_key=model.generate()).status_code == 429
    assert len(asked) == 60  # PostgreSQL was not asked for the refused ones
    assert post(client, [event()], key).status_code == 202  # a cached valid key costs no lookup
    assert code(post(client, [event()], model.generate(), ip="198.51.100.9")) == "invalid_api_key"
    assert len(asked) == 61
    assert broker.llen("events") == 2


# --------------------------------------------------------------------------- finding 10: events, sessions


def test_one_client_cannot_create_sessions_faster_than_its_limit(client, store, broker):
    """SESSION_RATE_LIMIT_PER_IP (20/second): one client starting a new session per event gets 20
    in a second, then 429 with the limit's headers; events of sessions it already has still pass,
    another client can still start sessions, and the next second it has 20 again."""
    _id, key = store.create("shop")
    for _attempt in range(3):  # a one-second window: retried if this machine was too slow
        time.sleep(1.1)  # a fresh window
        ip = f"203.0.113.{20 + _attempt}"
        started = time.monotonic()
        first = post(client, [event(f"s-{_attempt}-{i}") for i in range(20)], key, ip=ip)
        refused = post(client, [event(f"s-{_attempt}-{i}") for i in range(20, 1000)], key, ip=ip)
        one_more = post(client, [event(f"s-{_attempt}-0"), event(f"new-{_attempt}")], key, ip=ip)
        known = post(client, [event(f"s-{_attempt}-1"), event(f"s-{_attempt}-19")], key, ip=ip)
        if time.monotonic() - started < 0.9:
            break
    assert first.status_code == 202, first.get_data(as_text=True)
    assert refused.status_code == 429
    err = refused.get_json()["error"]
    assert err["code"] == "rate_limited" and err["details"]["limit"] == "ip_sessions"
    assert "20 per 1 second new sessions" in err["message"]
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-RateLimit-Limit"] == "20" and refused.headers["X-RateLimit-Remaining"] == "0"
    assert one_more.status_code == 429
    assert known.status_code == 202  # the sessions it has keep going
    assert post(client, [event("other-ip-session")], key, ip="198.51.100.9").status_code == 202
    time.sleep(1.1)
    assert post(client, [event(f"next-{i}") for i in range(20)], key, ip=ip).status_code == 202
    assert broker.llen("events") == 4


def test_new_sessions_are_limited_per_key_across_clients(client, store):
    """SESSION_RATE_LIMIT (100/second) per key, whatever the client IPs: within one second, 100 new
    sessions from five clients (20 each, their own limit) leave none for a sixth."""
    _id, key = store.create("shop")
    for _attempt in range(3):  # a one-second window: retried if this machine was too slow
        time.sleep(1.1)  # a fresh window
        started = time.monotonic()
        firsts = [post(client, [event(f"a-{_attempt}-{c}-{i}") for i in range(20)], key, ip=f"203.0.113.{c}")
                  for c in range(5)]
        second = post(client, [event(f"b-{_attempt}")], key, ip=f"198.51.100.{_attempt}")
        if time.monotonic() - started < 0.9:
            break
    assert [r.status_code for r in firsts] == [202] * 5
    assert second.status_code == 429 and second.get_json()["error"]["details"]["limit"] == "key_sessions"
    assert second.headers["X-RateLimit-Limit"] == "100" and int(second.headers["Retry-After"]) == 1


def test_accepted_events_are_limited_per_client_ip(client, store):
    """EVENT_RATE_LIMIT_PER_IP (2000/second): a client that sent 2000 accepted events in this
    second is refused the next one; rejected events do not count."""
    _id, key = store.create("shop")
    for _attempt in range(3):
        time.sleep(1.1)
        ip = f"203.0.113.{10 + _attempt}"
        started = time.monotonic()
        bad = post(client, [event(), {"type": "click"}], key, ip=ip)  # one accepted, one rejected
        post(client, [event() for _ in range(1000)], key, ip=ip)
        full = post(client, [event() for _ in range(999)], key, ip=ip)
        over = post(client, [event()], key, ip=ip)
        if time.monotonic() - started < 0.9:
            break
    assert bad.status_code == 202 and bad.get_json()["accepted"] == 1
    assert full.status_code == 202, full.get_data(as_text=True)
    assert over.status_code == 429 and over.get_json()["error"]["details"]["limit"] == "ip_events"
    assert "2000 per 1 second events" in over.get_json()["error"]["message"]


def test_limits_fail_open_in_memory_when_the_limiter_redis_is_down(env, store):
    """RATELIMIT_FAIL_OPEN (default on): with the limiter's Redis unreachable, requests pass and
    each process still counts them in memory (RATE_LIMIT_PER_IP lowered to 2/minute so the
    in-memory count shows in three requests)."""
    client = create_app(config={**env, "RATELIMIT_REDIS_URL": "redis://127.0.0.1:1/0",
                                "RATE_LIMIT_PER_IP": "2/minute"}).test_client()
    _id, key = store.create("shop")
    assert [post(client, [event()], key).status_code for _ in range(3)] == [202, 202, 429]


# --------------------------------------------------------------------------- finding 13: origins


def test_origins_are_normalized_when_a_key_is_created_and_compared(client, store, broker):
    _id, key = store.create("shop", origins=["https://Shop.Test/", "http://localhost:5173/", "https://bücher.example"])
    assert store.lookup(key).origins == ("https://shop.test", "http://localhost:5173", "https://xn--bcher-kva.example")
    for origin in ("https://shop.test", "http://localhost:5173", "https://xn--bcher-kva.example"):
        r = post(client, [event()], key, headers={"Origin": origin})
        assert r.status_code == 202, (origin, r.get_data(as_text=True))
    r = post(client, [event()], key, headers={"Origin": "https://evil.test"})
    assert r.status_code == 403 and code(r) == "origin_not_allowed"
    assert broker.llen("events") == 3


def test_keys_stored_with_unnormalized_origins_still_work(client, store, clean_pg):
    """Keys created before origins were checked: what PostgreSQL holds is compared normalized."""
    key_id, key = store.create("shop")
    with postgres.cursor(clean_pg) as cur:
        cur.execute("UPDATE api_keys SET origins = %s WHERE id = %s",
                    (["https://Shop.Test/", "https://www.shop.test:443", "not an origin"], key_id))
    for origin in ("https://shop.test", "https://www.shop.test"):
        r = post(client, [event()], key, headers={"Origin": origin})
        assert r.status_code == 202, (origin, r.get_data(as_text=True))
    assert post(client, [event()], key, headers={"Origin": "https://evil.test"}).status_code == 403
    # rotating such a key carries its origins over (normalized), it does not fail on them
    new_id, new_key = store.rotate(str(key_id), 60)
    assert store.lookup(new_key).origins == ("https://shop.test", "https://www.shop.test", "not an origin")


def test_keys_create_refuses_what_is_not_an_origin(app, clean_pg):
    runner = app.test_cli_runner()
    out = runner.invoke(args=["keys", "create", "shop", "--origin", "https://shop.test/checkout"])
    assert out.exit_code != 0
    assert "'https://shop.test/checkout' is not an origin" in out.output, out.output
    assert KeyStore(clean_pg).list() == []  # nothing created
    out = runner.invoke(args=["keys", "create", "shop", "--origin", "HTTPS://Shop.Test:443/"])
    assert out.exit_code == 0, out.output
    assert KeyStore(clean_pg).list()[0]["origins"] == ["https://shop.test"]


# --------------------------------------------------------------------------- finding 17: Authorization


def test_authorization_with_the_bare_key_is_accepted(client, store, broker):
    _id, key = store.create("shop")
    r = post(client, [event()], headers={"Authorization": key})
    assert r.status_code == 202, r.get_data(as_text=True)
    r = post(client, [event()], headers={"Authorization": f"bearer   {key}  "})
    assert r.status_code == 202, r.get_data(as_text=True)
    assert broker.llen("events") == 2


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Token obs_pk_x", "Bearer", "Bearer   "])
def test_another_authorization_scheme_is_named_not_missing(client, store, value):
    r = post(client, [event()], headers={"Authorization": value})
    assert r.status_code == 401 and code(r) == "malformed_authorization", r.get_data(as_text=True)
    assert "Bearer" in r.get_json()["error"]["message"]
    # a key elsewhere still counts (e.g. a proxy's own Authorization)
    _id, key = store.create("shop")
    assert post(client, [event()], headers={"Authorization": value, "X-API-Key": key}).status_code == 202
    assert post(client, [event()], headers={"Authorization": value}, body_key=key).status_code == 202


def test_default_limits_are_the_documented_ones():
    s = load_settings(overrides={})
    assert (s.event_rate_limit, s.event_rate_limit_per_ip, s.session_rate_limit, s.session_rate_limit_per_ip,
            s.key_lookup_rate_per_ip) == ("10000/second", "2000/second", "100/second", "20/second", "60/minute")

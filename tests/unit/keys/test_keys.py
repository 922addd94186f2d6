"""Key model and its TTL cache (pure logic)."""
from __future__ import annotations

import pytest

from app.keys import model
from app.keys.cache import KeyCache


def test_key_shape_and_digest():
    key = model.generate()
    assert key.startswith("obs_pk_") and model.well_formed(key) and len(key) == 50
    assert not model.well_formed(key + "x") and not model.well_formed("obs_pk_short")
    assert model.same_digest(model.digest(key), model.digest(key))
    assert not model.same_digest(model.digest(key), model.digest(model.generate()))
    assert model.display_prefix(key) == key[:13]


def test_cache_hits_misses_and_expiry():
    now = [0.0]
    calls = []
    info = model.KeyInfo(1, "p")
    good = model.generate()

    def loader(k):
        calls.append(k)
        return info if k == good else None

    cache = KeyCache(loader, ttl=30, clock=lambda: now[0], max_entries=2, max_misses=2)
    bad = model.generate()
    assert cache.get(good) is info and cache.get(good) is info
    assert cache.get(bad) is None and cache.get(bad) is None  # misses are cached too
    assert calls == [good, bad]
    assert cache.get("not-a-key") is None and len(calls) == 2  # malformed never hits the store
    now[0] = 31
    cache.get(good)
    assert calls == [good, bad, good]  # a revoked key would be refused within the TTL
    cache.get(model.generate())
    cache.get(model.generate())
    assert len(cache._misses) == 2 and len(cache._data) == 1  # bounded, and misses never evict a valid key


@pytest.mark.parametrize(("raw", "origin"), [
    ("https://Shop.Example/", "https://shop.example"),
    ("HTTPS://WWW.SHOP.TEST", "https://www.shop.test"),
    ("https://shop.example:443", "https://shop.example"),
    ("http://shop.example:80/", "http://shop.example"),
    ("http://shop.example:8080", "http://shop.example:8080"),
    ("https://shop.example:80", "https://shop.example:80"),
    ("https://bücher.example", "https://xn--bcher-kva.example"),
    ("https://BÜCHER.example", "https://xn--bcher-kva.example"),
    ("http://[::1]:3000", "http://[::1]:3000"),
    ("http://localhost:5173", "http://localhost:5173"),
    ("  https://shop.example  ", "https://shop.example"),
])
def test_origins_are_normalized_as_browsers_send_them(raw, origin):
    assert model.normalize_origin(raw) == origin
    assert model.normalize_origin(origin) == origin  # idempotent


@pytest.mark.parametrize("raw", ["shop.example", "https://shop.example/path", "https://shop.example/?q=1",
                                 "https://shop.example#x", "https://user@shop.example", "null", "*", "https://",
                                 "https://shop.example:0", "https://shop.example:99999", "https://shop.example:",
                                 "https://exa mple.com", "https://shop..example", "https://-bad.example",
                                 "https://*.shop.example", "//shop.example"])
def test_what_is_not_an_origin_is_refused_with_its_reason(raw):
    with pytest.raises(ValueError, match="is not an origin"):
        model.normalize_origin(raw)
    assert model.origin_or_raw(raw) == raw  # compared as it is where it cannot be normalized

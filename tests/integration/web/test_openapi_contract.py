"""app/web/openapi.json is a valid OpenAPI 3.1 document and real answers conform to it.

Answers come from the real app (real Redis broker/limiter, real PostgreSQL keys); each is
checked against the response the spec documents for its path, method and status (or the
operation's ``default``): the JSON body against the schema, documented headers against theirs.
"""
from __future__ import annotations

import gzip
import json
import time
import uuid
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app.forwarding.payload import build_payload, encode
from app.keys.store import KeyStore
from app.web.factory import create_app

SPEC_PATH = Path(__file__).resolve().parents[3] / "app" / "web" / "openapi.json"
SPEC = json.loads(SPEC_PATH.read_text())
BASE = "urn:observer:openapi"
REGISTRY = Registry().with_resource(BASE, Resource.from_contents(SPEC, default_specification=DRAFT202012))
CLOSED = "redis://127.0.0.1:1/0"


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _validator(pointer: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": BASE + pointer}, registry=REGISTRY,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def _resolve(node: dict, pointer: str = "") -> dict:
    return _resolve_at(node, pointer)[0]


def _resolve_at(node: dict, pointer: str) -> tuple[dict, str]:
    """Follow $refs; return the node and the JSON pointer it lives at."""
    while "$ref" in node:
        pointer = node["$ref"]
        node = REGISTRY.resolver(BASE).lookup(BASE + pointer).contents
    return node, pointer


def check_response(resp, path: str, method: str) -> dict:
    """Validate a test-client answer against the spec; return the documented response used."""
    op = SPEC["paths"][path][method]
    status = str(resp.status_code)
    key = status if status in op["responses"] else "default"
    assert key in op["responses"], f"{method.upper()} {path} -> {status} is not documented"
    if key == "default":
        assert resp.status_code >= 400, f"success {status} only matched 'default'"
    documented, where = _resolve_at(op["responses"][key], _pointer("paths", path, method, "responses", key))
    content = documented.get("content")
    if content:
        media = resp.mimetype
        assert media in content, f"{method.upper()} {path} -> {status}: {media} not documented"
        if media == "application/json":
            ptr = where + "/content/" + media.replace("/", "~1") + "/schema"
            errors = sorted(_validator(ptr).iter_errors(resp.get_json()), key=str)
            assert not errors, f"{method.upper()} {path} -> {status}: " + "; ".join(e.message for e in errors[:5])
    else:
        assert resp.get_data() == b"", f"{status} documents no body"
    for name, header in (documented.get("headers") or {}).items():
        header = _resolve(header)
        value = resp.headers.get(name)
        if name == "X-Request-ID":
            assert value, f"{status} without X-Request-ID"
        if value is None:
            continue
        schema = header["schema"]
        typed = int(value) if schema.get("type") == "integer" else value
        errors = list(Draft202012Validator(schema).iter_errors(typed))
        assert not errors, f"header {name}={value!r}: {errors[0].message}"
    return documented


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def env(redis_url, clean_pg):
    return {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": clean_pg,
            "REDIS_KEY_PREFIX": f"oa{uuid.uuid4().hex[:8]}:", "RATE_LIMIT_DEFAULT": "1000/second",
            "RATE_LIMIT_PER_IP": "1000/second", "LOG_LEVEL": "WARNING"}


@pytest.fixture
def client(env):
    return create_app(config=env).test_client()


@pytest.fixture
def key(clean_pg):
    return KeyStore(clean_pg).create("shop")[1]


def event(**extra):
    e = {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
         "session_id": "s-1", "url": "https://shop.test/", "metadata": {"a": 1}}
    e.update(extra)
    return e


def post(client, body=None, key=None, **kw):
    headers = kw.pop("headers", {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return client.post("/v1/events", json=body, headers=headers, **kw)


# --------------------------------------------------------------------------- the document


def test_spec_is_valid_openapi_31():
    assert SPEC["openapi"].startswith("3.1")
    validate_spec(SPEC)  # raises on any error


def test_served_spec_is_the_file(client):
    r = client.get("/openapi.json")
    check_response(r, "/openapi.json", "get")
    assert r.get_json() == SPEC


def test_every_route_is_documented(client):
    app = client.application
    routes = {(rule.rule, m.lower()) for rule in app.url_map.iter_rules() for m in rule.methods - {"HEAD"}
              if not (m == "OPTIONS" and rule.rule != "/v1/events")}
    documented = {(p, m) for p, ops in SPEC["paths"].items() for m in ops}
    assert routes <= documented, routes - documented


# --------------------------------------------------------------------------- real answers


def test_202_and_partial_acceptance_conform(client, key):
    check_response(post(client, {"events": [event()]}, key), "/v1/events", "post")
    r = post(client, {"events": [event(), {"type": "x"}, 7]}, key)
    assert r.status_code == 202
    check_response(r, "/v1/events", "post")
    r = client.post("/v1/events", data=json.dumps({"events": [event()], "api_key": key}), content_type="text/plain")
    assert r.status_code == 202
    check_response(r, "/v1/events", "post")


def test_the_request_schema_admits_what_the_api_accepts_and_not_what_it_refuses(client, key):
    """Issue 19 #18: the documented request agrees with the answers. An empty batch is refused
    (400), so the schema must not admit it; a batch with an item that breaks ``Event`` is
    accepted (202, the item in ``rejected``), so the schema must admit it; an X-Request-ID the
    API replaces rather than refuses must be admitted by its parameter's schema."""
    batch = _validator(_pointer("components", "schemas", "Batch"))
    r = post(client, {"events": []}, key)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "no_acceptable_events"
    assert not batch.is_valid({"events": []}), "the spec admits an empty batch the API refuses with 400"

    partial = {"events": [{"event_id": "not-a-uuid", "type": "click", "unknown_field": 1}, event()]}
    r = post(client, partial, key)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.get_json()["accepted"] == 1 and [x["index"] for x in r.get_json()["rejected"]] == [0]
    check_response(r, "/v1/events", "post")
    assert batch.is_valid(partial), "the spec refuses a batch the API accepts in part (202)"

    long_id = "x" * 200
    r = post(client, {"events": [event()]}, key, headers={"X-Request-ID": long_id})
    assert r.status_code == 202 and r.headers["X-Request-ID"] != long_id  # replaced, not refused
    param = SPEC["components"]["parameters"]["XRequestID"]["schema"]
    assert Draft202012Validator(param).is_valid(long_id), "the spec refuses an X-Request-ID the API replaces"


@pytest.mark.parametrize("case", ["malformed", "not_a_batch", "none_acceptable"])
def test_400_conforms(client, key, case):
    if case == "malformed":
        r = client.post("/v1/events", data="{", content_type="application/json",
                        headers={"Authorization": f"Bearer {key}"})
    elif case == "not_a_batch":
        r = post(client, {"events": {"x": 1}}, key)
    else:
        r = post(client, {"events": [{"type": "click"}, "x"]}, key)
    assert r.status_code == 400
    check_response(r, "/v1/events", "post")
    if case == "none_acceptable":
        # details is documented as a list of Rejection
        ptr = _pointer("components", "schemas", "Rejection")
        for item in r.get_json()["error"]["details"]:
            assert not list(_validator(ptr).iter_errors(item))


def test_401_403_conform(client, clean_pg):
    r = post(client, {"events": [event()]})
    assert r.status_code == 401
    check_response(r, "/v1/events", "post")
    r = post(client, {"events": [event()]}, "obs_pk_" + "z" * 43)
    assert r.status_code == 401
    check_response(r, "/v1/events", "post")
    _id, k = KeyStore(clean_pg).create("shop", origins=["https://shop.test"])
    r = post(client, {"events": [event()]}, k, headers={"Origin": "https://evil.test"})
    assert r.status_code == 403
    check_response(r, "/v1/events", "post")


def test_413_conforms(client, key):
    r = post(client, {"events": [event() for _ in range(1001)]}, key)
    assert r.status_code == 413
    check_response(r, "/v1/events", "post")
    r = client.post("/v1/events", data=b"x" * (2 * 1024 * 1024), content_type="application/json",
                    headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 413
    check_response(r, "/v1/events", "post")
    bomb = gzip.compress(bytes(8 * 1024 * 1024))
    r = client.post("/v1/events", data=bomb, content_type="application/json",
                    headers={"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"})
    assert r.status_code == 413
    check_response(r, "/v1/events", "post")


def test_415_conforms(client, key):
    r = client.post("/v1/events", data="<x/>", content_type="application/xml",
                    headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 415
    check_response(r, "/v1/events", "post")
    r = client.post("/v1/events", data="{}", content_type="application/json",
                    headers={"Authorization": f"Bearer {key}", "Content-Encoding": "br"})
    assert r.status_code == 415
    check_response(r, "/v1/events", "post")


def test_429_conforms(env, clean_pg):
    client = create_app(config={**env, "RATE_LIMIT_PER_IP": "1/minute"}).test_client()
    _id, k = KeyStore(clean_pg).create("shop", rate_limit="5/minute")
    assert post(client, {"events": [event()]}, k).status_code == 202
    r = post(client, {"events": [event()]}, k)
    assert r.status_code == 429
    doc = check_response(r, "/v1/events", "post")
    for name in doc["headers"]:  # every documented header is really sent on a 429
        assert name in r.headers, name


def test_503_conforms(env, key):
    client = create_app(config={**env, "CELERY_BROKER_URL": CLOSED}).test_client()
    r = post(client, {"events": [event()]}, key)
    assert r.status_code == 503
    doc = check_response(r, "/v1/events", "post")
    assert "Retry-After" in doc["headers"] and "Retry-After" in r.headers


def test_preflight_404_405_conform(client):
    r = client.options("/v1/events", headers={"Origin": "https://a.test", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    check_response(r, "/v1/events", "options")
    r = client.get("/v1/events")
    assert r.status_code == 405
    check_response(r, "/health", "get")  # any documented 'default' Error response; /v1/events has no GET
    r = client.post("/health")
    assert r.status_code == 405
    check_response(r, "/health", "get")
    r = client.get("/nowhere")
    assert r.status_code == 404
    check_response(r, "/health", "get")


def test_health_and_ready_conform(client, env):
    r = client.get("/health")
    assert r.status_code == 200
    check_response(r, "/health", "get")
    ops = "http://127.0.0.1:8001"  # the operator listener (OPERATOR_PORT): /ready and /metrics
    r = client.get("/ready", base_url=ops)
    assert r.status_code == 200, r.get_data(as_text=True)  # broker + PostgreSQL are up
    check_response(r, "/ready", "get")
    down = create_app(config={**env, "CELERY_BROKER_URL": CLOSED}).test_client()
    r = down.get("/ready", base_url=ops)
    assert r.status_code == 503 and r.get_json()["status"] == "degraded"
    check_response(r, "/ready", "get")
    r = client.get("/metrics", base_url=ops)
    check_response(r, "/metrics", "get")
    for path in ("/ready", "/metrics"):  # the public listener: the documented 404
        r = client.get(path)
        assert r.status_code == 404
        check_response(r, path, "get")


# --------------------------------------------------------------------------- the UFSE webhook payload


def test_ufse_payload_conforms_to_the_webhook_schema():
    t0 = 1_795_773_600_000
    rows = [{"event_id": str(uuid.UUID(int=i + 1)), "type": t, "ts_ms": t0 + i * 1500 + 7,
             "received_at_ms": t0 + i * 1500 + 900,
             "session_id": "s-1f2e", "url": "https://shop.test/p?token=[redacted]",
             "name": "signup" if t == "custom" else "",
             "anonymous_id": "anon.7" if i else "", "metadata": json.dumps({"i": i, "deep": {"x": [1, "é"]}})}
            for i, t in enumerate(["page_view", "click", "custom"])]
    totals = {"event_count": 3, "counts": {"page_view": 1, "click": 1, "custom": 1}, "first_ts_ms": t0 + 7,
              "last_ts_ms": t0 + 3007, "pages": ["https://shop.test/p"], "request_ids": ["req-1", "req-2"]}
    payload = build_payload(project="shop", session_id="s-1f2e", version=1, finalized_reason="idle",
                            finalized_at_ms=t0 + 40_000, event_rows=rows, totals=totals, max_events=2,
                            max_request_ids=10, max_pages=10)
    assert payload["session"]["truncated"] is True
    body = json.loads(encode(payload))  # exactly the bytes that are signed and sent
    ptr = _pointer("webhooks", "ufseSession", "post", "requestBody", "content", "application/json", "schema")
    errors = list(_validator(ptr).iter_errors(body))
    assert not errors, [e.message for e in errors]
    # and the schema is not vacuous: a broken payload is refused
    broken = json.loads(json.dumps(body))
    broken["events"][0]["timestamp"] = "2026-11-27 10:00:00"
    del broken["session"]["request_ids"]
    broken["session"]["counts"]["bogus_type"] = 1
    assert len(list(_validator(ptr).iter_errors(broken))) >= 3
    # the spec's own example is valid too
    body = SPEC["webhooks"]["ufseSession"]["post"]["requestBody"]
    example = _resolve(_resolve(body["content"]["application/json"]["schema"]))["examples"][0]
    assert not list(_validator(ptr).iter_errors(example))

"""Reliability defects at the default settings, each over real servers and real libraries.

- sessions.update retries on redis-py's own ConnectionError (not Python's);
- the due-time index and the UFSE circuit on a real Redis;
- a known key keeps working while PostgreSQL is unreachable (fail static), an unknown one gets 503;
- a half-open broker (accepts, never answers) costs a request seconds, not for ever;
- Sentry receives no local variables and no request body (a real local receiver);
- beat's sweep: one at a time under a lock, a heartbeat /ready reports.
"""
from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from app.keys.store import KeyStore
from app.web.factory import create_app

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a real redis.ConnectionError


@pytest.fixture
def env(redis_url, clean_pg):
    return {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": clean_pg,
            "REDIS_KEY_PREFIX": f"rel{uuid.uuid4().hex[:8]}:", "LOG_LEVEL": "WARNING"}


def _event(**kw):
    e = {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
         "session_id": "s-rel", "url": "https://shop.test/", "metadata": {}}
    e.update(kw)
    return e


# --------------------------------------------------------------------------- sessions.update


def test_sessions_update_retries_on_redis_pys_connection_error(monkeypatch, redis_url):
    """redis.ConnectionError derives from redis.RedisError, not from the builtin ConnectionError
    or OSError: a retry on the builtins alone would fail the task (and, acked on failure, the
    batch would never be counted). The retry is published to the real broker, with a countdown
    under the visibility timeout."""
    from celery.exceptions import Retry

    from app import resources as runtime
    from app.sessions.store import SessionStore
    from tasks import sessions
    from tasks.app import celery

    dead = redis.Redis.from_url(DEAD_REDIS, socket_connect_timeout=1, decode_responses=True)
    store = SessionStore(dead, prefix="t:", buckets=4, idle_s=1800, max_s=86400, marker_ttl_s=3600)
    monkeypatch.setattr(runtime, "session_store", lambda: store)
    monkeypatch.setattr(runtime, "clickhouse", lambda: None)  # never reached: Redis fails first
    monkeypatch.setattr(runtime, "insert_settings", lambda: None)
    monkeypatch.setitem(celery.conf, "broker_url", redis_url)  # retries go to this test's own Redis db
    monkeypatch.setattr(celery, "_pool", None)  # a producer pool bound to that URL
    monkeypatch.setattr(celery.amqp, "_producer_pool", None)
    summary = {"batch_id": "b1", "project": "p", "request_id": "", "received_at": int(time.time() * 1000),
               "sessions": {"s1": [1, 1, 1]}}
    sessions.update.push_request(id="t-1", args=[summary], kwargs={}, retries=0, is_eager=False,
                                 called_directly=False, delivery_info={})
    try:
        with pytest.raises(Retry) as info:
            sessions.update.run(summary)
    finally:
        sessions.update.pop_request()
        from kombu import pools

        pools.reset()  # kombu's pools are global per URL: leave none behind for later tests
    assert isinstance(info.value.exc, redis.ConnectionError)
    assert 0 < float(info.value.when) <= runtime.settings().sessions_retry_max
    queued = redis.Redis.from_url(redis_url).lrange("sessions", 0, -1)
    assert len(queued) == 1, "the retry was published to the broker"
    headers = json.loads(queued[0])["headers"]
    assert headers["retries"] == 1 and headers["eta"], headers


# --------------------------------------------------------------------------- due index + circuit


def test_due_index_parks_durably_and_releases_in_order(redis_url):
    from app.retry.due import DueIndex

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    idx = DueIndex(r, f"t{uuid.uuid4().hex[:6]}:", "forward")
    now = time.time()
    idx.park("a", {"attempt": 1}, now + 3600)
    idx.park("b", {"attempt": 2}, now - 1)
    idx.park("a", {"attempt": 1}, now + 7200)  # a duplicate never postpones
    assert [m for m, _ in idx.due(now)] == ["b"]
    assert idx.due_at("a") == pytest.approx(now + 3600, abs=0.01)
    assert r.ttl(idx.item_prefix + "a") > 0, "every parked item expires"
    assert r.ttl(idx.zset) >= r.ttl(idx.item_prefix + "a") > 0, "the index expires after its newest item"
    assert idx.release_all(now) == 1
    assert [m for m, _ in idx.due(now)] == ["b", "a"]
    idx.done(["a", "b"])
    assert idx.size() == 0 and r.get(idx.item_prefix + "a") is None


def test_circuit_opens_after_threshold_and_lets_one_probe_through(redis_url):
    from app.forwarding.circuit import Circuit

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    c = Circuit(r, f"t{uuid.uuid4().hex[:6]}:", "ufse.test", threshold=5, max_pause=60)
    now = 1_000_000.0
    for _ in range(4):
        assert c.failure(now) == 0.0
    assert c.allow(now) == (True, 0.0, False)
    until = c.failure(now)
    assert until == pytest.approx(now + 5)
    allowed, _, _ = c.allow(now + 1)
    assert not allowed, "open: nobody sends during the pause"
    assert c.allow(now + 6)[::2] == (True, True), "past the pause one caller probes"
    assert c.allow(now + 6)[0] is False, "and only one"
    assert c.failure(now + 6) == pytest.approx(now + 6 + 10), "a failed probe doubles the pause"
    assert c.success() is True and c.open_until() == 0.0 and c.allow(now + 7) == (True, 0.0, False)
    assert r.ttl(c.key) == -2, "a closed circuit leaves no key behind"
    c.failure(now)
    assert r.ttl(c.key) > 0, "circuit state expires"


# --------------------------------------------------------------------------- fail static on PostgreSQL


class Proxy:
    """A loopback TCP forwarder that can cut every connection (PostgreSQL 'going down')."""

    def __init__(self, host: str, port: int) -> None:
        from devtools.proxy import TcpProxy

        self.p = TcpProxy(host, port)
        self.port = self.p.port


def test_known_keys_keep_working_while_postgres_is_down(env, pg_server):
    from urllib.parse import urlparse

    u = urlparse(pg_server)
    # The suite's PostgreSQL (the machine's, or the embedded one services.start_postgres runs)
    # always listens on TCP; a socket-only URL would make this test meaningless, so it fails.
    assert u.port, f"PostgreSQL must be reachable over TCP for the proxy: {pg_server}"
    proxy = Proxy(u.hostname, u.port)
    try:
        schema_url = env["DATABASE_URL"]
        via = schema_url.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{proxy.port}")
        _id, key = KeyStore(schema_url).create("failstatic")
        app = create_app({**env, "DATABASE_URL": via})
        client = app.test_client()
        cache = app.extensions["observer"].keys
        clock = [1000.0]
        cache.clock = lambda: clock[0]
        h = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/events", json={"events": [_event()]}, headers=h).status_code == 202
        proxy.p.down()
        clock[0] += 31  # past KEY_CACHE_TTL (30 s, the default)
        r = client.post("/v1/events", json={"events": [_event()]}, headers=h)
        assert r.status_code == 202, ("a known key must work from the cache while PostgreSQL is down: "
                                      f"{r.status_code} {r.get_data(as_text=True)}")
        _id2, unknown = KeyStore(schema_url).create("failstatic")
        r = client.post("/v1/events", json={"events": [_event()]}, headers={"Authorization": f"Bearer {unknown}"})
        assert r.status_code == 503 and r.headers.get("Retry-After"), r.get_data(as_text=True)
        assert r.get_json()["error"]["code"] == "key_store_unavailable"
        # the cache keeps known keys working, but the process reports itself unready (503):
        # PostgreSQL is one of the two stores /ready requires (app/web/health.py, docs/API.md)
        ready = client.get("/ready", base_url="http://127.0.0.1:8001")  # the operator listener
        assert ready.status_code == 503 and ready.get_json()["checks"]["postgres"]["ok"] is False
        clock[0] += 3600  # past KEY_CACHE_STALE_MAX: staleness is bounded
        r = client.post("/v1/events", json={"events": [_event()]}, headers=h)
        assert r.status_code == 503
        proxy.p.up()
        KeyStore(schema_url).revoke(str(_id))
        clock[0] += 31
        r = client.post("/v1/events", json={"events": [_event()]}, headers=h)
        assert r.status_code == 401, "revocation takes effect within the TTL once PostgreSQL answers"
    finally:
        proxy.p.close()


# --------------------------------------------------------------------------- half-open broker


def test_a_broker_that_accepts_and_never_answers_costs_seconds_not_forever(env):
    """Without a socket timeout on the Redis transport a publish to a silent broker blocks for ever."""
    from app.broker import BrokerUnavailable, Publisher
    from app.settings import load_settings

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel completes handshakes; nobody ever reads or writes
    port = listener.getsockname()[1]
    settings = load_settings(overrides={**env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0"})
    outcome: dict = {}

    def publish():
        started = time.monotonic()
        try:
            Publisher(settings).publish_batch({"batch_id": "x", "events": []}, "rid")
            outcome["result"] = "published?!"
        except BrokerUnavailable as exc:
            outcome["result"] = f"BrokerUnavailable: {exc}"[:120]
        outcome["seconds"] = time.monotonic() - started

    t = threading.Thread(target=publish, daemon=True)
    t.start()
    t.join(45)
    listener.close()
    print(f"half-open broker: {outcome}")
    assert not t.is_alive(), "the publish hung on a half-open broker connection"
    assert outcome["result"].startswith("BrokerUnavailable") and outcome["seconds"] < 30


# --------------------------------------------------------------------------- Sentry


class _SentryReceiver(BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        self.bodies.append(raw.decode("utf-8", "replace"))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_a):
        pass


def test_sentry_gets_no_local_variables_and_no_request_body(env, clean_pg, monkeypatch):
    """Sentry's include_local_variables would send the ingest view's locals (the raw batch): off."""
    import sentry_sdk

    server = ThreadingHTTPServer(("127.0.0.1", 0), _SentryReceiver)
    _SentryReceiver.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
        _id, key = KeyStore(clean_pg).create("sentry")
        app = create_app({**env, "SENTRY_DSN": dsn})
        import app.web.ingest as ingest_view

        def explode(event, params):  # a bug inside the view, after the raw body was parsed
            raise RuntimeError("scrubber bug")

        monkeypatch.setattr(ingest_view, "scrub_event", explode)
        # Built at run time: Sentry sends source lines around each frame, and this file's own
        # text must not count as a leak.
        secret = f"u{uuid.uuid4().hex[:10]}@example.com"
        card = " ".join([str(4000 + 111), str(1000 + 111), str(1000 + 111), str(1000 + 111)])
        r = app.test_client().post("/v1/events", json={"events": [_event(metadata={"email": secret, "card": card})]},
                                   headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 500 and r.get_json()["error"]["code"]
        sentry_sdk.flush(timeout=5)
        sent = "\n".join(_SentryReceiver.bodies)
        print(f"sentry received {len(_SentryReceiver.bodies)} envelope(s), {len(sent)} bytes")
        assert "scrubber bug" in sent, "the exception itself reaches Sentry"
        assert secret not in sent and card not in sent, "personal data reached Sentry"
        assert '"vars"' not in sent, "frame local variables reached Sentry"
        for line in sent.splitlines():
            if line.startswith("{") and '"exception"' in line:
                event = json.loads(line)
                assert "data" not in (event.get("request") or {}), "the request body reached Sentry"
    finally:
        server.shutdown()
        sentry_sdk.get_client().close(timeout=2)
        sentry_sdk.get_global_scope().set_client(None)  # back to the inactive client for later tests


# --------------------------------------------------------------------------- beat


def test_sweeps_run_one_at_a_time_and_leave_a_heartbeat_ready_reports(env, monkeypatch):
    from app import maintenance, resources
    from app.sessions.store import SessionStore
    from app.storage import redis_keys
    from tasks.app import celery

    r = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    prefix = resources.settings().redis_key_prefix
    lock, beat_key = redis_keys.sweep_lock(prefix), redis_keys.heartbeat(prefix, "sweep")
    store = SessionStore(r, prefix=prefix, buckets=4, idle_s=1800, max_s=86400, marker_ttl_s=3600)
    monkeypatch.setattr(resources, "sessions_redis", lambda: r)
    monkeypatch.setattr(resources, "session_store", lambda: store)
    r.delete(lock, beat_key)
    r.set(lock, "someone-else", px=5000)  # a second beat's sweep is running
    assert maintenance.sweep(celery) == -1 and r.get(beat_key) is None
    r.delete(lock)
    assert maintenance.sweep(celery) == 0
    beat = float(r.get(beat_key))
    assert time.time() - beat < 5 and r.get(lock) is None, "the lock is released by its owner"
    app = create_app({**env, "REDIS_KEY_PREFIX": prefix})
    ops = "http://127.0.0.1:8001"  # the operator listener (OPERATOR_PORT): /ready and /metrics
    checks = app.test_client().get("/ready", base_url=ops).get_json()["checks"]
    assert checks["beat"]["ok"] is True, checks["beat"]
    r.set(beat_key, f"{time.time() - 120:.3f}")
    checks = app.test_client().get("/ready", base_url=ops).get_json()["checks"]
    assert checks["beat"]["ok"] is False and "ago" in checks["beat"]["detail"]
    metrics = app.test_client().get("/metrics", base_url=ops).get_data(as_text=True)
    assert "observer_beat_last_sweep_timestamp" in metrics


def test_beat_sends_its_sweep_to_its_own_queue():
    from tasks.app import celery

    entry = celery.conf.beat_schedule["maintenance.sweep"]
    assert entry["options"]["queue"] == "maintenance"
    assert celery.conf.task_routes["maintenance.sweep"]["queue"] == "maintenance"
    assert celery.conf.task_routes["maintenance.reconcile"]["queue"] == "maintenance"


# --------------------------------------------------------------------------- ingest journal


def test_a_batch_the_broker_lost_after_a_202_is_republished_from_the_journal(env, clean_pg, monkeypatch):
    """kombu's Redis transport pops a message (BRPOP) before recording it unacked; a broker
    killed in between loses it although the API answered 202 (kombu #305). Simulated here on a
    real Redis exactly as the fault suite's AOF showed it: the RPOP, then nothing."""
    from app import maintenance
    from app.ingest import journal as journal_mod
    from tasks.app import celery

    _id, key = KeyStore(clean_pg).create("journal")
    app = create_app(env)
    r = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    resp = app.test_client().post("/v1/events", json={"events": [_event(session_id="s-lost")]},
                                  headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 202
    journal = app.extensions["observer"].journal
    assert journal is not None and journal.size() == 1
    lost = r.rpop("events")  # the worker's BRPOP took it; the broker died before the unacked write
    assert lost is not None and r.llen("events") == 0
    monkeypatch.setattr(maintenance, "journal_for", lambda _s: journal)
    monkeypatch.setattr(maintenance.redis_clients, "client", lambda url: r)
    monkeypatch.setitem(celery.conf, "broker_url", env["REDIS_URL"])
    monkeypatch.setattr(celery, "_pool", None)
    monkeypatch.setattr(celery.amqp, "_producer_pool", None)
    now = int(time.time() * 1000)
    try:
        assert maintenance.replay_journal(celery, limit=10, now_ms=now + 60_000) == 0, \
            "younger than JOURNAL_GRACE: may still be held"
        assert maintenance.replay_journal(celery, limit=10, now_ms=now + 91_000) == 1
        assert maintenance.replay_journal(celery, limit=10, now_ms=now + 92_000) == 0, \
            "re-published once per grace period"
    finally:
        from kombu import pools

        pools.reset()  # kombu's pools are global per URL: leave none behind for later tests
    again = json.loads(r.rpop("events"))
    assert again["headers"]["task"] == "events.persist"
    batch_id = [m for s in range(journal_mod.SHARDS) for m in r.zrange(journal._keys(s)[0], 0, -1)][0]
    journal.settle(batch_id)
    assert journal.size() == 0 and r.keys(f"{env['REDIS_KEY_PREFIX']}journal:*") == []


def test_near_maxmemory_the_api_answers_503_and_leaves_the_workers_headroom(env, clean_pg):
    """At maxmemory (noeviction) the workers' own writes fail and Celery calls OutOfMemoryError
    unrecoverable, so the API stops at BROKER_MEMORY_LIMIT (0.9, the default) of maxmemory."""
    _id, key = KeyStore(clean_pg).create("memory")
    app = create_app(env)
    client = app.test_client()
    r = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    h = {"Authorization": f"Bearer {key}"}
    assert client.post("/v1/events", json={"events": [_event()]}, headers=h).status_code == 202
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", str(int(used / 0.5)))  # used is half of maxmemory: under the limit
    try:
        time.sleep(1.1)  # the guard reads INFO at most once a second
        assert client.post("/v1/events", json={"events": [_event()]}, headers=h).status_code == 202, "under the limit"
        r.config_set("maxmemory", str(int(int(r.info("memory")["used_memory"]) * 1.03)))  # ~97 % used
        time.sleep(1.1)
        before = r.llen("events")
        resp = client.post("/v1/events", json={"events": [_event()]}, headers=h)
        assert resp.status_code == 503 and resp.headers["Retry-After"], resp.get_data(as_text=True)
        assert r.llen("events") == before, "nothing was published"
    finally:
        r.config_set("maxmemory", "0")


def test_journal_reads_entries_of_both_forms_and_settles_many_at_once(redis_url):
    """Entries written by an older web process (zlib JSON) and by this one (zlib msgpack) are
    both re-published; settle_many drops both in one round trip."""
    import base64 as b64
    import zlib

    from app.ingest import journal as journal_mod

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    journal = journal_mod.Journal(r, prefix, 86400)
    new = {"batch_id": "b-new", "project": "p", "received_at": 1_000,
           "events": [{"event_id": "e1", "metadata": "{\"é\":1}"}]}
    old = {"batch_id": "b-old", "project": "p", "received_at": 1_000, "events": [{"event_id": "e2", "metadata": "{}"}]}
    journal.write(new)
    index, body = journal._keys(journal_mod._shard("b-old"))
    r.set(body + "b-old", b64.b64encode(zlib.compress(json.dumps(old).encode(), 1)).decode())  # the older form
    r.zadd(index, {"b-old": 1_000})
    assert r.get(journal._keys(journal_mod._shard("b-new"))[1] + "b-new").startswith("m:")
    got = sorted(journal.overdue(older_than_ms=2_000, now_ms=3_000), key=lambda b: b["batch_id"])
    assert got == [new, old]
    journal.settle_many(["b-new", "b-old"])
    assert journal.size() == 0 and r.keys(f"{prefix}journal:*") == []


def test_a_flush_starts_no_clickhouse_call_after_its_budget():
    """The budget guard raises the transient error an outage raises, so the flush requeues."""
    from app.events.flush import is_transient
    from app.storage.clickhouse.client import ClickHouseError, Deadline

    calls = []

    class Recorder:
        database = "db"

        def execute(self, sql, params=None):
            calls.append(sql)
            return []

    live = Deadline(Recorder(), time.monotonic() + 60)
    assert live.execute("SELECT 1") == [] and live.database == "db"
    spent = Deadline(Recorder(), time.monotonic() - 0.001)
    with pytest.raises(ClickHouseError) as err:
        spent.execute("SELECT 2")
    assert is_transient(err.value) and calls == ["SELECT 1"]


def test_workers_accept_both_batch_encodings():
    """The workers take zlib msgpack batches and the JSON ones send_batch falls back to (a batch
    msgpack cannot encode); the flush's fallback task sessions.update is registered."""
    from kombu import serialization

    import tasks.events  # noqa: F401  (the worker imports every task module: celery.conf.include)
    import tasks.sessions  # noqa: F401
    from app.broker import batch_message
    from tasks.app import celery

    accept = celery.conf.accept_content
    assert {"json", "msgpack"} <= set(accept)
    assert "sessions.update" in celery.tasks and "events.persist" in celery.tasks
    batch = {"batch_id": "b", "project": "p", "request_id": "r", "received_at": 1, "events": [{"event_id": "e"}]}
    for serializer in ("json", batch_message(batch)["serializer"]):
        ctype, enc, data = serialization.dumps(((batch,), {}, {}), serializer=serializer)
        args, _kw, _embed = serialization.loads(data, ctype, enc, accept=serialization.prepare_accept_content(accept))
        assert args[0] == batch

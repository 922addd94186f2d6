"""Issue 20, acceptance 2: a person's data deleted with a receipt, on real servers.

A person (anonymous_id ``anon-1``) has events in several sessions: one still live, one frozen and
parked for a retry (UFSE answered 503), one dead-lettered (UFSE answered 400), and a poison batch
in the dead letters that mixes their events with another person's. Their events went the real
way: POST /v1/events (the app over real Redis and PostgreSQL), the published message read back
from the broker, stored in ClickHouse (18.16 server and chDB) and counted into Redis, the sessions
claimed and delivered to the UFSE sink (devtools/sink.py). ``flask --app app data delete`` records
the request; the deletion job runs until ``data status`` says ``verified``; the sink received the
signed notice; the same events sent again afterwards are dropped at ingest; the other person's
data is untouched.
"""
from __future__ import annotations

import base64
import json
import os
import time
import uuid

import pytest
import redis as redis_lib
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app import resources
from app.deletion import job
from app.deletion.store import STAGES
from app.forwarding import deliver as delivery
from app.forwarding import parked
from app.keys.store import KeyStore
from app.observability import metrics
from app.settings import load_settings
from app.web.factory import create_app
from devtools.sink import Sink

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
P = "acme"
SPEC = json.loads((__import__("pathlib").Path(__file__).resolve().parents[3] / "app/web/openapi.json").read_text())


def _messages(broker: redis_lib.Redis) -> list[dict]:
    """The first argument of every message on the ``events`` queue (kombu's envelope; a batch, or
    forward.record's row), then the queue emptied."""
    from kombu import compression, serialization

    out = []
    for raw in broker.lrange("events", 0, -1):
        envelope = json.loads(raw)
        body = base64.b64decode(envelope["body"])
        if envelope["headers"].get("compression"):
            body = compression.decompress(body, envelope["headers"]["compression"])
        args, _kw, _embed = serialization.loads(body, envelope["content-type"], envelope["content-encoding"],
                                                accept={"application/x-msgpack", "application/json"})
        out.append(args[0])
    broker.delete("events")
    return out


@pytest.fixture
def world(monkeypatch, redis_url, clean_pg, clickhouse_url, ch):
    from kombu import pools

    from app.storage import postgres

    with postgres.cursor(clean_pg) as cur:  # requests left open by an earlier test would run here too
        cur.execute("TRUNCATE deletion_audit, deletion_requests RESTART IDENTITY CASCADE")
    with Sink(secret=SECRET) as sink:
        env = {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "DATABASE_URL": clean_pg,
               "CLICKHOUSE_URL": clickhouse_url, "UFSE_URL": sink.url + "ufse", "UFSE_SECRET": SECRET,
               "REDIS_KEY_PREFIX": f"del{uuid.uuid4().hex[:6]}:", "LOG_LEVEL": "WARNING"}
        s = load_settings(overrides=env)
        resources.reset()
        monkeypatch.setattr(resources, "settings", lambda: s)
        monkeypatch.setattr(resources, "clickhouse", lambda: ch)  # the fixture's migrated backend
        app = create_app(config=env)
        _, key = KeyStore(clean_pg).create(P, [], None)
        yield {"app": app, "client": app.test_client(), "key": key, "sink": sink, "settings": s, "ch": ch,
               "broker": redis_lib.Redis.from_url(redis_url)}
        app.extensions["observer"].publisher.celery.close()
    pools.reset()
    resources.reset()


def _event(sid: str, anon: str, ts_ms: int) -> dict:
    """What the SDK sends (sdk/src/client.ts)."""
    return {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": ts_ms, "session_id": sid,
            "url": "https://shop.test/cart", "metadata": {"button": "buy"}, "anonymous_id": anon}


def _send(w, events: list[dict]) -> dict:
    resp = w["client"].post("/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {w['key']}"})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return resp.get_json()


def _store(w, batches: list[dict]) -> None:
    from app.events.persist import persist_batches
    from app.sessions.counting import count_batches

    persist_batches(w["ch"], batches, dedup_window=w["settings"].dedup_window)
    count_batches(resources.session_store(), w["ch"], batches)


def _count(ch, table: str, sids: list[str]) -> int:
    return int(ch.execute(f"SELECT count() FROM {ch.database}.{table} WHERE project = %(p)s "  # noqa: S608
                          "AND has(%(s)s, session_id)", {"p": P, "s": sids})[0][0])


def test_a_person_is_deleted_everywhere_with_a_receipt(world):
    w, ch = world, world["ch"]
    s = w["settings"]
    now = int(time.time() * 1000)
    idle_ago = now - (s.session_idle_timeout + 60) * 1000
    live, parked_sid, dead_sid, only_dlq, other = "s-live", "s-parked", "s-dead", "s-poison", "s-other"

    # Their sessions, through the API. Two went idle half an hour ago (their batches are stored as
    # received then), one is still live; another person's session is live beside them.
    for sid in (parked_sid, dead_sid):
        _send(w, [_event(sid, "anon-1", idle_ago - 2000), _event(sid, "anon-1", idle_ago - 1000)])
    old = _messages(w["broker"])
    for b in old:
        b["received_at"] = idle_ago
    _send(w, [_event(live, "anon-1", now - 1000), _event(live, "anon-1", now - 500),
              _event(other, "anon-2", now - 800)])
    fresh = _messages(w["broker"])
    _store(w, old + fresh)
    store = resources.session_store()
    store.note_lag(0)
    claimed = {c.session_id: c for c in store.claim_due(at_ms=now)}
    assert set(claimed) == {parked_sid, dead_sid}
    w["sink"].set_plan(by_webhook_id={f"{P}:{parked_sid}:1": [{"status": 503}], f"{P}:{dead_sid}:1": [{"status": 400}]})
    celery = w["app"].extensions["observer"].publisher.celery
    assert delivery.deliver(celery, P, parked_sid, 1) == "retrying"
    assert parked.due_index().due_at(parked.member(P, parked_sid, 1)) is not None, "parked for a retry"
    delivery.deliver(celery, P, dead_sid, 1)
    dlq = resources.dead_letters()
    assert [r["ref"] for r in dlq.list()] == [f"{P}:{dead_sid}:1"], "dead-lettered"
    from app.storage.clickhouse import queries

    # forward.record's message (on the events queue): the dead-lettered version's sessions row
    queries.insert_session_rows(ch, _messages(w["broker"]))
    # A poison batch mixing them with another person (its events never reached ClickHouse).
    poison = {"batch_id": "b-poison", "project": P, "request_id": "r", "received_at": now,
              "events": [{**_event(only_dlq, "anon-1", now), "ts_ms": now},
                         {**_event(other, "anon-2", now), "ts_ms": now}]}
    dlq.add("poison_batch", "b-poison", {"batch": poison}, "poison", 1)
    theirs = [live, parked_sid, dead_sid]
    stored = {t: _count(ch, t, theirs) for t in job.TABLES}
    assert stored["events"] == 6 and stored["session_batches"] == 3 and stored["sessions"] == 1, stored
    other_before = {t: _count(ch, t, [other]) for t in ("events", "event_ids", "session_batches")}

    # The request, as an operator types it.
    runner = w["app"].test_cli_runner()
    out = runner.invoke(args=["data", "delete", "--project", P, "--anonymous-id", "anon-1",
                              "--requested-by", "dpo@acme.test"])
    assert out.exit_code == 0, out.output
    req = int(out.output.strip().splitlines()[-1])
    assert w["broker"].llen("maintenance") == 1, "the job was enqueued"
    w["sink"].set_plan(by_webhook_id={f"deletion:{req}": [{"status": 503}]})  # UFSE away once: tried again

    errors = []
    for _ in range(120):
        job.tick()
        status = json.loads(runner.invoke(args=["data", "status", str(req)]).output)
        errors.append(status["error"])
        if status["state"] == "verified":
            break
        time.sleep(0.5)
    print(json.dumps(status, indent=2))
    assert status["state"] == "verified", status
    assert list(status["stages"]) == list(STAGES) and all(status["stages"].values())
    assert status["requested_by"] == "dpo@acme.test" and status["subject"] == {"anonymous_id": "anon-1"}
    assert status["counts"]["clickhouse"] == stored
    assert status["counts"]["redis"]["parked_retries"] == 1
    assert status["counts"]["redis"]["frozen_snapshots"] == 1  # the parked version's snapshot
    assert status["counts"]["redis"]["session_state"] >= 3  # the live hash and its idle entry, the claimed counters
    assert status["counts"]["dead_letters"] == 2
    v = status["verification"]
    assert v["mutations_done"] is True
    assert v["remaining"] == {"clickhouse": dict.fromkeys(job.TABLES, 0),
                              "redis": {"session_state": 0, "frozen_snapshots": 0, "parked_retries": 0},
                              "dead_letters": 0}
    assert [a["action"] for a in status["audit"]] == ["requested", *STAGES[1:]]
    assert status["error"] is None, "the notice's failed attempt is cleared once it went through"
    assert any("deletion notice not delivered: HTTP 503" in (e or "") for e in errors)
    assert status["sessions"] == 4

    # Gone from every store, checked here too, after ClickHouse's mutations finished.
    assert ch.execute("SELECT count() FROM system.mutations WHERE database = %(d)s AND is_done = 0",
                      {"d": ch.database})[0][0] == 0
    assert {t: _count(ch, t, theirs) for t in job.TABLES} == dict.fromkeys(job.TABLES, 0)
    assert ch.execute(f"SELECT count() FROM {ch.database}.events WHERE anonymous_id = 'anon-1'")[0][0] == 0  # noqa: S608
    assert not store.r.exists(store.keys(P, live)["live"])
    assert store.snapshot(P, parked_sid, 1) is None
    assert parked.due_index().due_at(parked.member(P, parked_sid, 1)) is None
    assert delivery.deliver(celery, P, parked_sid, 1, due=True) == "gone", "the parked retry is not sent"
    letters = dlq.list()
    assert [r["ref"] for r in letters] == ["b-poison"], "the forward's dead letter is gone"
    assert [e["anonymous_id"] for e in dlq.get(letters[0]["id"])["payload"]["batch"]["events"]] == ["anon-2"]
    assert {t: _count(ch, t, [other]) for t in other_before} == other_before, "the other person is untouched"

    # UFSE received the signed notice, under its own webhook-id, in the documented shape.
    failed, notice = [d for d in w["sink"].received if d["headers"].get("webhook-id") == f"deletion:{req}"]
    assert failed["status"] == 503 and failed["signature_valid"] is True
    assert notice["signature_valid"] is True and notice["status"] == 200
    assert notice["headers"]["webhook-timestamp"] and notice["body"] == failed["body"]
    assert notice["body"]["deletion"]["subject"] == {"anonymous_id": "anon-1"}
    assert sorted(notice["body"]["deletion"]["session_ids"]) == sorted([*theirs, only_dlq])
    registry = Registry().with_resource("urn:o", Resource.from_contents(SPEC, default_specification=DRAFT202012))
    schema = Draft202012Validator({"$ref": "urn:o#/components/schemas/UfseDeletion"}, registry=registry)
    assert not list(schema.iter_errors(notice["body"]))
    assert list(schema.iter_errors({"deletion": {"id": 1}})), "the schema is not vacuous"

    # Sent again by the SDK afterwards (its stored queue resends for up to a day): dropped at
    # ingest and counted; the other person's event in the same batch goes through.
    time.sleep(1.1)  # web processes read the suppressions at most once a second
    dropped = metrics.EVENTS_SUPPRESSED._value.get()
    again = [_event(live, "anon-1", now - 400), _event("s-new", "anon-1", now - 300), _event(other, "anon-2", now)]
    assert _send(w, again)["accepted"] == 3
    assert metrics.EVENTS_SUPPRESSED._value.get() - dropped == 2
    published = _messages(w["broker"])
    assert [e["anonymous_id"] for b in published for e in b["events"]] == ["anon-2"]
    _store(w, published)
    assert _send(w, [_event(live, "anon-1", now - 200)])["accepted"] == 1  # all suppressed: nothing published
    assert _messages(w["broker"]) == []
    assert ch.execute(f"SELECT count() FROM {ch.database}.events WHERE anonymous_id = 'anon-1' "  # noqa: S608
                      "OR session_id IN ('s-live', 's-new')")[0][0] == 0

    # --json: one JSON line, the id still alone on the last line; who defaults to the OS user.
    import getpass

    out = runner.invoke(args=["data", "delete", "--project", P, "--session-id", other, "--json"])
    assert out.exit_code == 0, out.output
    first, last = out.output.strip().splitlines()
    doc = json.loads(first)
    assert doc["id"] == int(last) > req and doc["requested_by"] == getpass.getuser() and doc["enqueued"] is True
    assert doc["subject"] == {"session_id": other} and doc["suppressed_for_s"] >= 86400
    bad = runner.invoke(args=["data", "delete", "--project", P, "--session-id", other, "--anonymous-id", "x"])
    assert bad.exit_code != 0 and "exactly one" in bad.output

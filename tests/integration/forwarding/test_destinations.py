"""Destinations per project, secret rotation and the disabled destination's backlog, on real
servers: the UFSE sinks (devtools/sink.py, real HTTP receivers verifying with the standardwebhooks
library), Redis (snapshots, due index, circuits, backlogs), PostgreSQL (destinations, dead
letters) and chDB (the events a version owns).

One override, named: ``DESTINATIONS_ALLOWED_NETWORKS=127.0.0.0/8``, because every receiver of a
test lives on loopback, which the SSRF guard refuses otherwise (tests/integration/forwarding/
test_ssrf.py shows that refusal). The 5 days a destination must fail before it is disabled
(DESTINATION_DISABLE_AFTER, at its default) are played by setting the circuit's
``failing_since`` 5 days back, as five days of failed probes would have left it.
"""
from __future__ import annotations

import time

import pytest

from app import resources
from app.forwarding import backlog, destinations, parked
from app.forwarding import deliver as delivery
from app.observability import metrics
from app.storage import redis_keys
from app.web.factory import create_app
from devtools import sink as ufse_sink

from .conftest import SECRET

CHDB_ONLY = pytest.mark.parametrize("clickhouse_url", ["chdb"], indirect=True)  # engine-agnostic decisions
LOOPBACK = {"DESTINATIONS_ALLOWED_NETWORKS": "127.0.0.0/8"}
SECOND = destinations.new_secret()


@pytest.fixture
def sinks():
    opened = []

    def make(secret=None) -> ufse_sink.Sink:
        s = ufse_sink.Sink(secret=secret, quiet=True).start()
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.stop()


def _cli(w, *args: str):
    """``flask --app app destinations ...`` through Flask's runner, on the world's settings."""
    app = create_app({"DATABASE_URL": w.settings.database_url, "REDIS_URL": w.settings.redis_url,
                      "CLICKHOUSE_URL": w.settings.clickhouse_url, "UFSE_URL": w.settings.ufse_url,
                      "UFSE_SECRET": w.settings.ufse_secret, "REDIS_KEY_PREFIX": w.settings.redis_key_prefix,
                      **LOOPBACK})
    result = app.test_cli_runner().invoke(args=["destinations", *args])
    resources.bind(w.settings)  # the CLI bound its app's settings; the world's again (same values)
    print(f"$ flask --app app destinations {' '.join(args)}\n{result.output}")
    return result


def _signatures(delivery_seen: dict) -> list[str]:
    return delivery_seen["headers"]["webhook-signature"].split()


@CHDB_ONLY
def test_two_ufse_secrets_sign_every_attempt_and_either_alone_verifies(world, sinks):
    receiver = sinks(secret=SECRET)
    w = world(receiver.url + "ufse", UFSE_SECRET=f"{SECRET} {SECOND}")
    assert delivery.deliver(w.celery, *w.claimed()) == "delivered"
    receiver.secret = SECOND  # the receiver now knows only the second secret
    assert delivery.deliver(w.celery, *w.claimed()) == "delivered"
    receiver.secret = destinations.new_secret()  # and now neither
    assert delivery.deliver(w.celery, *w.claimed()) == "delivered"
    seen = receiver.snapshot()
    assert [len(_signatures(d)) for d in seen] == [2, 2, 2]
    assert [d["signature_valid"] for d in seen] == [True, True, False], "each secret alone verifies; a third fails"


@CHDB_ONLY
def test_rotation_signs_with_both_during_the_overlap_and_the_new_one_after(world, sinks):
    receiver = sinks()
    w = world(receiver.url + "ufse", **LOOPBACK)
    old = destinations.new_secret()
    assert _cli(w, "set", "p1", "--url", receiver.url + "p1", "--secret", old).exit_code == 0
    out = _cli(w, "rotate", "p1")
    assert out.exit_code == 0, out.output
    new = out.output.split("(shown once): ", 1)[1].split()[0]
    assert new.startswith("whsec_") and new != old
    listed = _cli(w, "list").output
    assert "2 secret(s) signing, old secret signs until" in listed, listed
    destinations.reset()
    receiver.secret = old
    assert delivery.deliver(w.celery, *w.claimed()) == "delivered"
    receiver.secret = new
    assert delivery.deliver(w.celery, *w.claimed()) == "delivered"
    during = receiver.snapshot()
    assert [len(_signatures(d)) for d in during] == [2, 2] and all(d["signature_valid"] for d in during)
    assert all(d["path"] == "/p1" for d in during), "delivered to the project's own receiver"
    # After SECRET_ROTATION_OVERLAP (24 h at its default), as resolved 24 h + 1 s from now.
    after = destinations.for_project("p1", now=time.time() + w.settings.secret_rotation_overlap + 1)
    assert after is not None and after.secrets == (new,)
    client = destinations.client_for(after)
    for secret, valid in ((old, False), (new, True)):
        receiver.secret = secret
        assert client.deliver(b'{"ping":1}', msg_id="p1:s:1", request_id="r").outcome == "delivered"
        last = receiver.snapshot()[-1]
        assert len(_signatures(last)) == 1 and last["signature_valid"] is valid


def _project(seen: dict) -> str:
    return seen["headers"]["webhook-id"].split(":", 1)[0]


def _age_failures(w, project: str, seconds: float) -> None:
    """As if the destination had failed without a success since ``seconds`` ago."""
    key = redis_keys.circuit(w.settings.redis_key_prefix, f"project:{project}")
    assert w.r.hget(key, "failing_since"), "a failure was recorded"
    w.r.hset(key, "failing_since", f"{time.time() - seconds:.3f}")


@CHDB_ONLY
def test_each_project_reaches_its_own_receiver_and_a_disabled_one_is_parked_then_replayed_in_order(
        world, sinks, monkeypatch):
    a, b, default = sinks(), sinks(), sinks()
    w = world(default.url + "ufse", **LOOPBACK)
    assert _cli(w, "set", "pa", "--url", a.url + "pa").exit_code == 0
    assert _cli(w, "set", "pb", "--url", b.url + "pb").exit_code == 0
    destinations.reset()
    for project in ("pa", "pb", "pc"):
        assert delivery.deliver(w.celery, *w.claimed(project=project)) == "delivered"
    assert [_project(d) for d in a.snapshot()] == ["pa"]
    assert [_project(d) for d in b.snapshot()] == ["pb"]
    assert [_project(d) for d in default.snapshot()] == ["pc"], "a project without one uses UFSE_URL"

    # pb's receiver goes down: its deliveries fail, its circuit opens after 5 failures.
    b.set_plan([503] * 100)
    refs = [w.claimed(project="pb") for _ in range(6)]
    outcomes = [delivery.deliver(w.celery, *ref) for ref in refs]
    assert outcomes == ["retrying"] * 5 + ["held"], outcomes
    assert delivery.deliver(w.celery, *w.claimed(project="pa")) == "delivered", "pa is not pb's circuit"
    # Five days without a success (DESTINATION_DISABLE_AFTER at its default): the next look disables it.
    _age_failures(w, "pb", w.settings.destination_disable_after + 1)
    late = w.claimed(project="pb")
    assert delivery.deliver(w.celery, *late) == "backlogged"
    refs.append(late)
    for ref in refs[:6]:  # each parked retry, when due, finds the destination disabled
        assert delivery.deliver(w.celery, *ref, attempt=1, due=True) == "backlogged"
    assert backlog.index("pb").size() == 7
    assert resources.dead_letters().list() == [], "parked, never dead-lettered"
    assert parked.due_index().size() == 0, "nothing of pb waits in the forward index"
    assert metrics.DESTINATIONS_DISABLED.labels("pb")._value.get() == 1  # noqa: SLF001
    backlog.sample(w.settings)
    assert metrics.DESTINATION_STATE.labels("pb")._value.get() == 2  # noqa: SLF001
    assert metrics.DESTINATION_BACKLOG.labels("pb")._value.get() == 7  # noqa: SLF001
    assert "DISABLED since" in _cli(w, "list").output
    ttl = w.r.ttl(redis_keys.session_final(w.settings.redis_key_prefix, resources.session_store().bucket_of(
        "pb", late[1]), *late))
    assert ttl > 300 * 86400, "the snapshot waits for the operator, not 14 days"

    # The receiver is back; the operator enables it: an estimate, then the backlog replays.
    b.reset()  # answers 200 again (and forgets what it saw while down)
    out = _cli(w, "enable", "pb")
    assert out.exit_code == 0 and "replaying 7 parked deliveries, oldest first" in out.output, out.output
    published = []
    monkeypatch.setattr(parked, "send_forward", lambda _c, *args, **kw: published.append((args, kw)))
    destinations.reset()
    assert parked.release_due(w.celery, 1.0) == 7, "one sweep's drain allowance (FORWARD_DRAIN_RATE 20/s) holds 7"
    for args, kw in published:  # the forward worker's part, in publish order
        assert delivery.deliver(w.celery, *args, **kw) == "delivered"
    arrived = b.snapshot()
    order = [refs[6], *refs[:6]]  # parked: the one that found it failing 5 days, then the retries as they fell due
    expected = [f"{p}:{s}:{v}" for p, s, v in order]
    assert [d["headers"]["webhook-id"] for d in arrived] == expected, "each once, in the order parked"
    assert backlog.index("pb").size() == 0
    assert resources.dead_letters().list() == []

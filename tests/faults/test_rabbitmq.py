"""A private RabbitMQ node from the toolkit, and what Observer's publisher does on it.

One node for the module (devtools/servers/rabbitmq.py: its own name, ports, data and
cookie; the machine's RabbitMQ on 5672 is never touched), a vhost per test. Shows: queues are
durable quorum queues, batches persistent and published in confirm mode; at the memory alarm
(RabbitMQ blocks publishers, it refuses nothing) the API's publisher gives up in milliseconds,
not after the 20 s it took before; kill -9 and restart keep a confirmed message, and neither
the kill nor the final stop leaves a process of the node behind.
"""
import time
import uuid

import pytest

from devtools.faults.rig import amqp_ready
from devtools.proc import cmdline, pid_alive
from devtools.servers.rabbitmq import amqp_connection, rabbitmq_installed, start_rabbitmq
from devtools.wait import until

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("rabbitmq")]  # one node for the module


@pytest.fixture(scope="module")
def mq(tmp_path_factory):
    if not rabbitmq_installed():
        pytest.fail("Debian's rabbitmq-server is needed (apt-get install -y rabbitmq-server)")
    node = start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"), name="test")
    yield node
    tree = list(node.extra["tree"])
    node.stop()
    assert not any(pid_alive(pid) for pid, _ in tree), "nothing of the stopped node is left"


@pytest.fixture(scope="module")
def publisher(mq, tmp_path_factory):
    """Observer's web publisher on a vhost of its own, with the queues declared as a worker does."""
    from app.broker import Publisher, _declare_queues
    from app.settings import load_settings

    url = mq.add_vhost(f"t-{uuid.uuid4().hex[:8]}")
    env_file = tmp_path_factory.mktemp("env") / "empty.env"
    env_file.write_text("")
    settings = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0", "CELERY_BROKER_URL": url,
                              "OBSERVER_ENV_FILE": str(env_file)})
    pub = Publisher(settings)
    _declare_queues(sender=type("Worker", (), {"app": pub.celery})())
    pub.vhost = url.rsplit("/", 1)[1]
    yield pub
    pub.celery.pool.force_close_all()


def _batch(tag: str) -> dict:
    return {"batch_id": tag, "project": "p", "request_id": "r", "received_at": 1,
            "events": [{"event_id": tag, "type": "click"}]}


def test_node_is_private(mq):
    assert mq.node != "rabbit@localhost" and mq.port != 5672
    assert mq.eval("rabbit_plugins:active().") == "[]", "no management (or any) plugin"
    assert str(mq.dir) in mq.ctl("eval", "rabbit_mnesia:dir().")
    assert mq.startup_seconds > 0


def test_counters_parse_when_every_count_is_a_printable_character(mq):
    """Erlang prints a list of integers 32-126 as a string ([100,100] as "dd"), which broke
    counters() once every count was in that range after a restart (fault case 14 crashed with
    a TypeError). counters() asks for a tuple, which is never printed as a string."""
    from devtools.servers.rabbitmq import parse_int_tuple

    assert mq.eval("[100, 100, 100].") == '"ddd"'  # the trap, on the real node
    assert parse_int_tuple(mq.eval("{100, 100, 100, 80, 0, 80}.")) == [100, 100, 100, 80, 0, 80]
    assert set(mq.counters()) >= {"published", "confirmed", "redelivered"}


def test_durable_quorum_queues_persistent_messages_publisher_confirms(mq, publisher):
    before = mq.counters()
    publisher.publish_batch(_batch("b1"), "r")
    after = mq.counters()
    queues = mq.queues(publisher.vhost)
    for name in ("events", "sessions", "forward", "maintenance"):
        assert queues[name]["type"] == "quorum" and queues[name]["durable"] is True, queues[name]
    assert after["published"] - before["published"] == 1
    assert after["published_in_confirm_mode"] - before["published_in_confirm_mode"] == 1, "publisher confirms"
    assert after["confirmed"] - before["confirmed"] == 1
    with amqp_connection(mq.port, publisher.vhost) as conn:
        msg = conn.channel().basic_get("events", no_ack=True)
    assert msg is not None and msg.properties["delivery_mode"] == 2, "persistent"
    assert msg.headers["task"] == "events.persist"


def _publish(publisher, tag: str) -> tuple[float, Exception | None]:
    t0 = time.monotonic()
    try:
        publisher.ensure_capacity()
        publisher.publish_batch(_batch(tag), "r")
        return time.monotonic() - t0, None
    except Exception as exc:
        return time.monotonic() - t0, exc


def test_memory_alarm_refuses_at_once_and_lifts(mq, publisher):
    """RabbitMQ blocks publishing connections at its memory high watermark: the publish would wait
    for a confirm that comes after the alarm. The connection.blocked notice ends the wait."""
    from app.broker import BrokerBlocked

    publisher.publish_batch(_batch("warm"), "r")  # a pooled connection, as in a running web process
    mq.set_memory_limit(1024)
    try:
        seen: list = []  # until the node's memory monitor raised the alarm
        until(lambda: seen.append(_publish(publisher, f"a{len(seen)}")) or seen[-1][1], "the alarm", timeout=30)
        took, exc = seen[-1]
        assert isinstance(exc, BrokerBlocked), exc
        again, exc2 = _publish(publisher, "again")
        assert isinstance(exc2, BrokerBlocked), exc2
        print(f"refused at the memory alarm after {took:.3f}s, then {again:.3f}s")
        assert max(took, again) < 2.0
    finally:
        mq.set_memory_limit(10 ** 12)
    until(lambda: _publish(publisher, "after")[1] is None, "publishing again once the alarm cleared", timeout=30)


def test_kill9_restart_keeps_messages_and_leaves_nothing(mq, publisher):
    before = amqp_ready(mq.port, publisher.vhost)["events"]
    publisher.publish_batch(_batch("k1"), "r")
    port, tree = mq.port, list(mq.extra["tree"])
    assert any("beam.smp" in cmdline(pid) for pid, _ in tree)
    mq.kill9()
    mq.restart()
    assert mq.port == port
    # The node answers AMQP before its quorum queues finished recovering: they count 0 until then.
    until(lambda: amqp_ready(mq.port, publisher.vhost)["events"] == before + 1,
          "a confirmed message survives kill -9", timeout=30, interval=0.5)
    assert not any(pid_alive(pid) for pid, _ in tree), "nothing of the killed node is left"

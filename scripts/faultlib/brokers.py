"""The broker of one case, Redis or RabbitMQ, behind one face the cases use.

Redis: the case's own redis-server (AOF ``appendfsync always``), also the sessions and limits
Redis. RabbitMQ (``--broker amqp``): the case's own node (scripts/toolkit/rabbitmq_server.py,
default vhost), with a Redis beside it for sessions, limits and locks. Each gives queue depths,
what the workers hold unacked, kill -9 / SIGSTOP / restart, and its memory limit.
"""
from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from app.broker import Queue  # noqa: E402

QUEUES = tuple(q.value for q in Queue)


class RedisBroker:
    """The case's Redis as Celery's broker (kombu's Redis transport)."""

    kind = "redis"
    what = "broker Redis"

    def __init__(self, proc) -> None:
        self.proc = proc

    @property
    def url(self) -> str:
        return self.proc.url

    def _r(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2)

    def held(self) -> int:
        """Messages delivered to workers and not acked yet (kombu's ``unacked`` hash)."""
        return int(self._r().hlen("unacked"))

    def depths(self) -> dict:
        """Messages waiting per queue, and held unacked."""
        r = self._r()
        return {**{q: int(r.llen(q)) for q in QUEUES}, "unacked": int(r.hlen("unacked"))}

    def drained(self) -> bool:
        """Nothing waiting in events, nothing unacked."""
        d = self.depths()
        return not (d["events"] or d["unacked"])

    def limit_memory(self, headroom: int) -> str:
        """maxmemory (noeviction) = what it uses now + ``headroom`` bytes; a note."""
        r = self._r()
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", str(used + headroom))
        return f"broker maxmemory set to {(used + headroom) // 1024} KiB ({used // 1024} KiB used), noeviction"

    def limit_checks(self, result) -> None:
        """After the broker was full: nothing evicted."""
        evicted = int(self._r().info("stats")["evicted_keys"])
        result.check("nothing evicted", evicted == 0, f"evicted_keys={evicted}")

    def below_limit(self) -> bool:
        """used_memory under the API's BROKER_MEMORY_LIMIT (0.9) of maxmemory."""
        info = self._r().info("memory")
        return int(info["used_memory"]) < 0.9 * int(info.get("maxmemory") or 1 << 62)

    def live_restores(self, rig) -> int:
        """Messages kombu gave back after the visibility timeout (the workers' log lines)."""
        from faultlib import reconcile

        return reconcile.restores(rig)

    def stop(self) -> None:
        self.proc.stop()


class AmqpBroker:
    """The case's private RabbitMQ node as Celery's broker (py-amqp, quorum queues)."""

    kind = "amqp"
    what = "RabbitMQ"

    def __init__(self, proc) -> None:
        self.proc = proc

    @property
    def url(self) -> str:
        return self.proc.url

    def _ready(self) -> dict:
        """Exact counts of messages ready per queue (a passive queue.declare)."""
        import amqp

        # RabbitMQ's default guest user, which it admits from loopback only (the case's own node).
        conn = amqp.Connection(f"127.0.0.1:{self.proc.port}", userid="guest", password="guest",  # noqa: S106
                               connect_timeout=2, read_timeout=5, write_timeout=5)
        try:
            conn.connect()
            ch = conn.channel()
            out = {}
            for q in QUEUES:
                try:
                    out[q] = int(ch.queue_declare(q, passive=True).message_count)
                except amqp.exceptions.NotFound:
                    out[q] = 0
                    ch = conn.channel()
            return out
        finally:
            conn.collect()

    def held(self) -> int:
        """Messages delivered and not acked (rabbitmqctl; quorum queue stats lag up to 5 s)."""
        return sum(int(q.get("messages_unacknowledged") or 0) for q in self.proc.queues().values())

    def depths(self) -> dict:
        return {**self._ready(), "unacked": self.held()}

    def drained(self) -> bool:
        """Nothing ready in events, nothing unacked anywhere."""
        return not self._ready()["events"] and not self.held()

    def queue_facts(self) -> dict:
        """{queue: (type, durable, persistent messages, messages)} as rabbitmqctl lists them."""
        return {n: (q["type"], q["durable"], q.get("messages_persistent"), q.get("messages"))
                for n, q in self.proc.queues().items()}

    def limit_memory(self, headroom: int) -> str:
        """Memory high watermark = what the node counts now + ``headroom`` bytes; a note."""
        used = self.proc.memory()
        self.proc.set_memory_limit(used + headroom)
        return (f"RabbitMQ vm_memory_high_watermark set to {(used + headroom) // 1024} KiB absolute "
                f"({used // 1024} KiB used)")

    def limit_checks(self, result) -> None:
        """After the alarm: it was raised (publishers blocked), and nothing was dropped (checked by
        the reconciliation: RabbitMQ never evicts)."""
        raised = "memory resource limit alarm set" in self.proc.log_text()
        result.check("RabbitMQ raised its memory alarm (publishers blocked)", raised,
                     "alarm in the node's log" if raised else "no alarm logged")

    def below_limit(self) -> bool:
        """No resource alarm in effect (publishers are not blocked)."""
        return self.proc.alarms() == "[]"

    def live_restores(self, rig) -> int:
        """Messages RabbitMQ took back from a live consumer: channels closed by ``consumer_timeout``
        (default 30 min). A dead holder's messages come back when its connection closes: no wait."""
        return len(re.findall(r"has timed out waiting for delivery acknowledgement", self.proc.log_text()))

    def redelivered(self) -> int:
        """Messages delivered again since the node started (after a connection loss or a requeue)."""
        return int(self.proc.counters().get("redelivered", 0))

    def stop(self) -> None:
        self.proc.stop()


def wait_drained(broker, bound: float) -> tuple[bool, dict]:
    """Poll until the broker holds nothing (bounded); (drained, last depths)."""
    deadline = time.monotonic() + bound
    while True:
        with contextlib.suppress(Exception):  # restarting: not drained yet
            if broker.drained():
                return True, broker.depths()
        if time.monotonic() > deadline:
            try:
                return False, broker.depths()
            except Exception as exc:
                return False, {"error": str(exc)[:120]}
        time.sleep(1.0)

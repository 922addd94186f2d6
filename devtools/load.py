"""The open-loop load generator: keep-alive HTTP clients in several processes, closed or open loop.

Used by the benchmark (``devtools.bench``) and meant for any harness that needs load at a known
rate. Several processes (so the generator's own CPU is not the limit: each has its own GIL), each
with one thread per connection. Closed loop: every connection sends its next batch as soon as the
previous one is answered (the server's maximum). Open loop: a fixed arrival schedule for all
connections together, and each request's latency is measured from its *scheduled* send time,
so a server that falls behind shows its queueing instead of slowing the generator down.

Only the standard library is imported here: the processes are spawned (the caller may have
threads, which a fork would copy mid-flight) and start in a fraction of a second. Every loop is
bounded by a deadline and, optionally, a request count. Targets 127.0.0.1 by default::

    out = load.run(load.Plan(port=8000, key=key, tag="r1s-", seconds=10))             # closed loop
    out = load.run(load.Plan(port=8000, key=key, tag="r1o-", seconds=10, rate=200))   # 200 requests/s
    out.accepted_events, out.latencies_ms(), out.errors
"""
from __future__ import annotations

import contextlib
import gzip
import http.client
import multiprocessing as mp
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
_EVENT = ('{"event_id":"%s","type":"click","timestamp":%d,"session_id":"%s",'
          '"url":"https://shop.test/cart?item=%d","metadata":{"button":"buy","price":12.5,"n":%d,"pad":"%s"}}')


@dataclass(frozen=True)
class Shape:
    """What each request carries."""

    batch: int = 50  # events per request
    event_bytes: int = 400  # serialized bytes per event (approximately; padding in metadata)
    sessions_per_batch: int = 1  # distinct sessions in one request (a browser sends 1)
    session_pool: int = 50  # distinct session ids each connection cycles through
    gzip: bool = False  # Content-Encoding: gzip (level 1, as a browser's CompressionStream would)


@dataclass(frozen=True)
class Plan:
    """One load phase."""

    port: int
    key: str
    tag: str  # session-id prefix of this phase (unique, so its events can be counted)
    shape: Shape = Shape()
    connections: int = 8
    processes: int = 2
    seconds: float = 10.0  # closed loop: how long; open loop: how long the schedule runs
    rate: float = 0.0  # open loop: requests per second over all connections; 0 = closed loop
    max_requests: int = 0  # per connection (0 = until the deadline)
    probe_every: int = 0  # open loop: every n-th scheduled request is a probe in its own session
    host: str = "127.0.0.1"
    path: str = "/v1/events"
    timeout: float = 30.0  # per request


@dataclass
class Outcome:
    """What the clients saw: one record per request, and the generator's own CPU seconds."""

    tag: str = ""
    records: list = field(default_factory=list)  # (sent or scheduled, answered, status, events, session)
    cpu_s: float = 0.0
    start: float = 0.0  # wall time the load began
    end: float = 0.0  # wall time the last answer came
    errors: dict = field(default_factory=dict)  # status or exception name -> count
    samples: dict = field(default_factory=dict)  # status -> first answer body

    @property
    def ok(self) -> list:
        return [r for r in self.records if r[2] == 202]

    @property
    def accepted_events(self) -> int:
        return sum(r[3] for r in self.records if r[2] == 202)

    def latencies_ms(self) -> list[float]:
        """Latency of each accepted request (from its send or scheduled time), ms."""
        return [(r[1] - r[0]) * 1000 for r in self.records if r[2] == 202]

    def probes(self) -> dict[str, float]:
        """{probe session id: answer time} of the accepted probes."""
        mark = probe_prefix(self.tag)
        return {r[4]: r[1] for r in self.records if r[2] == 202 and r[4].startswith(mark)}

    def last_answer(self) -> dict[str, float]:
        """{session id of a request's first event: when its last accepted request was answered}."""
        out: dict[str, float] = {}
        for r in self.records:
            if r[2] == 202 and r[1] > out.get(r[4], 0.0):
                out[r[4]] = r[1]
        return out


def session_id(tag: str, conn: int, j: int, pool: int) -> str:
    """The j-th session id (mod the pool) of a connection."""
    return f"{tag}c{conn}-s{j % pool}"


def probe_prefix(tag: str) -> str:
    """Session-id prefix of a phase's probe batches (its other sessions start ``{tag}c``)."""
    return f"{tag}p"


class BodyMaker:
    """Fresh, unique event ids and a body of the shape asked for, by cheap string templating."""

    def __init__(self, shape: Shape, tag: str, conn: int) -> None:
        self.shape, self.tag, self.conn = shape, tag, conn
        self._base = uuid.uuid4().hex  # random per maker; a counter makes each id unique
        self._n = 0
        bare = _EVENT % (self._id(), 1_700_000_000_000, session_id(tag, conn, 10 ** 5, 10 ** 6), 100, 10, "")
        self.pad = (FILLER * (shape.event_bytes // len(FILLER) + 1))[:max(0, shape.event_bytes - len(bare))]
        self._n = 0

    def _id(self) -> str:
        self._n += 1
        b = self._base
        return f"{b[:8]}-{b[8:12]}-4{b[13:16]}-8{b[17:20]}-{self._n:012x}"

    def body(self, seq: int, sid: str | None = None) -> tuple[bytes, str]:
        """Request ``seq`` of this connection (every event in session ``sid`` when given), and
        the session of its first event."""
        s = self.shape
        now = int(time.time() * 1000)
        parts = []
        for i in range(s.batch):
            if sid is None:
                j = seq * s.sessions_per_batch + (i * s.sessions_per_batch) // s.batch
                ev_sid = session_id(self.tag, self.conn, j, s.session_pool)
            else:
                ev_sid = sid
            parts.append(_EVENT % (self._id(), now, ev_sid, seq % 1000, i, self.pad))
        first = sid or session_id(self.tag, self.conn, seq * s.sessions_per_batch, s.session_pool)
        body = ('{"events":[' + ",".join(parts) + "]}").encode()
        return (gzip.compress(body, 1) if s.gzip else body), first


def _post(conn: http.client.HTTPConnection | None, plan: Plan, body: bytes, headers: dict):
    """One POST on a keep-alive connection: (connection to reuse or None, status, answer)."""
    try:
        if conn is None:
            conn = http.client.HTTPConnection(plan.host, plan.port, timeout=plan.timeout)
        conn.request("POST", plan.path, body=body, headers=headers)
        r = conn.getresponse()
        answer = r.read()
        if r.will_close:
            conn.close()
            conn = None
        return conn, r.status, answer
    except (OSError, http.client.HTTPException) as exc:
        if conn is not None:
            conn.close()
        return None, 0, type(exc).__name__.encode()


def _connection(plan: Plan, c: int, start: float, out: list, errors: dict, samples: dict,
                progress, slot: int) -> None:
    """One connection's loop (closed or open), appending its records to ``out``."""
    maker = BodyMaker(plan.shape, plan.tag, c)
    headers = {"Authorization": f"Bearer {plan.key}", "Content-Type": "application/json"}
    if plan.shape.gzip:
        headers["Content-Encoding"] = "gzip"
    conn = None
    deadline = start + plan.seconds
    seq = 0
    k = c  # open loop: this connection's next slot of the global schedule
    while time.time() < start:
        time.sleep(0.002)
    while True:
        if plan.max_requests and seq >= plan.max_requests:
            break
        probe = ""
        if plan.rate > 0:
            t_sched = start + k / plan.rate
            if t_sched >= deadline:
                break
            if plan.probe_every and k % plan.probe_every == 0:
                probe = f"{probe_prefix(plan.tag)}{k}"
            k += plan.connections
            body, sid = maker.body(seq, probe or None)
            wait = t_sched - time.time()
            if wait > 0:
                time.sleep(wait)
            t0 = t_sched
        else:
            if time.time() >= deadline:
                break
            body, sid = maker.body(seq)
            t0 = time.time()
        conn, status, answer = _post(conn, plan, body, headers)
        t1 = time.time()
        seq += 1
        out.append((t0, t1, status, plan.shape.batch, sid))
        if status == 202:
            progress[slot] += plan.shape.batch
        else:
            name = str(status) if status else answer.decode()
            errors[name] = errors.get(name, 0) + 1
            samples.setdefault(name, answer[:300].decode(errors="replace"))
    if conn is not None:
        conn.close()


def _child(plan: Plan, conns: list[int], start: float, results, progress, slot: int) -> None:
    """One generator process: a thread per connection; puts its records and CPU seconds."""
    cpu0 = os.times()
    per: list[list] = [[] for _ in conns]
    errors: dict = {}
    samples: dict = {}
    threads = [threading.Thread(target=_connection, args=(plan, c, start, per[i], errors, samples, progress, slot),
                                daemon=True) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(plan.seconds + plan.timeout + 30)
    cpu1 = os.times()
    results.put({"records": [r for p in per for r in p], "errors": errors, "samples": samples,
                 "cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)})


def run(plan: Plan, tick: Callable[[float, int], None] | None = None,
        at_start: Callable[[], None] | None = None) -> Outcome:
    """Run one phase; ``at_start()`` when the load begins, ``tick(elapsed seconds, accepted
    events so far)`` about once a second."""
    ctx = mp.get_context("spawn")
    procs = max(1, min(plan.processes, plan.connections))
    groups = [list(range(i, plan.connections, procs)) for i in range(procs)]
    results = ctx.Queue()
    progress = ctx.Array("q", procs, lock=False)
    start = time.time() + 1.0  # spawned interpreters start well within a second
    children = [ctx.Process(target=_child, args=(plan, g, start, results, progress, i), daemon=True)
                for i, g in enumerate(groups)]
    for p in children:
        p.start()
    out = Outcome(tag=plan.tag, start=start)
    time.sleep(max(0.0, start - time.time()))
    if at_start:
        at_start()
    got: list[dict] = []
    hard_stop = start + plan.seconds + plan.timeout + 60
    while len(got) < len(children) and time.time() < hard_stop:
        with contextlib.suppress(queue.Empty):
            got.append(results.get(timeout=1.0))
        if tick and time.time() >= start:
            tick(time.time() - start, sum(progress))
    for p in children:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)
    for g in got:
        out.records += g["records"]
        out.cpu_s += g["cpu"]
        for k, v in g["errors"].items():
            out.errors[k] = out.errors.get(k, 0) + v
        for k, v in g["samples"].items():
            out.samples.setdefault(k, v)
    if len(got) < len(children):
        out.errors["generator process lost"] = len(children) - len(got)
    out.records.sort()
    out.end = max((r[1] for r in out.records), default=start)
    return out

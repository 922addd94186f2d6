"""Load for the harnesses: keep-alive HTTP clients posting event batches to ``/v1/events``.

One client (:class:`Client`: a keep-alive connection, the POST, the answer) under two drivers:

- :func:`run` (the benchmark, ``devtools.bench``, and any harness that needs load at a known
  rate): several spawned processes (so the generator's own CPU is not the limit: each has its own
  GIL), one thread per connection. Closed loop: every connection sends its next batch as soon as
  the previous one is answered (the server's maximum). Open loop: a fixed arrival schedule for all
  connections together, and each request's latency is measured from its *scheduled* send time,
  so a server that falls behind shows its queueing instead of slowing the generator down.
- :class:`Load` (the fault suite, ``devtools.faults``): SDK-like threads posting batches of unique
  events, retried (same event ids) on network errors, 429 and 5xx with exponential backoff and
  full jitter, honouring Retry-After; an event is *acknowledged* once a 202 answered its batch.

Only the standard library is imported here: the processes are spawned (the caller may have
threads, which a fork would copy mid-flight) and start in a fraction of a second. Every loop is
bounded (a deadline, a request count, a give-up time). Targets 127.0.0.1 by default::

    out = load.run(load.Plan(port=8000, key=key, tag="r1s-", seconds=10))             # closed loop
    out = load.run(load.Plan(port=8000, key=key, tag="r1o-", seconds=10, rate=200))   # 200 requests/s
    out.accepted_events, out.latencies_ms(), out.errors
    sdk = load.Load("http://127.0.0.1:8000", key, load.CI, prefix="c5").start(); ...; sdk.stop(); sdk.join()
"""
from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import multiprocessing as mp
import os
import queue
import random
import select
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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


class Client:
    """One keep-alive connection posting to ``path`` (a new one after an error or a close)."""

    def __init__(self, host: str, port: int, key: str, *, path: str = "/v1/events", timeout: float = 30.0,
                 gzip: bool = False) -> None:
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[int, bytes, str | None]:
        """(status, answer, Retry-After) of one POST; status 0 and the exception's name when it failed."""
        try:
            if self.conn is not None and self.conn.sock is not None and select.select([self.conn.sock], [], [], 0)[0]:
                self.close()  # the server closed it while idle: a new one, as urllib3 checks before a reuse
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("POST", self.path, body=body, headers=self.headers)
            r = self.conn.getresponse()
            answer = r.read()
            if r.will_close:
                self.close()
            return r.status, answer, r.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return 0, type(exc).__name__.encode(), None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _connection(plan: Plan, c: int, start: float, out: list, errors: dict, samples: dict,
                progress, slot: int) -> None:
    """One connection's loop (closed or open), appending its records to ``out``."""
    maker = BodyMaker(plan.shape, plan.tag, c)
    client = Client(plan.host, plan.port, plan.key, path=plan.path, timeout=plan.timeout, gzip=plan.shape.gzip)
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
        status, answer, _ = client.post(body)
        t1 = time.time()
        seq += 1
        out.append((t0, t1, status, plan.shape.batch, sid))
        if status == 202:
            progress[slot] += plan.shape.batch
        else:
            name = str(status) if status else answer.decode()
            errors[name] = errors.get(name, 0) + 1
            samples.setdefault(name, answer[:300].decode(errors="replace"))
    client.close()


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


# ---------------------------------------------------------------- SDK-like clients (the fault suite)

BACKOFF_BASE, BACKOFF_MAX = 0.25, 8.0  # seconds: the SDK's first retry ceiling and its cap
REQUEST_TIMEOUT = 30.0  # a request longer than this counts as a hung request thread


@dataclass
class Scale:
    """How much load a fault case runs (full scale for scripts/faults, reduced for CI)."""

    clients: int = 6
    batch: int = 20  # events per request
    batches_per_session: int = 4
    interval: float = 0.1  # seconds between a client's batches (the default per-IP limit is 50/s)
    warmup: float = 5.0  # seconds of load before the fault
    tail: float = 5.0  # seconds of load after the fault ended
    give_up: float = 90.0  # seconds after stop that a client keeps retrying a batch
    fault_seconds: float = 15.0  # how long repeated faults (pool kills, two beats) go on
    maxmemory_headroom: int = 8 * 1024 * 1024  # case 7: bytes of broker memory above its use
    idle_timeout: int = 5  # SESSION_IDLE_TIMEOUT override (default 1800)
    hour_scale: float = 0.01  # RETRY_TIME_SCALE override of the "one hour" cases (8, 10, 11)
    name: str = "full"


FULL = Scale()
CI = Scale(clients=3, batch=5, batches_per_session=3, interval=0.15, warmup=3.0, tail=2.0, give_up=60.0,
           fault_seconds=6.0, maxmemory_headroom=3 * 1024 * 1024, idle_timeout=3, hour_scale=0.001, name="ci")
SCALES = {"full": FULL, "ci": CI}


@dataclass
class Stats:
    """What the SDK-like clients saw."""

    sent: set = field(default_factory=set)
    acked: set = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)  # status, "timeout" or the exception's name -> count
    retry_after_missing: Counter = field(default_factory=Counter)  # 429/503 answered without it
    gave_up: int = 0
    batches: dict = field(default_factory=dict)  # first id -> (session_id, ids)
    requests: list = field(default_factory=list)  # (monotonic start, end, status) of every request


def event(session_id: str, i: int, **extra) -> dict:
    """One valid click event with a fresh UUID."""
    return {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
            "session_id": session_id, "url": "https://faults.test/p", "metadata": {"i": i}, **extra}


def _accepted(answer: bytes) -> int | None:
    try:
        return json.loads(answer).get("accepted")
    except (ValueError, AttributeError):
        return None


class Load:
    """``clients`` threads posting until ``stop()``; ``join()`` waits for pending retries."""

    def __init__(self, base_url: str, key: str, scale: Scale, prefix: str) -> None:
        u = urlsplit(base_url)
        self.host, self.port, self.path = u.hostname or "127.0.0.1", u.port or 80, f"{u.path}/v1/events"
        self.key, self.scale, self.prefix = key, scale, prefix
        self.stats = Stats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._give_up_at = float("inf")
        self._threads = [threading.Thread(target=self._client, args=(c,), daemon=True, name=f"load-{c}")
                         for c in range(scale.clients)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """No new batches; pending ones keep retrying until the give-up time."""
        self._give_up_at = time.monotonic() + self.scale.give_up
        self._stop.set()

    def join(self) -> None:
        for t in self._threads:
            t.join(self.scale.give_up + REQUEST_TIMEOUT + 10)

    def client(self) -> Client:
        return Client(self.host, self.port, self.key, path=self.path, timeout=REQUEST_TIMEOUT)

    def _count(self, t0: float, status, ids=()) -> None:
        with self._lock:
            self.stats.requests.append((t0, time.monotonic(), status))
            self.stats.statuses[status] += 1
            self.stats.acked.update(ids)

    def post(self, events: list[dict], client: Client | None = None) -> None:
        """Post one batch until a 202, a permanent answer, or the give-up time (on ``client``'s
        connection, else on a new one closed after)."""
        own = client is None
        client = client or self.client()
        ids = [e["event_id"] for e in events]
        body = json.dumps({"events": events}).encode()
        with self._lock:
            self.stats.sent.update(ids)
            self.stats.batches[ids[0]] = (events[0]["session_id"], ids)
        try:
            for attempt in range(10_000):  # bounded by the give-up time below
                t0 = time.monotonic()
                status, answer, retry_after = client.post(body)
                if status == 202 and _accepted(answer) == len(events):
                    return self._count(t0, 202, ids)
                if status in (429, 503) and retry_after is None:
                    with self._lock:
                        self.stats.retry_after_missing[status] += 1
                name = answer.decode()
                self._count(t0, status or ("timeout" if name == "TimeoutError" else name))
                if status and status < 500 and status not in (408, 429):
                    return None  # permanent: the SDK drops it (counted in statuses)
                if time.monotonic() > self._give_up_at:
                    with self._lock:
                        self.stats.gave_up += 1
                    return None
                # Full-jitter exponential delay; never shorter than the server's Retry-After.
                ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt)
                wait = float(retry_after) if retry_after and status in (429, 503) else 0.0
                time.sleep(max(random.uniform(0, ceiling), wait))  # noqa: S311 (jitter, not a secret)
            return None
        finally:
            if own:
                client.close()

    def _client(self, c: int) -> None:
        client = self.client()
        n = 0
        while not self._stop.is_set() and n < 100_000:  # bounded
            sid = f"{self.prefix}-c{c}-s{n // self.scale.batches_per_session}"
            self.post([event(sid, i) for i in range(self.scale.batch)], client)
            n += 1
            self._stop.wait(self.scale.interval)
        client.close()

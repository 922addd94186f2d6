"""What the phases of one stack share, and the waits between them.

A phase is driven only through HTTP, ClickHouse queries, Redis INFO/MEMORY and the UFSE sink
(the pipeline's internals are being reshaped underneath). Between phases the bench waits until
the broker's queues are empty and nothing is held unacked, so one phase's backlog is never
measured in the next. Every wait is bounded.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchkit import chstats, cpu, load, redismem, rig
from benchkit.rig import log


@dataclass
class Ctx:
    """What the phases of one stack share."""

    stack: rig.Stack
    meter: cpu.Meter
    shape: load.Shape = load.Shape()
    connections: int = 8
    processes: int = 2
    sink: object | None = None  # the in-process UFSE sink (None: no delivery figures)
    broker: object | None = None  # redis clients (None when targeting a stack without them)
    sessions: object | None = None
    counter: chstats.Counter | None = None
    label: str = ""  # "run 1/3" in progress lines
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        import redis

        if self.counter is None:
            self.counter = chstats.Counter(self.stack.clickhouse_url, self.stack.project)
        if self.broker is None and self.stack.broker_url:
            self.broker = redis.Redis.from_url(self.stack.broker_url, socket_timeout=10)
        if self.sessions is None and self.stack.sessions_url:
            self.sessions = redis.Redis.from_url(self.stack.sessions_url, socket_timeout=30)

    def plan(self, tag: str, **kw) -> load.Plan:
        kw.setdefault("shape", self.shape)
        return load.Plan(port=self.stack.port, key=self.stack.key, tag=tag, connections=self.connections,
                         processes=self.processes, **kw)


def progress(ctx: Ctx, phase: str, total: float, stored: Callable[[], int] | None = None):
    """A tick for load.run: one line every 5 s."""
    last = [0.0]

    def tick(elapsed: float, accepted: int) -> None:
        if elapsed - last[0] < 5 or elapsed > total + 1:
            return
        last[0] = elapsed
        extra = ""
        if stored:
            with contextlib.suppress(Exception):  # a progress line without the count, never a failed phase
                extra = f", {stored():,} stored"
        log(f"{ctx.label} {phase}: {elapsed:.0f}/{total:.0f} s, {accepted:,} events accepted{extra}")
    return tick


def pending(ctx: Ctx) -> int:
    """Messages waiting in the Procfile workers' queues plus those held unacked."""
    if ctx.broker is None:
        return 0
    pipe = ctx.broker.pipeline(transaction=False)
    for q in ctx.stack.queues:
        pipe.llen(q)
    pipe.hlen("unacked")  # kombu's Redis transport: messages delivered, not yet acked
    return sum(pipe.execute())


def quiet(ctx: Ctx, timeout: float = 90.0) -> float | None:
    """Wait until the queues were empty at two polls in a row; seconds waited (None: timed out).

    Says every 30 s how many messages are left (the pre-issue-9 session step can take minutes).
    """
    t0 = time.monotonic()
    streak, said = 0, t0
    while time.monotonic() - t0 < timeout:
        left = pending(ctx)
        streak = streak + 1 if left == 0 else 0
        if streak >= 2:
            return time.monotonic() - t0
        if time.monotonic() - said >= 30:
            said = time.monotonic()
            log(f"{ctx.label}: waiting for the workers, {left:,} messages left ({said - t0:.0f} s)")
        time.sleep(0.2)
    log(f"{ctx.label}: the queues did not drain within {timeout:.0f} s")
    return None


class Poller(threading.Thread):
    """Calls ``fn(counter)`` every ``interval`` on its own ClickHouse client; keeps (time, value)."""

    def __init__(self, ctx: Ctx, fn: Callable, interval: float) -> None:
        super().__init__(daemon=True)
        self.counter = chstats.Counter(ctx.stack.clickhouse_url, ctx.stack.project)
        self.fn, self.interval = fn, interval
        self.points: list = []
        self._stop_ev = threading.Event()

    def run(self) -> None:
        while not self._stop_ev.is_set():
            with contextlib.suppress(Exception):  # a missed poll is a gap in the series, not an error
                self.points.append((time.time(), self.fn(self.counter)))
            self._stop_ev.wait(self.interval)

    def stop(self) -> list:
        self._stop_ev.set()
        self.join(10)
        self.counter.close()
        return self.points


def wait_stored(ctx: Ctx, tag: str, want: int, timeout: float) -> tuple[float | None, int]:
    """Poll until ``want`` events of ``tag`` are stored: (wall time reached or None, last count)."""
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline:
        n = ctx.counter.stored(tag)
        if n >= want:
            return time.time(), n
        time.sleep(0.2)
    return None, n


def scan_all(ctx: Ctx) -> dict:
    """Key kinds of both Redis servers (sessions, broker)."""
    out = {}
    for name, r in (("sessions", ctx.sessions), ("broker", ctx.broker)):
        if r is not None:
            out[name] = redismem.scan_kinds(r, ctx.stack.prefix)
    return out
